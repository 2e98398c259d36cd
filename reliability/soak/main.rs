//! Reliability driver (not a test): soak, hostile peers, exhaustion, backend faults and
//! shutdown under load, against real ghostunnel processes on 127.0.0.1. Run it through
//! `reliability/soak.sh`, which builds it, makes the certificates and raises the fd limit.
//!
//! ```text
//! soak BIN DIR [--quick] [--duration SECS] [--idle N] [--only PHASE[,PHASE...]]
//! ```
//!
//! DIR holds ca.pem, server-a.pem, server-b.pem, client-a.pem, client-b.pem (cert + key) and
//! bad.pem; daemon logs are written there. Phases: soak, hostile, exhaustion, faults,
//! shutdown. Prints one line per check and a figures table; exits 1 if any check failed.

mod rig;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rig::{Backend, Churn, Daemon, Mode, Sample};

const SIGHUP: i32 = 1;
const SIGTERM: i32 = 15;

struct Ctx {
    bin: PathBuf,
    dir: PathBuf,
    quick: bool,
    backend: Backend,
    failed: Vec<String>,
    figures: Vec<(String, String)>,
}

impl Ctx {
    fn check(&mut self, ok: bool, what: &str, detail: impl std::fmt::Display) {
        println!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.failed.push(format!("{what}: {detail}"));
        }
    }

    fn figure(&mut self, name: &str, value: impl std::fmt::Display) {
        println!("     {name}: {value}");
        self.figures.push((name.into(), value.to_string()));
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Copies `from` over `to` in the certificate directory by atomic rename.
    fn install(&self, from: &str, to: &str) {
        let tmp = self.dir.join(format!(".{to}.tmp"));
        std::fs::copy(self.dir.join(from), &tmp).expect("copy certificate");
        std::fs::rename(&tmp, self.dir.join(to)).expect("rename certificate");
    }

    /// A server (TLS in, to the backend) and a client (plain in, to the server), with extra
    /// flags each, an optional wrapper command for the server and optional status ports.
    fn pair(
        &mut self,
        tag: &str,
        server_wrap: &[&str],
        server_extra: &[&str],
        client_extra: &[&str],
        status: bool,
    ) -> (Daemon, Daemon) {
        self.install("server-a.pem", "server.pem");
        self.install("client-a.pem", "client.pem");
        let (saddr, caddr) = (rig::free_addr(), rig::free_addr());
        let (sstat, cstat) = if status {
            (Some(rig::free_addr()), Some(rig::free_addr()))
        } else {
            (None, None)
        };
        let common =
            |listen: SocketAddr, target: String, keystore: &str, st: Option<SocketAddr>| {
                let mut a = vec![
                    "--listen".to_string(),
                    listen.to_string(),
                    "--target".into(),
                    target,
                    "--keystore".into(),
                    self.path(keystore),
                    "--cacert".into(),
                    self.path("ca.pem"),
                    "--quiet=conns".into(),
                ];
                if let Some(st) = st {
                    a.extend(["--status".into(), format!("http://{st}")]);
                }
                a
            };
        let mut sargs = vec!["server".to_string()];
        sargs.extend(common(
            saddr,
            self.backend.addr.to_string(),
            "server.pem",
            sstat,
        ));
        sargs.extend(["--allow-cn", "client-a", "--allow-cn", "client-b"].map(String::from));
        sargs.extend(server_extra.iter().map(|s| s.to_string()));
        let mut cargs = vec!["client".to_string()];
        cargs.extend(common(caddr, saddr.to_string(), "client.pem", cstat));
        cargs.extend(client_extra.iter().map(|s| s.to_string()));
        let server = Daemon::start(
            &format!("{tag}-server"),
            &self.bin,
            server_wrap,
            sargs,
            &self.dir,
            saddr,
            sstat,
        )
        .unwrap_or_else(|e| fatal(&e));
        let client = Daemon::start(
            &format!("{tag}-client"),
            &self.bin,
            &[],
            cargs,
            &self.dir,
            caddr,
            cstat,
        )
        .unwrap_or_else(|e| fatal(&e));
        (server, client)
    }

    /// Neither daemon's log mentions a panic.
    fn no_panics(&mut self, daemons: &[&Daemon]) {
        for d in daemons {
            let n = d.count("panick");
            self.check(
                n == 0,
                &format!("{}: no panic in the log", d.name),
                format!("{n} lines"),
            );
        }
    }
}

fn fatal(msg: &str) -> ! {
    eprintln!("soak: {msg}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        fatal("usage: soak BIN DIR [--quick] [--duration SECS] [--idle N] [--only PHASES]")
    };
    if args.len() < 2 {
        usage();
    }
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args.get(i + 1).cloned().unwrap_or_else(|| usage()))
    };
    let duration: u64 = value("--duration").map_or(if quick { 30 } else { 600 }, |v| {
        v.parse().unwrap_or_else(|_| usage())
    });
    let idle: usize = value("--idle").map_or(if quick { 500 } else { 5000 }, |v| {
        v.parse().unwrap_or_else(|_| usage())
    });
    let all = "soak,hostile,exhaustion,faults,shutdown".to_string();
    let only = value("--only").unwrap_or(all);
    let mut ctx = Ctx {
        bin: PathBuf::from(&args[0]),
        dir: PathBuf::from(&args[1]),
        quick,
        backend: Backend::start(),
        failed: Vec::new(),
        figures: Vec::new(),
    };
    let started = Instant::now();
    for phase in only.split(',') {
        let t = Instant::now();
        println!("\n== {phase} ==");
        match phase {
            "soak" => soak(&mut ctx, Duration::from_secs(duration), idle),
            "hostile" => hostile(&mut ctx),
            "exhaustion" => {
                exhaust_fds(&mut ctx);
                exhaust_threads(&mut ctx);
            }
            "faults" => faults(&mut ctx),
            "shutdown" => shutdown(&mut ctx),
            _ => usage(),
        }
        println!("   ({phase}: {:.0} s)", t.elapsed().as_secs_f64());
    }
    println!("\n== figures ==\n");
    println!("| figure | value |\n|---|---|");
    for (k, v) in &ctx.figures {
        println!("| {k} | {v} |");
    }
    println!("\ntotal time {:.0} s", started.elapsed().as_secs_f64());
    if ctx.failed.is_empty() {
        println!("RESULT: PASS");
    } else {
        println!("RESULT: FAIL ({} checks)", ctx.failed.len());
        for f in &ctx.failed {
            println!("  - {f}");
        }
        std::process::exit(1);
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Opens `n` connections through `addr` (not sending anything yet), from a few threads.
fn open_idle(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, Vec<String>) {
    let conns = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let per = n.div_ceil(4);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (conns, errors) = (conns.clone(), errors.clone());
            let count = per.min(n.saturating_sub(t * per));
            rig::spawn(move || {
                for _ in 0..count {
                    match rig::connect(addr) {
                        Ok(s) => conns.lock().unwrap().push(s),
                        Err(e) => errors.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let conns = std::mem::take(&mut *conns.lock().unwrap());
    let errors = errors.lock().unwrap().clone();
    (conns, errors)
}

/// Runs one verified exchange on each held connection (8 threads); returns the failures.
fn verify_idle(conns: Vec<TcpStream>) -> Vec<String> {
    let chunks: Vec<Vec<TcpStream>> = {
        let mut chunks: Vec<Vec<TcpStream>> = (0..8).map(|_| Vec::new()).collect();
        for (i, s) in conns.into_iter().enumerate() {
            chunks[i % 8].push(s);
        }
        chunks
    };
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            rig::spawn(move || {
                let mut errors = Vec::new();
                for mut s in chunk {
                    let id = rig::next_id();
                    let r = rig::send_request(&mut s, Mode::Hash, id, 1000, 1000, None)
                        .map_err(|e| format!("sending: {e}"))
                        .and_then(|sent| rig::read_reply(&mut s, id, 1000, &sent));
                    if let Err(e) = r {
                        errors.push(e);
                    }
                }
                errors
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| {
            h.join()
                .unwrap_or_else(|_| vec!["verifier panicked".into()])
        })
        .collect()
}

/// Waits (bounded) until `f` holds; returns how long it took.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs `f` every `every` on a thread until `stop`; the thread returns `f`'s final state.
fn every<S: Send + 'static>(
    stop: &Arc<AtomicBool>,
    every: Duration,
    mut state: S,
    mut f: impl FnMut(&mut S, u64) + Send + 'static,
) -> thread::JoinHandle<S> {
    let stop = stop.clone();
    rig::spawn(move || {
        let mut tick = 0;
        while !stop.load(Ordering::SeqCst) {
            tick += 1;
            // Late ticks are not caught up: runs stay at least `every` apart.
            let next = Instant::now() + every;
            while Instant::now() < next && !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20).min(next - Instant::now()));
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            f(&mut state, tick);
        }
        state
    })
}

#[derive(Default)]
struct StatusPolls {
    ok: u64,
    failures: Vec<String>,
    slowest: Duration,
}

/// Soak: idle connections held, churn, a reload every second (a bad one every minute, every
/// 10 s with --quick), status polled; then every idle connection verified and the figures
/// must fall back to within twice their idle values.
fn soak(ctx: &mut Ctx, duration: Duration, idle_n: usize) {
    let (server, client) = ctx.pair("soak", &[], &[], &[], true);
    let warm = rig::exchange(client.addr, rig::next_id(), 1000, 1000);
    ctx.check(warm.is_ok(), "soak: first exchange", format!("{warm:?}"));
    thread::sleep(Duration::from_secs(1));
    let (fresh_s, fresh_c) = (server.sample(), client.sample());
    ctx.figure("soak: server idle, fresh", fresh_s);
    ctx.figure("soak: client idle, fresh", fresh_c);
    // The idle memory figure is taken warm: after a few seconds of light traffic the code
    // paths are paged in and the allocator has its per-thread arenas, as in any daemon that
    // has served. Descriptors and threads are compared with the fresh figures.
    let warm = Churn::start(client.addr, 4, 64 * 1024).stop_after(Duration::from_secs(2));
    thread::sleep(Duration::from_secs(1));
    let (warm_s, warm_c) = (server.sample(), client.sample());
    ctx.check(
        warm.failures().is_empty(),
        "soak: warm-up exchanges verified",
        format!("{} ok", warm.ok()),
    );
    ctx.figure("soak: server idle, warm", warm_s);
    ctx.figure("soak: client idle, warm", warm_c);
    let base_s = Sample {
        rss_kib: warm_s.rss_kib,
        ..fresh_s
    };
    let base_c = Sample {
        rss_kib: warm_c.rss_kib,
        ..fresh_c
    };

    let accepted = ctx.backend.accepted();
    let t = Instant::now();
    let (idle, errors) = open_idle(client.addr, idle_n);
    let backend = &ctx.backend;
    let through = wait_for(Duration::from_secs(120), || {
        backend.accepted() >= accepted + idle.len()
    });
    ctx.check(
        errors.is_empty() && idle.len() == idle_n && through.is_some(),
        "soak: idle connections established end to end",
        format!(
            "{} of {idle_n} in {:.1} s, {} errors {:?}",
            idle.len(),
            t.elapsed().as_secs_f64(),
            errors.len(),
            errors.first()
        ),
    );

    let (spid, cpid) = (server.pid(), client.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let churn = Churn::start(client.addr, if ctx.quick { 4 } else { 6 }, 256 * 1024);
    let bad_every = if ctx.quick { 10 } else { 60 };
    let (slog, clog) = (server.log.clone(), client.log.clone());
    let dir = ctx.dir.clone();
    let reloads = every(
        &stop,
        Duration::from_secs(1),
        (0u64, 0u64),
        move |n, tick| {
            let install = |from: &str, to: &str| {
                let tmp = dir.join(format!(".{to}.tmp"));
                let _ = std::fs::copy(dir.join(from), &tmp);
                let _ = std::fs::rename(&tmp, dir.join(to));
            };
            if tick % bad_every == 0 {
                install("bad.pem", "server.pem");
                install("bad.pem", "client.pem");
                n.1 += 1;
            } else {
                let ab = if tick % 2 == 0 { "a" } else { "b" };
                install(&format!("server-{ab}.pem"), "server.pem");
                install(&format!("client-{ab}.pem"), "client.pem");
                n.0 += 1;
            }
            let done = |log: &Path| {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .matches("reloading configuration complete")
                    .count()
            };
            for (pid, log) in [(spid, &slog), (cpid, &clog)] {
                let before = done(log);
                // SAFETY: kill(2) on a child of this process.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid, SIGHUP);
                }
                // One reload at a time, so that signals never coalesce.
                wait_for(Duration::from_secs(5), || done(log) > before);
            }
        },
    );
    let status_addrs = [server.status.unwrap(), client.status.unwrap()];
    let polls = every(
        &stop,
        Duration::from_millis(500),
        StatusPolls::default(),
        move |p, _| {
            for addr in status_addrs {
                let t = Instant::now();
                match rig::get_status(addr) {
                    Ok((200, body)) if body.contains("\"ok\":true") => p.ok += 1,
                    Ok((code, body)) => p.failures.push(format!("{addr}: {code} {body}")),
                    Err(e) => p.failures.push(format!("{addr}: {e}")),
                }
                p.slowest = p.slowest.max(t.elapsed());
            }
        },
    );
    let peaks = every(
        &stop,
        Duration::from_secs(1),
        (Sample::default(), Sample::default()),
        move |p, _| {
            p.0 = p.0.max(rig::sample(spid));
            p.1 = p.1.max(rig::sample(cpid));
        },
    );
    let loaded_before = (
        server.count("loaded certificate"),
        client.count("loaded certificate"),
    );
    let soak_start = Instant::now();
    let report_every = Duration::from_secs(if ctx.quick { 10 } else { 60 });
    while soak_start.elapsed() < duration {
        thread::sleep(report_every.min(duration.saturating_sub(soak_start.elapsed())));
        println!(
            "     {:>4.0} s: {} exchanges, {}, {} failures; server {}; client {}",
            soak_start.elapsed().as_secs_f64(),
            churn.stats.ok(),
            mib(churn.stats.bytes()),
            churn.stats.failures().len(),
            server.sample(),
            client.sample()
        );
    }
    let stats = churn.stop();
    stop.store(true, Ordering::SeqCst);
    let (good, bad) = reloads.join().unwrap();
    let polls = polls.join().unwrap();
    let (peak_s, peak_c) = peaks.join().unwrap();
    // The last reload may still be in progress.
    thread::sleep(Duration::from_millis(500));

    let failures = stats.failures();
    ctx.check(
        failures.is_empty() && stats.ok() > 0,
        "soak: every churn exchange verified",
        format!(
            "{} ok, {} failed {:?}",
            stats.ok(),
            failures.len(),
            failures.first()
        ),
    );
    let held = idle.len();
    let lost = verify_idle(idle);
    ctx.check(
        lost.is_empty(),
        "soak: every idle connection still alive and verified",
        format!("{} of {held} lost {:?}", lost.len(), lost.first()),
    );
    ctx.check(
        polls.failures.is_empty() && polls.ok > 0,
        "soak: /_status healthy throughout (both proxies)",
        format!(
            "{} ok, {} failed, slowest {} {:?}",
            polls.ok,
            polls.failures.len(),
            ms(polls.slowest),
            polls.failures.first()
        ),
    );
    for (d, before) in [(&server, loaded_before.0), (&client, loaded_before.1)] {
        let loaded = d.count("loaded certificate") - before;
        let rejected = d.count("error reloading TLS configuration");
        ctx.check(
            loaded as u64 == good && rejected as u64 == bad,
            &format!("soak: {} reloads", d.name),
            format!("{loaded} loaded of {good} good, {rejected} rejected of {bad} bad"),
        );
        let other: Vec<String> = d
            .log_text()
            .lines()
            .filter(|l| l.contains("error") && !l.contains("error reloading TLS configuration"))
            .map(String::from)
            .collect();
        ctx.check(
            other.is_empty(),
            &format!("soak: {} logged no connection errors", d.name),
            format!("{} lines {:?}", other.len(), other.first()),
        );
    }

    // Idle workers leave after 30 s; allow for that.
    let t = Instant::now();
    let settled = wait_for(Duration::from_secs(75), || {
        server.sample().within(base_s, 2) && client.sample().within(base_c, 2)
    });
    let (after_s, after_c) = (server.sample(), client.sample());
    ctx.check(
        settled.is_some(),
        "soak: fds and threads back within 2x fresh idle, RSS within 2x warm idle, after the load",
        format!(
            "after {:.0} s: server {after_s}; client {after_c}",
            t.elapsed().as_secs_f64()
        ),
    );
    ctx.no_panics(&[&server, &client]);
    let secs = duration.as_secs_f64();
    ctx.figure("soak: duration", format!("{secs:.0} s"));
    ctx.figure("soak: idle connections held", held);
    ctx.figure(
        "soak: churn exchanges (verified)",
        format!("{} ({:.0}/s)", stats.ok(), stats.ok() as f64 / secs),
    );
    ctx.figure(
        "soak: churn bytes (verified, both ways)",
        mib(stats.bytes()),
    );
    ctx.figure(
        "soak: churn latency p50 / p99",
        format!(
            "{} / {}",
            ms(stats.percentile(0, usize::MAX, 50.0)),
            ms(stats.percentile(0, usize::MAX, 99.0))
        ),
    );
    ctx.figure(
        "soak: reloads per proxy (good + bad)",
        format!("{good} + {bad}"),
    );
    ctx.figure("soak: /_status polls ok", polls.ok);
    ctx.figure("soak: server peak", peak_s);
    ctx.figure("soak: client peak", peak_c);
    ctx.figure(
        "soak: settled after load",
        format!("{:.0} s", settled.unwrap_or_default().as_secs_f64()),
    );
    ctx.figure("soak: server after", after_s);
    ctx.figure("soak: client after", after_c);
}

/// A TLS ClientHello, as a real client's first flight.
fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("client hello");
    out
}

/// A connection held open by a hostile peer, and when the server closed it.
struct Held {
    sock: TcpStream,
    opened: Instant,
    closed: Option<Duration>,
}

/// Opens `n` TCP connections to `addr`, writing `first` on each.
fn open_raw(addr: SocketAddr, n: usize, first: &[u8]) -> Vec<Held> {
    (0..n)
        .filter_map(|_| {
            let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
            let opened = Instant::now();
            if !first.is_empty() {
                use std::io::Write;
                let _ = (&sock).write_all(first);
            }
            sock.set_nonblocking(true).ok()?;
            Some(Held {
                sock,
                opened,
                closed: None,
            })
        })
        .collect()
}

/// Watches `held` until each is closed by the peer or `limit` passes.
fn watch_closed(held: &mut [&mut Held], limit: Duration) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < limit {
        let open: Vec<usize> = (0..held.len())
            .filter(|&i| held[i].closed.is_none())
            .collect();
        if open.is_empty() {
            return;
        }
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|&i| libc::pollfd {
                fd: held[i].sock.as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid, exclusively borrowed pollfd array for the duration of the call.
        #[allow(unsafe_code)]
        unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50);
        }
        for (k, &i) in open.iter().enumerate() {
            if fds[k].revents == 0 {
                continue;
            }
            let h = &mut *held[i];
            loop {
                match (&h.sock).read(&mut buf) {
                    Ok(0) => {
                        h.closed = Some(h.opened.elapsed());
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        h.closed = Some(h.opened.elapsed());
                        break;
                    }
                }
            }
        }
    }
}

fn closed_range(held: &[Held]) -> (usize, Duration, Duration) {
    let times: Vec<Duration> = held.iter().filter_map(|h| h.closed).collect();
    (
        times.len(),
        times.iter().min().copied().unwrap_or_default(),
        times.iter().max().copied().unwrap_or_default(),
    )
}

/// Hostile peers against the server's TLS port while legitimate clients keep going through
/// the client proxy.
fn hostile(ctx: &mut Ctx) {
    let ct = Duration::from_secs(if ctx.quick { 3 } else { 5 });
    let cts = format!("{}s", ct.as_secs());
    let (server, client) = ctx.pair("hostile", &[], &["--connect-timeout", &cts], &[], false);
    let (n_silent, n_each) = if ctx.quick { (300, 30) } else { (1000, 50) };
    let churn = Churn::start(client.addr, 4, 16 * 1024);
    thread::sleep(Duration::from_secs(3));
    let base_n = churn.stats.recorded();

    let hello = client_hello();
    let mut garbage = vec![0u8; 2048];
    rig::Pattern::new(7).fill(&mut garbage);
    let attack = Instant::now();
    let mut silent = open_raw(server.addr, n_silent, b"");
    let mut junk = open_raw(server.addr, n_each, &garbage);
    let mut hellos = open_raw(server.addr, n_each, &hello);
    let mut drips = open_raw(server.addr, n_each, &hello[..1]);
    let opened = attack.elapsed();
    // One more byte of the ClientHello per second on every drip connection.
    let stop = Arc::new(AtomicBool::new(false));
    let drip_socks: Vec<TcpStream> = drips
        .iter()
        .filter_map(|h| h.sock.try_clone().ok())
        .collect();
    let dripper = every(&stop, Duration::from_secs(1), 1usize, move |pos, _| {
        use std::io::Write;
        for s in &drip_socks {
            let _ = (&*s).write(&hello[*pos..*pos + 1]);
        }
        *pos += 1;
    });
    let mut all: Vec<&mut Held> = silent
        .iter_mut()
        .chain(junk.iter_mut())
        .chain(hellos.iter_mut())
        .chain(drips.iter_mut())
        .collect();
    let total = all.len();
    watch_closed(&mut all, ct + Duration::from_secs(6));
    stop.store(true, Ordering::SeqCst);
    let _ = dripper.join();
    let attack_n = churn.stats.recorded();
    let stats = churn.stop();

    ctx.check(
        total == n_silent + 3 * n_each,
        "hostile: hostile connections opened",
        format!("{total} in {}", ms(opened)),
    );
    let lo = ct.saturating_sub(Duration::from_millis(100));
    let hi = ct + Duration::from_millis(1500);
    for (name, held) in [
        ("silent", &silent),
        ("ClientHello only", &hellos),
        ("drip", &drips),
    ] {
        let (n, min, max) = closed_range(held);
        ctx.check(
            n == held.len() && min >= lo && max <= hi,
            &format!("hostile: {name} peers cut at --connect-timeout ({cts})"),
            format!(
                "{n} of {} closed, between {} and {}",
                held.len(),
                ms(min),
                ms(max)
            ),
        );
    }
    let (n, _, max) = closed_range(&junk);
    ctx.check(
        n == junk.len() && max < Duration::from_secs(1),
        "hostile: garbage peers cut at once",
        format!("{n} of {} closed, slowest {}", junk.len(), ms(max)),
    );
    let failures = stats.failures();
    ctx.check(
        failures.is_empty(),
        "hostile: legitimate clients all served",
        format!(
            "{} ok, {} failed {:?}",
            stats.ok(),
            failures.len(),
            failures.first()
        ),
    );
    let (p50b, p99b) = (
        stats.percentile(0, base_n, 50.0),
        stats.percentile(0, base_n, 99.0),
    );
    let (p50h, p99h) = (
        stats.percentile(base_n, attack_n, 50.0),
        stats.percentile(base_n, attack_n, 99.0),
    );
    let bound = (p99b * 5).max(Duration::from_millis(100));
    ctx.check(
        p99h <= bound && attack_n > base_n,
        "hostile: legitimate p99 latency within 5x its baseline (or 100 ms)",
        format!("p99 {} under attack, {} before", ms(p99h), ms(p99b)),
    );
    thread::sleep(Duration::from_millis(300));
    let lines = server.count("error on TLS handshake from");
    let timeouts = server
        .log_text()
        .lines()
        .filter(|l| {
            l.contains("error on TLS handshake from") && l.ends_with("context deadline exceeded")
        })
        .count();
    ctx.check(
        lines == total && timeouts == n_silent + 2 * n_each,
        "hostile: one log line per hostile connection, saying why",
        format!("{lines} handshake error lines for {total} connections, {timeouts} timeouts"),
    );
    let others = server.count("error") - lines;
    ctx.check(
        others == 0,
        "hostile: no other error lines",
        format!("{others} lines"),
    );
    ctx.no_panics(&[&server, &client]);
    ctx.figure(
        "hostile: peers (silent + garbage + ClientHello only + drip)",
        format!("{n_silent} + {n_each} + {n_each} + {n_each}, --connect-timeout {cts}"),
    );
    ctx.figure(
        "hostile: legitimate exchanges during the attack",
        attack_n - base_n,
    );
    ctx.figure(
        "hostile: legitimate latency p50 / p99 before",
        format!("{} / {}", ms(p50b), ms(p50b.max(p99b))),
    );
    ctx.figure(
        "hostile: legitimate latency p50 / p99 under attack",
        format!("{} / {}", ms(p50h), ms(p99h)),
    );
}

/// Retries an exchange through `addr` until one succeeds; returns how long that took.
fn recovers(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    wait_for(limit, || {
        rig::exchange(addr, rig::next_id(), 5000, 5000).is_ok()
    })
}

/// Accept errors (too many open files) back off, and service resumes by itself.
fn exhaust_fds(ctx: &mut Ctx) {
    let wrap = ["sh", "-c", "ulimit -n 64 && exec \"$0\" \"$@\""];
    let (server, client) = ctx.pair("fds", &wrap, &["--connect-timeout", "30s"], &[], false);
    let first = rig::exchange(client.addr, rig::next_id(), 5000, 5000);
    ctx.check(first.is_ok(), "fds: served before", format!("{first:?}"));
    let base = server.sample();
    let held = open_raw(server.addr, 150, b"");
    let hit = wait_for(Duration::from_secs(10), || {
        server.log_text().contains("too many open files")
    });
    let t = Instant::now();
    thread::sleep(Duration::from_secs(4));
    let errors = server.count("error accepting connection");
    let secs = t.elapsed().as_secs_f64();
    let peak = server.sample();
    ctx.check(
        hit.is_some(),
        "fds: the log says too many open files",
        server.first_line("error accepting connection"),
    );
    // 5 ms doubling to 1 s: 8 lines in the first 1.3 s, then one a second.
    let bound = 10 + secs.ceil() as usize;
    ctx.check(
        errors <= bound,
        "fds: accept errors back off",
        format!("{errors} lines in {secs:.1} s of exhaustion (at most {bound})"),
    );
    drop(held);
    let back = recovers(client.addr, Duration::from_secs(15));
    ctx.check(
        back.is_some(),
        "fds: service resumes by itself",
        format!("{back:?} after the load dropped"),
    );
    ctx.no_panics(&[&server, &client]);
    ctx.figure(
        "fds: limit / idle / at exhaustion",
        format!("64 / {} / {}", base.fds, peak.fds),
    );
    ctx.figure(
        "fds: accept error lines",
        format!("{errors} in {secs:.1} s"),
    );
    ctx.figure(
        "fds: recovered after the load dropped",
        back.map_or("no".into(), ms),
    );
}

/// Thread creation failing (RLIMIT_NPROC for a non-root uid) is handled like an accept
/// error: excess connections closed at once, logged with backoff, never a panic.
fn exhaust_threads(ctx: &mut Ctx) {
    let uid = format!("{}", 64000 + std::process::id() % 1000);
    let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={uid}"));
    let limit: usize = 10;
    let nproc = format!("--nproc={limit}");
    let wrap = [
        "setpriv",
        &reuid,
        &regid,
        "--clear-groups",
        "prlimit",
        &nproc,
        "--",
    ];
    let (server, client) = ctx.pair("threads", &wrap, &["--connect-timeout", "20s"], &[], false);
    let first = rig::exchange(client.addr, rig::next_id(), 5000, 5000);
    ctx.check(
        first.is_ok(),
        "threads: served before",
        format!("{first:?}"),
    );
    let base = server.sample();
    let n = 30;
    let mut held = open_raw(server.addr, n, b"");
    let mut refs: Vec<&mut Held> = held.iter_mut().collect();
    watch_closed(&mut refs, Duration::from_secs(3));
    let (closed, _, slowest) = closed_range(&held);
    let peak = server.sample();
    let spare = limit.saturating_sub(base.threads);
    // The accept loop keeps going: connections it has no thread for are closed at the backoff
    // pace (5 ms doubling: 8 within 1.3 s, one a second after that); the rest wait in the
    // backlog.
    ctx.check(
        closed >= 8 && closed + spare <= n,
        "threads: the accept loop keeps closing what it has no thread for, with backoff",
        format!(
            "{closed} of {n} closed within 3 s (last after {}), {spare} threads to spare",
            ms(slowest)
        ),
    );
    let errors = server.count("error accepting connection");
    ctx.check(
        errors > 0 && errors <= 12,
        "threads: thread creation failures logged as accept errors, with backoff",
        format!(
            "{errors} lines: {}",
            server.first_line("error accepting connection")
        ),
    );
    drop(held);
    let back = recovers(client.addr, Duration::from_secs(15));
    ctx.check(
        back.is_some(),
        "threads: service resumes by itself",
        format!("{back:?} after the load dropped"),
    );
    let alive = server.sample().threads > 0;
    ctx.check(alive, "threads: the server is still running", "");
    ctx.no_panics(&[&server, &client]);
    ctx.figure(
        "threads: RLIMIT_NPROC / idle / at exhaustion",
        format!("{limit} / {} / {}", base.threads, peak.threads),
    );
    ctx.figure(
        "threads: recovered after the load dropped",
        back.map_or("no".into(), ms),
    );
}

/// Runs `f` on its own thread and reports how long it took, with its result.
fn timed<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<(Duration, T)> {
    rig::spawn(move || {
        let t = Instant::now();
        let r = f();
        (t.elapsed(), r)
    })
}

/// Sends `req` bytes in mode `mode` and reads until the connection ends; Ok if it ended with
/// an error or EOF, as these backends never answer.
fn doomed(addr: SocketAddr, mode: Mode, req: u64, resp: u64) -> Result<String, String> {
    use std::io::Read;
    let mut s = rig::connect(addr).map_err(|e| e.to_string())?;
    let id = rig::next_id();
    let sent = rig::send_request(&mut s, mode, id, req, resp, None);
    let mut buf = [0u8; 4096];
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) => break "EOF".to_string(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err("still open after the driver's timeout".into());
            }
            Err(e) => break e.to_string(),
        }
    };
    Ok(match sent {
        Ok(_) => format!("sent all, then {ended}"),
        Err(e) => format!("send failed ({e}), then {ended}"),
    })
}

/// Backend down, flapping, resetting, never reading; slow readers with a fast backend.
fn faults(ctx: &mut Ctx) {
    let flags = ["--close-timeout", "1s", "--max-conn-lifetime", "6s"];
    let (server, client) = ctx.pair("faults", &[], &flags, &flags, true);
    let addr = client.addr;

    // Down.
    ctx.backend.set_up(false);
    let results: Vec<(Duration, Result<Duration, String>)> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let r = rig::exchange(addr, rig::next_id(), 1000, 1000);
            (t.elapsed(), r)
        })
        .collect();
    let slowest = results.iter().map(|r| r.0).max().unwrap_or_default();
    ctx.check(
        results.iter().all(|r| r.1.is_err()) && slowest < Duration::from_secs(3),
        "faults: backend down: connections closed promptly",
        format!("slowest {}: {:?}", ms(slowest), results[0].1),
    );
    let status = rig::get_status(server.status.unwrap());
    ctx.check(
        matches!(&status, Ok((503, b)) if b.contains("\"backend_ok\":false")),
        "faults: backend down: /_status says critical",
        format!("{status:?}"),
    );
    ctx.backend.set_up(true);
    let back = recovers(addr, Duration::from_secs(5));
    ctx.check(
        back.is_some(),
        "faults: backend back: served",
        format!("{back:?}"),
    );

    // Flapping.
    let churn = Churn::start(addr, 4, 64 * 1024);
    let flaps = if ctx.quick { 12 } else { 40 };
    for i in 0..flaps {
        ctx.backend.set_up(i % 2 == 1);
        thread::sleep(Duration::from_millis(190));
    }
    ctx.backend.set_up(true);
    thread::sleep(Duration::from_millis(500));
    let stats = churn.stop();
    let failures = stats.failures();
    let lost: Vec<&(u64, String)> = failures
        .iter()
        .filter(|(id, _)| ctx.backend.saw(*id))
        .collect();
    ctx.check(
        lost.is_empty() && stats.ok() > 0,
        "faults: flapping: every exchange that reached the backend completed and verified",
        format!(
            "{} ok, {} refused cleanly, {} broken {:?}",
            stats.ok(),
            failures.len(),
            lost.len(),
            lost.first()
        ),
    );
    let after: Vec<_> = (0..20)
        .filter_map(|_| rig::exchange(addr, rig::next_id(), 10_000, 10_000).err())
        .collect();
    ctx.check(
        after.is_empty(),
        "faults: flapping over: all served",
        format!("{} of 20 failed {:?}", after.len(), after.first()),
    );

    // Resets mid-transfer.
    let resets: Vec<_> = (0..8)
        .map(|_| timed(move || doomed(addr, Mode::Reset, 4 << 20, 0)))
        .collect();
    let resets: Vec<(Duration, Result<String, String>)> =
        resets.into_iter().map(|h| h.join().unwrap()).collect();
    let slowest = resets.iter().map(|r| r.0).max().unwrap_or_default();
    ctx.check(
        resets.iter().all(|r| r.1.is_ok()) && slowest < Duration::from_secs(5),
        "faults: backend resets mid-transfer: client connection ends promptly",
        format!("slowest {}: {:?}", ms(slowest), resets[0].1),
    );

    // A backend that never reads: the lifetime limit (6 s) still cuts the stuck writes; with
    // a FIN from the backend the close timeout (1 s) does.
    let stall = timed(move || doomed(addr, Mode::Stall, 256 << 20, 0));
    let stall_fin = timed(move || doomed(addr, Mode::StallFin, 256 << 20, 0));
    let (d, r) = stall.join().unwrap();
    ctx.check(
        r.is_ok() && d >= Duration::from_millis(5500) && d < Duration::from_secs(9),
        "faults: backend never reads: cut at --max-conn-lifetime (6 s)",
        format!("after {}: {r:?}", ms(d)),
    );
    ctx.figure("faults: never-reading backend cut after", ms(d));
    let (d, r) = stall_fin.join().unwrap();
    ctx.check(
        r.is_ok() && d < Duration::from_secs(4),
        "faults: backend never reads but sent FIN: cut at --close-timeout (1 s)",
        format!("after {}: {r:?}", ms(d)),
    );
    ctx.figure("faults: never-reading backend with FIN cut after", ms(d));

    // Slow readers, fast backend: memory stays bounded per connection. The window stays well
    // inside the 6 s --max-conn-lifetime above, which would otherwise end the streams (with an
    // EOF that arrives once the buffered bytes are read, so only sometimes inside the window).
    let window = Duration::from_secs(4);
    thread::sleep(Duration::from_millis(500));
    let (base_s, base_c) = (server.sample(), client.sample());
    let n = 16;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..n)
        .map(|_| {
            let stop = stop.clone();
            rig::spawn(move || -> Result<u64, String> {
                use std::io::Read;
                let mut s = rig::connect(addr).map_err(|e| e.to_string())?;
                let id = rig::next_id();
                rig::send_request(&mut s, Mode::Blast, id, 0, 1 << 40, None)
                    .map_err(|e| e.to_string())?;
                let mut pattern = rig::Pattern::new(id ^ 0x5245_5350_4f4e_5345);
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let k = s.read(&mut buf).map_err(|e| e.to_string())?;
                    if k == 0 {
                        return Err(format!("stream ended after {got} bytes"));
                    }
                    if !pattern.matches(&buf[..k]) {
                        return Err(format!("stream corrupted after {got} bytes"));
                    }
                    got += k as u64;
                    thread::sleep(Duration::from_millis(10));
                }
                Ok(got)
            })
        })
        .collect();
    let mut peak = (Sample::default(), Sample::default());
    let t = Instant::now();
    while t.elapsed() < window {
        thread::sleep(Duration::from_millis(250));
        peak = (peak.0.max(server.sample()), peak.1.max(client.sample()));
    }
    stop.store(true, Ordering::SeqCst);
    let read: Vec<Result<u64, String>> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    let total: u64 = read.iter().filter_map(|r| r.as_ref().ok()).sum();
    ctx.check(
        read.iter().all(|r| r.is_ok()),
        "faults: slow readers: streams intact",
        format!(
            "{} read in {} s by {n} readers {:?}",
            mib(total),
            window.as_secs(),
            read.iter().find(|r| r.is_err())
        ),
    );
    let growth = (peak.0.rss_kib.saturating_sub(base_s.rss_kib)
        + peak.1.rss_kib.saturating_sub(base_c.rss_kib)) as f64
        / n as f64;
    ctx.check(
        growth < 1024.0,
        "faults: slow readers: memory per connection bounded (< 1 MiB, both proxies)",
        format!("{growth:.0} KiB per connection"),
    );
    ctx.figure(
        "faults: slow readers, RSS growth per connection (both proxies)",
        format!("{growth:.0} KiB"),
    );
    let settled = wait_for(Duration::from_secs(10), || {
        server.sample().fds <= base_s.fds && client.sample().fds <= base_c.fds
    });
    ctx.check(
        settled.is_some(),
        "faults: every connection closed afterwards (fds back to idle)",
        format!("server {}, client {}", server.sample(), client.sample()),
    );
    ctx.no_panics(&[&server, &client]);
}

/// SIGTERM with transfers in flight: they finish intact and the proxies exit 0 within
/// --shutdown-timeout; a second SIGTERM exits at once.
fn shutdown(ctx: &mut Ctx) {
    let flags = ["--shutdown-timeout", "15s"];
    let (mut server, mut client) = ctx.pair("shutdown", &[], &flags, &flags, false);
    let addr = client.addr;
    let churn = Churn::start(addr, 4, 64 * 1024);
    let long: Vec<(u64, thread::JoinHandle<Result<(), String>>)> = (0..8)
        .map(|_| {
            let id = rig::next_id();
            let h = rig::spawn(move || {
                let mut s = rig::connect(addr).map_err(|e| e.to_string())?;
                let pause = Some(Duration::from_millis(20));
                let sent = rig::send_request(&mut s, Mode::Hash, id, 8 << 20, 1 << 20, pause)
                    .map_err(|e| format!("sending: {e}"))?;
                rig::read_reply(&mut s, id, 1 << 20, &sent)
            });
            (id, h)
        })
        .collect();
    let backend = &ctx.backend;
    let flowing = wait_for(Duration::from_secs(10), || {
        long.iter().all(|(id, _)| backend.saw(*id))
    });
    ctx.check(flowing.is_some(), "shutdown: long transfers in flight", "");
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    server.signal(SIGTERM);
    client.signal(SIGTERM);
    let results: Vec<Result<(), String>> =
        long.into_iter().map(|(_, h)| h.join().unwrap()).collect();
    let finished = t.elapsed();
    let stats = churn.stop();
    let exits = (
        server.wait_exit(Duration::from_secs(20)),
        client.wait_exit(Duration::from_secs(20)),
    );
    let exited = t.elapsed();
    let broken: Vec<&Result<(), String>> = results.iter().filter(|r| r.is_err()).collect();
    ctx.check(
        broken.is_empty(),
        "shutdown: in-flight transfers completed intact",
        format!(
            "8 of 8 expected, {} broken {:?}, done {} after SIGTERM",
            broken.len(),
            broken.first(),
            ms(finished)
        ),
    );
    let lost: Vec<(u64, String)> = stats
        .failures()
        .into_iter()
        .filter(|(id, _)| ctx.backend.saw(*id))
        .collect();
    ctx.check(
        lost.is_empty(),
        "shutdown: churn exchanges that reached the backend completed",
        format!(
            "{} ok, {} refused after SIGTERM, {} broken {:?}",
            stats.ok(),
            stats.failures().len(),
            lost.len(),
            lost.first()
        ),
    );
    ctx.check(
        exits.0.and_then(|s| s.code()) == Some(0) && exits.1.and_then(|s| s.code()) == Some(0),
        "shutdown: both proxies exit 0 after the drain, within --shutdown-timeout",
        format!("{exits:?} {} after SIGTERM", ms(exited)),
    );
    ctx.figure("shutdown: drained and exited after SIGTERM", ms(exited));
    ctx.no_panics(&[&server, &client]);

    // A second SIGTERM while a connection holds the drain open.
    let (mut server, client) = ctx.pair("shutdown2", &[], &flags, &[], false);
    let accepted = ctx.backend.accepted();
    let (held, _) = open_idle(client.addr, 1);
    let backend = &ctx.backend;
    wait_for(Duration::from_secs(5), || backend.accepted() > accepted);
    server.signal(SIGTERM);
    thread::sleep(Duration::from_millis(500));
    let draining = server.try_exit().is_none()
        && server
            .log_text()
            .contains("shutdown proxy, waiting for drain");
    let t = Instant::now();
    server.signal(SIGTERM);
    let exit = server.wait_exit(Duration::from_secs(5));
    let took = t.elapsed();
    ctx.check(
        draining && exit.and_then(|s| s.signal()) == Some(SIGTERM) && took < Duration::from_secs(1),
        "shutdown: a second SIGTERM exits at once",
        format!("draining {draining}, then {exit:?} after {}", ms(took)),
    );
    drop(held);
}
