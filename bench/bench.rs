//! The performance benchmark (README "Performance"; not a test). It starts a ghostunnel
//! client -> server pair and a stunnel4 client -> server pair with the same ECDSA P-256
//! certificates, and measures each figure through both and through plain TCP in one run:
//! repetitions interleave the paths, and the table shows medians.
//!
//! ```text
//! cargo run --release --example bench -- [--quick] [--reps N] [--idle N] [--check]
//!                                        [--gt PATH] [--gt-b PATH]
//!                                        [--reference PATH] [--haproxy]
//! ```
//!
//! `--reference` adds the Go reference binary as a column (run with the same flags as
//! ghostunnel) and `--haproxy` HAProxy as the same mutual-TLS pair in tcp mode; with them the
//! table gains ratio columns. Neither is needed by `--check`. A plaintext socat relay pair is a
//! column for bulk throughput when socat is installed.
//!
//! CPU figures are the CPU time of both tunnel processes over the measured window (from
//! /proc/PID/stat), which stays meaningful on a shared machine where wall-clock rates do not.
//! The load generator and the backends run in this process (wrk for the request/response row);
//! their own CPU per unit is printed too, and the plain TCP column shows how far they go
//! without a tunnel, so they are seen not to be the bottleneck.
//!
//! `--check` fails (exit 1) only when a ratio to stunnel4, measured in the same run, regresses
//! far beyond its usual value; absolute times never fail it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const SINK: u16 = 19103;
const HTTP: u16 = 19104;
const IDLE_BACKEND: u16 = 19105;

/// Small keep-alive response for the request/response row.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nhello, world\n";

struct Opts {
    quick: bool,
    reps: usize,
    idle: usize,
    mib: u64,
    secs: u64,
    check: bool,
    gt: PathBuf,
    /// `--gt-b PATH` (repeatable): more ghostunnel builds as columns, named by file name.
    gt_b: Vec<PathBuf>,
    /// The Go reference binary, as an optional column (never needed by CI).
    reference: Option<PathBuf>,
    /// HAProxy as the same mutual-TLS pair in tcp mode, as an optional column.
    haproxy: bool,
    /// `--only bulk,wrk,conn,hs,start,idle`: run only these loads (all by default).
    only: Option<String>,
}

impl Opts {
    fn runs(&self, load: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|l| l == load))
    }
}

fn main() {
    let opts = parse_args();
    raise_fd_limit();
    let work = std::env::temp_dir().join(format!("gt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("temp dir");
    make_certs(&work);

    spawn_sink(SINK);
    spawn_http(HTTP);
    let idle_backend = IdleBackend::spawn(IDLE_BACKEND);

    let mut tunnels = vec![Tunnel::plain()];
    let gt = Kind::Ghostunnel;
    tunnels.push(Tunnel::ghostunnel("ghostunnel", gt, &opts.gt, &work, 19110));
    for (i, b) in opts.gt_b.iter().enumerate() {
        let name = b
            .file_name()
            .map_or("B".into(), |n| n.to_string_lossy().into_owned());
        let base = if i == 0 { 19120 } else { 19200 + 10 * i as u16 };
        tunnels.push(Tunnel::ghostunnel(&name, gt, b, &work, base));
    }
    if let Some(r) = &opts.reference {
        let kind = Kind::Reference;
        tunnels.push(Tunnel::ghostunnel("reference", kind, r, &work, 19140));
    }
    tunnels.push(Tunnel::stunnel(&work, 19130));
    if opts.haproxy {
        tunnels.push(Tunnel::haproxy(&work, 19150));
    }
    if let Some(socat) = Tunnel::socat(19160) {
        tunnels.push(socat);
    }
    for t in &tunnels {
        t.wait_ready();
    }
    // Idle RSS before any load.
    for t in &mut tunnels {
        let rss = t.rss_kib() as f64;
        t.record_cpu("rss_idle", rss);
    }

    let (wrk_threads, wrk_conns) = (2, 64);
    let mib = opts.mib;
    let secs = opts.secs;
    let mut loadgen_cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for rep in 0..opts.reps {
        eprintln!("repetition {}/{}", rep + 1, opts.reps);
        for t in tunnels.iter_mut().filter(|_| opts.runs("bulk")) {
            let (mbps, cpu, own) = t.measure(|a| bulk(a, 1, mib));
            t.record("bulk1", mbps);
            t.record_cpu("cpu_gb", cpu / (mib as f64 / 1024.0));
            loadgen_cpu
                .entry("bulk (core-s/GB)")
                .or_default()
                .push(own / (mib as f64 / 1024.0));
        }
        for t in tunnels
            .iter_mut()
            .filter(|t| t.kind != Kind::Socat && opts.runs("bulk"))
        {
            let per = (mib / 8).max(1);
            let (mbps, _, _) = t.measure(|a| bulk(a, 8, per));
            t.record("bulk8", mbps);
        }
        for t in tunnels
            .iter_mut()
            .filter(|t| t.kind != Kind::Socat && opts.runs("wrk"))
        {
            let w = t.measure_wrk(wrk_threads, wrk_conns, secs);
            let Some((rps, p99, cpu, wrk_cpu, switches)) = w else {
                continue;
            };
            t.record("rps", rps);
            t.record("p99", p99);
            let requests = rps * secs as f64;
            t.record_cpu("cpu_req", cpu / requests * 1e6);
            t.record_cpu("cs_req", switches / requests);
            loadgen_cpu
                .entry("wrk (µs/request)")
                .or_default()
                .push(wrk_cpu / requests * 1e6);
        }
        for t in tunnels
            .iter_mut()
            .filter(|t| t.kind != Kind::Socat && opts.runs("conn"))
        {
            let mut p99 = 0.0;
            let (rate, cpu, _) = t.measure_full(|a| {
                let (rate, p) = connrate(a, secs);
                p99 = p;
                rate
            });
            t.record("conns_full", rate);
            t.record("p99_conn_full", p99);
            t.record_cpu("cpu_conn_full", cpu / (rate * secs as f64) * 1e6);
        }
        for t in tunnels
            .iter_mut()
            .filter(|t| t.kind.is_tls() && opts.runs("hs"))
        {
            if let Some(us) = t.server_handshake_cpu(&work, secs) {
                t.record("cpu_hs_server", us);
            }
        }
        for t in tunnels
            .iter_mut()
            .filter(|t| t.kind != Kind::Socat && opts.runs("conn"))
        {
            let (rate, cpu, own) = t.measure(|a| connrate(a, secs).0);
            t.record("conns", rate);
            t.record_cpu("cpu_conn", cpu / (rate * secs as f64) * 1e6);
            loadgen_cpu
                .entry("connections (µs/connection)")
                .or_default()
                .push(own / (rate * secs as f64) * 1e6);
        }
        for t in tunnels
            .iter_mut()
            .filter(|t| t.kind.is_tls() && opts.runs("start"))
        {
            if let Some(ms) = t.startup_ms(&work) {
                t.record("startup", ms);
            }
        }
        if (rep == 0 || !opts.quick) && opts.runs("idle") {
            for t in tunnels.iter_mut().filter(|t| t.kind.is_tls()) {
                t.idle_run(&idle_backend, opts.idle);
            }
        }
    }

    let report = render(&tunnels, &loadgen_cpu, &opts);
    print!("{report}");
    let failed = if opts.check { check(&tunnels) } else { 0 };
    drop(tunnels);
    let _ = std::fs::remove_dir_all(&work);
    if failed > 0 {
        std::process::exit(1);
    }
}

fn parse_args() -> Opts {
    let mut opts = Opts {
        quick: false,
        reps: 5,
        idle: 5000,
        mib: 512,
        secs: 5,
        check: false,
        gt: PathBuf::from("target/release/ghostunnel"),
        gt_b: Vec::new(),
        reference: None,
        haproxy: false,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    let mut reps = None;
    let mut idle = None;
    let mut secs = None;
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--check" => opts.check = true,
            "--reps" => reps = Some(value().parse().unwrap_or_else(|_| usage())),
            "--idle" => idle = Some(value().parse().unwrap_or_else(|_| usage())),
            "--gt" => opts.gt = PathBuf::from(value()),
            "--gt-b" => opts.gt_b.push(PathBuf::from(value())),
            "--reference" => opts.reference = Some(PathBuf::from(value())),
            "--haproxy" => opts.haproxy = true,
            "--only" => opts.only = Some(value()),
            "--secs" => secs = Some(value().parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    if opts.quick {
        (opts.reps, opts.idle, opts.mib, opts.secs) = (3, 500, 128, 2);
    }
    opts.reps = reps.unwrap_or(opts.reps).max(1);
    opts.idle = idle.unwrap_or(opts.idle);
    opts.secs = secs.unwrap_or(opts.secs).max(1);
    opts
}

fn usage() -> ! {
    eprintln!(
        "usage: bench [--quick] [--reps N] [--idle N] [--check] [--gt PATH] [--gt-b PATH] \
         [--reference PATH] [--haproxy] [--only bulk,wrk,conn,hs,start,idle] [--secs N]"
    );
    std::process::exit(2)
}

/// 5,000 idle connections need about 10,000 descriptors here and 2 per connection in each
/// proxy: raise the soft limit to the hard one (children inherit it).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Throwaway CA, server and client certificates (ECDSA P-256) made with openssl.
fn make_certs(dir: &Path) {
    let sh = r#"
set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -keyout ca.key \
    -out ca.pem -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null
for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $who.key \
        -out $who.csr -subj /CN=$who 2>/dev/null
    if [ $who = server ]; then
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext
    else
        printf 'extendedKeyUsage=clientAuth\n' > ext
    fi
    openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext -out $who.crt 2>/dev/null
    cat $who.crt $who.key > $who.pem
done
"#;
    let ok = Command::new("sh")
        .arg("-c")
        .arg(sh)
        .current_dir(dir)
        .status()
        .expect("run openssl");
    assert!(ok.success(), "openssl failed to make the certificates");
}

// ---------------------------------------------------------------------------------------------
// Backends (in this process)

/// Bulk sink: reads until EOF, answers with the byte count (8 bytes, big-endian).
fn spawn_sink(port: u16) {
    let l = TcpListener::bind(("127.0.0.1", port)).expect("bind sink");
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&total.to_be_bytes());
            });
        }
    });
}

/// Keep-alive HTTP/1.1 responder: one small response per request head.
fn spawn_http(port: u16) {
    let l = TcpListener::bind(("127.0.0.1", port)).expect("bind http");
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut s = s;
                let mut buf = vec![0u8; 16 * 1024];
                let mut have = 0;
                loop {
                    let n = match s.read(&mut buf[have..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    have += n;
                    let mut answers = 0;
                    let mut start = 0;
                    while let Some(end) = find(&buf[start..have], b"\r\n\r\n") {
                        start += end + 4;
                        answers += 1;
                    }
                    buf.copy_within(start..have, 0);
                    have -= start;
                    if have == buf.len() {
                        return; // a head larger than the buffer: not a wrk request
                    }
                    let out = RESPONSE.repeat(answers);
                    if s.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Accepts, reads one byte, answers one byte and holds the connection, on one thread (5,000
/// backend threads would crowd the machine's thread limit next to the proxies').
struct IdleBackend {
    held: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl IdleBackend {
    fn spawn(port: u16) -> IdleBackend {
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind idle backend");
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = held.clone();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {
                    h.lock().unwrap().push(s);
                }
            }
        });
        IdleBackend { held }
    }

    fn release(&self) {
        self.held.lock().unwrap().clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Loads

/// `streams` parallel connections each send `mib` MiB and wait for the sink's count. MB/s.
fn bulk(addr: &str, streams: u64, mib: u64) -> f64 {
    let bytes = mib * 1024 * 1024;
    let started = Instant::now();
    let handles: Vec<_> = (0..streams)
        .map(|_| {
            let addr = addr.to_string();
            thread::spawn(move || exchange(&addr, bytes, &vec![0x5a; 256 * 1024]))
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("stream")).sum();
    assert_eq!(
        total,
        bytes * streams,
        "the sink saw a different byte count"
    );
    total as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// Sends `bytes`, half-closes and returns the sink's count.
fn exchange(addr: &str, bytes: u64, chunk: &[u8]) -> u64 {
    let mut s = TcpStream::connect(addr).expect("connect");
    let _ = s.set_nodelay(true);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).expect("write");
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut count = [0u8; 8];
    s.read_exact(&mut count).expect("read count");
    u64::from_be_bytes(count)
}

/// New connections for `secs` seconds from 2 threads, each a tiny exchange: (connections/s,
/// p99 of one connection's time from connect to the answer, ms).
fn connrate(addr: &str, secs: u64) -> (f64, f64) {
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.to_string();
            let done = done.clone();
            thread::spawn(move || {
                let mut times = Vec::new();
                while started.elapsed() < Duration::from_secs(secs) && times.len() < 1_000_000 {
                    let t = Instant::now();
                    assert_eq!(exchange(&addr, 4, b"ping"), 4);
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
                done.fetch_add(times.len() as u64, Ordering::Relaxed);
                times
            })
        })
        .collect();
    let mut times: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("connrate thread"))
        .collect();
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    times.sort_by(|a, b| a.total_cmp(b));
    let p99 = times
        .get((times.len() * 99 / 100).min(times.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    (rate, p99)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// CPU time (user + system) of a process and all its threads so far, in seconds.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn own_cpu() -> f64 {
    cpu_of(std::process::id())
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Context switches so far of every live thread of a process.
fn switches_of(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut n = 0.0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        n += status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum::<f64>();
    }
    n
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Plain,
    Ghostunnel,
    /// The Go reference, run with the same flags as ghostunnel.
    Reference,
    Stunnel,
    Haproxy,
    /// A plaintext relay pair (two socat processes): bulk throughput only.
    Socat,
}

impl Kind {
    fn is_tls(self) -> bool {
        !matches!(self, Kind::Plain | Kind::Socat)
    }
}

/// One path through which the loads run, with its processes and the figures measured so far.
struct Tunnel {
    name: String,
    kind: Kind,
    bin: PathBuf,
    /// Plaintext entry for loads that end at the sink, http and idle backends.
    sink: String,
    http: String,
    idle: String,
    /// The same sink reached through a client that resumes no sessions.
    sink_full: String,
    /// server, client, client for the HTTP target, client for the idle target, client with
    /// session resumption off, and a second server per target.
    procs: Vec<Proc>,
    /// (server, client) pids per target: sink, http, idle, full.
    pairs: Vec<(u32, u32)>,
    /// The TLS server's own address of the pair whose client resumes no sessions.
    server_full: String,
    figures: BTreeMap<&'static str, Vec<f64>>,
}

impl Tunnel {
    fn plain() -> Tunnel {
        Tunnel {
            name: "plain TCP".into(),
            kind: Kind::Plain,
            bin: PathBuf::new(),
            sink: format!("127.0.0.1:{SINK}"),
            http: format!("127.0.0.1:{HTTP}"),
            idle: format!("127.0.0.1:{IDLE_BACKEND}"),
            sink_full: format!("127.0.0.1:{SINK}"),
            procs: Vec::new(),
            pairs: Vec::new(),
            server_full: String::new(),
            figures: BTreeMap::new(),
        }
    }

    /// One client -> server pair per target (so each figure's CPU is that load's alone), plus a
    /// pair whose client resumes no sessions. Ports base..base+9.
    fn ghostunnel(name: &str, kind: Kind, bin: &Path, work: &Path, base: u16) -> Tunnel {
        let mut t = Tunnel::plain();
        t.name = name.into();
        t.kind = kind;
        t.bin = bin.to_path_buf();
        let w = |f: &str| work.join(f).display().to_string();
        let targets = [SINK, HTTP, IDLE_BACKEND, SINK];
        let mut entries = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            let srv_port = base + 2 * i as u16;
            let cli_port = srv_port + 1;
            let server = Command::new(bin)
                .args(["server", "--quiet=conns", "--listen"])
                .arg(format!("127.0.0.1:{srv_port}"))
                .arg("--target")
                .arg(format!("127.0.0.1:{target}"))
                .args(["--keystore", &w("server.pem"), "--cacert", &w("ca.pem")])
                .args(["--allow-cn", "client"])
                .stdout(Stdio::null())
                .spawn()
                .expect("start ghostunnel server");
            let mut client = Command::new(bin);
            client
                .args(["client", "--quiet=conns", "--listen"])
                .arg(format!("127.0.0.1:{cli_port}"))
                .arg("--target")
                .arg(format!("localhost:{srv_port}"))
                .args(["--keystore", &w("client.pem"), "--cacert", &w("ca.pem")])
                .stdout(Stdio::null());
            if i == 3 {
                client.env("GHOSTUNNEL_TLS_RESUMPTION", "off");
            }
            let client = client.spawn().expect("start ghostunnel client");
            t.pairs.push((server.id(), client.id()));
            t.procs.push(Proc(server));
            t.procs.push(Proc(client));
            entries.push(format!("127.0.0.1:{cli_port}"));
        }
        t.sink = entries[0].clone();
        t.http = entries[1].clone();
        t.idle = entries[2].clone();
        t.sink_full = entries[3].clone();
        t.server_full = format!("127.0.0.1:{}", base + 6);
        t
    }

    fn stunnel(work: &Path, base: u16) -> Tunnel {
        let mut t = Tunnel::plain();
        t.name = "stunnel4".into();
        t.kind = Kind::Stunnel;
        t.bin = PathBuf::from(stunnel_bin());
        let targets = [SINK, HTTP, IDLE_BACKEND, SINK];
        let mut entries = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            let srv_port = base + 2 * i as u16;
            let cli_port = srv_port + 1;
            let server_conf = work.join(format!("st-server-{i}.conf"));
            std::fs::write(&server_conf, stunnel_server_conf(work, srv_port, *target))
                .expect("write stunnel conf");
            let client_conf = work.join(format!("st-client-{i}.conf"));
            let mut conf = format!(
                "foreground = yes\npid =\ndebug = 3\n[cli]\nclient = yes\n\
                 accept = 127.0.0.1:{cli_port}\nconnect = 127.0.0.1:{srv_port}\n\
                 cert = {w}/client.crt\nkey = {w}/client.key\nCAfile = {w}/ca.pem\n\
                 verifyChain = yes\ncheckHost = localhost\nsslVersionMin = TLSv1.2\n",
                w = work.display()
            );
            if i == 3 {
                conf.push_str("sessionResume = no\n");
            }
            std::fs::write(&client_conf, conf).expect("write stunnel conf");
            let spawn = |conf: &Path| {
                Command::new(&t.bin)
                    .arg(conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start stunnel")
            };
            let server = spawn(&server_conf);
            let client = spawn(&client_conf);
            t.pairs.push((server.id(), client.id()));
            t.procs.push(Proc(server));
            t.procs.push(Proc(client));
            entries.push(format!("127.0.0.1:{cli_port}"));
        }
        t.sink = entries[0].clone();
        t.http = entries[1].clone();
        t.idle = entries[2].clone();
        t.sink_full = entries[3].clone();
        t.server_full = format!("127.0.0.1:{}", base + 6);
        t
    }

    /// HAProxy as the same mutual-TLS pair in tcp mode (one process per side and target, as
    /// for the others; each runs its default thread count, one per CPU). The server checks the
    /// client's CN like ghostunnel's `--allow-cn`; the client verifies the server's name.
    fn haproxy(work: &Path, base: u16) -> Tunnel {
        let mut t = Tunnel::plain();
        t.name = "haproxy".into();
        t.kind = Kind::Haproxy;
        t.bin = PathBuf::from("haproxy");
        let targets = [SINK, HTTP, IDLE_BACKEND, SINK];
        let mut entries = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            let srv_port = base + 2 * i as u16;
            let cli_port = srv_port + 1;
            let server_conf = work.join(format!("hap-server-{i}.cfg"));
            std::fs::write(&server_conf, haproxy_server_conf(work, srv_port, *target))
                .expect("write haproxy conf");
            let client_conf = work.join(format!("hap-client-{i}.cfg"));
            let reuse = if i == 3 { " no-ssl-reuse" } else { "" };
            let conf = format!(
                "{HAPROXY_GLOBAL}frontend f\n  bind 127.0.0.1:{cli_port}\n  default_backend b\n\
                 backend b\n  server s 127.0.0.1:{srv_port} ssl crt {w}/client.pem \
                 ca-file {w}/ca.pem verify required verifyhost localhost sni str(localhost) \
                 ssl-min-ver TLSv1.2{reuse}\n",
                w = work.display()
            );
            std::fs::write(&client_conf, conf).expect("write haproxy conf");
            let server = haproxy_spawn(&server_conf);
            let client = haproxy_spawn(&client_conf);
            t.pairs.push((server.id(), client.id()));
            t.procs.push(Proc(server));
            t.procs.push(Proc(client));
            entries.push(format!("127.0.0.1:{cli_port}"));
        }
        t.sink = entries[0].clone();
        t.http = entries[1].clone();
        t.idle = entries[2].clone();
        t.sink_full = entries[3].clone();
        t.server_full = format!("127.0.0.1:{}", base + 6);
        t
    }

    /// A plaintext relay pair, `socat` with its defaults (8 KiB buffer, a process per
    /// connection), in front of the sink: what a TLS pair's bulk throughput is compared with.
    /// None when socat is not installed.
    fn socat(base: u16) -> Option<Tunnel> {
        let spawn = |listen: u16, to: u16| {
            Command::new("socat")
                .arg(format!("TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork"))
                .arg(format!("TCP:127.0.0.1:{to},nodelay"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()
        };
        let server = spawn(base, SINK)?;
        let client = spawn(base + 1, base)?;
        let mut t = Tunnel::plain();
        t.name = "socat pair".into();
        t.kind = Kind::Socat;
        t.pairs.push((server.id(), client.id()));
        t.procs.push(Proc(server));
        t.procs.push(Proc(client));
        let entry = format!("127.0.0.1:{}", base + 1);
        (t.sink, t.http, t.idle, t.sink_full) =
            (entry.clone(), entry.clone(), entry.clone(), entry);
        Some(t)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in [&self.sink, &self.http, &self.idle, &self.sink_full] {
            while TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "{}: {addr} never listened",
                    self.name
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn cpu(&self, pair: usize) -> f64 {
        self.pairs
            .get(pair)
            .map(|&(s, c)| cpu_of(s) + cpu_of(c))
            .unwrap_or(0.0)
    }

    /// Both processes of the sink pair, as the "RSS of both processes" figures mean.
    fn rss_kib(&self) -> u64 {
        self.pairs
            .get(2)
            .map(|&(s, c)| rss_of(s) + rss_of(c))
            .unwrap_or(0)
    }

    fn record(&mut self, key: &'static str, v: f64) {
        self.figures.entry(key).or_default().push(v);
    }

    /// CPU figures exist only for a real tunnel.
    fn record_cpu(&mut self, key: &'static str, v: f64) {
        if self.kind.is_tls() {
            self.record(key, v);
        }
    }

    /// Runs a load against the sink entry: (its result, tunnel CPU seconds, our CPU seconds).
    fn measure(&self, load: impl FnOnce(&str) -> f64) -> (f64, f64, f64) {
        self.measure_on(0, &self.sink, load)
    }

    fn measure_full(&self, load: impl FnOnce(&str) -> f64) -> (f64, f64, f64) {
        self.measure_on(3, &self.sink_full, load)
    }

    fn measure_on(
        &self,
        pair: usize,
        addr: &str,
        load: impl FnOnce(&str) -> f64,
    ) -> (f64, f64, f64) {
        let (c0, o0) = (self.cpu(pair), own_cpu());
        let r = load(addr);
        (r, self.cpu(pair) - c0, own_cpu() - o0)
    }

    /// Context switches (voluntary and not) of every thread of both processes of a pair.
    fn switches(&self, pair: usize) -> f64 {
        self.pairs
            .get(pair)
            .map(|&(s, c)| switches_of(s) + switches_of(c))
            .unwrap_or(0.0)
    }

    /// wrk keep-alive load: (requests/s, p99 ms, tunnel CPU s, wrk's CPU s, tunnel context
    /// switches).
    fn measure_wrk(
        &self,
        threads: u32,
        conns: u32,
        secs: u64,
    ) -> Option<(f64, f64, f64, f64, f64)> {
        let c0 = self.cpu(1);
        // Threads that exit within the window take their counts along; wrk's connections stay
        // open for the whole window, so their threads do not.
        let s0 = self.switches(1);
        // Reaped by `reap_cpu` (wait4), which also reads its CPU time.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("wrk")
            .arg(format!("-t{threads}"))
            .arg(format!("-c{conns}"))
            .arg(format!("-d{secs}s"))
            .arg("--latency")
            .arg(format!("http://{}/", self.http))
            .stdout(Stdio::piped())
            .spawn()
            .expect("run wrk (apt-get install wrk)");
        let pid = child.id() as i32;
        let mut out = String::new();
        let mut stdout = child.stdout.expect("wrk stdout");
        stdout.read_to_string(&mut out).expect("read wrk output");
        let wrk_cpu = reap_cpu(pid);
        let cpu = self.cpu(1) - c0;
        let switches = self.switches(1) - s0;
        let rps = out
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse::<f64>().ok())?;
        let p99 = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("99%"))
            .and_then(|v| parse_latency_ms(v.trim()))?;
        if out.contains("Non-2xx") || out.contains("Socket errors") {
            eprintln!("{}: wrk reported errors:\n{out}", self.name);
        }
        Some((rps, p99, cpu, wrk_cpu, switches))
    }

    /// Full handshakes from OpenSSL (`openssl s_time -new`, its default suite preference) to
    /// the server alone, with the client certificate: the server's CPU per connection, µs.
    fn server_handshake_cpu(&self, work: &Path, secs: u64) -> Option<f64> {
        let w = |f: &str| work.join(f).display().to_string();
        let server = self.pairs.get(3)?.0;
        let c0 = cpu_of(server);
        let out = Command::new("openssl")
            .args(["s_time", "-new", "-connect", &self.server_full])
            .args(["-time", &secs.to_string()])
            .args(["-cert", &w("client.crt"), "-key", &w("client.key")])
            .args(["-CAfile", &w("ca.pem")])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        // The server finishes the last connections (and their backend dials) after the client
        // is gone.
        thread::sleep(Duration::from_millis(300));
        let cpu = cpu_of(server) - c0;
        let text = String::from_utf8_lossy(&out.stdout);
        let n: f64 = text
            .lines()
            .find_map(|l| l.split_once(" connections in "))
            .and_then(|(n, _)| n.trim().parse().ok())?;
        (n > 0.0).then(|| cpu / n * 1e6)
    }

    /// Time from exec to an accepting listener for a server alone, in ms (None: plain TCP).
    fn startup_ms(&self, work: &Path) -> Option<f64> {
        let port = 19199;
        let w = |f: &str| work.join(f).display().to_string();
        let mut cmd = match self.kind {
            Kind::Plain | Kind::Socat => return None,
            Kind::Ghostunnel | Kind::Reference => {
                let mut c = Command::new(&self.bin);
                c.args(["server", "--quiet=all", "--listen"])
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--target")
                    .arg(format!("127.0.0.1:{SINK}"))
                    .args(["--keystore", &w("server.pem"), "--cacert", &w("ca.pem")])
                    .args(["--allow-cn", "client"]);
                c
            }
            Kind::Stunnel => {
                let conf = work.join("st-startup.conf");
                std::fs::write(&conf, stunnel_server_conf(work, port, SINK)).ok()?;
                let mut c = Command::new(&self.bin);
                c.arg(conf);
                c
            }
            Kind::Haproxy => {
                let conf = work.join("hap-startup.cfg");
                std::fs::write(&conf, haproxy_server_conf(work, port, SINK)).ok()?;
                let mut c = Command::new(&self.bin);
                c.arg("-db").arg("-f").arg(conf);
                c
            }
        };
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let started = Instant::now();
        let child = Proc(cmd.spawn().expect("start server"));
        let deadline = started + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let ms = started.elapsed().as_secs_f64() * 1e3;
                drop(child);
                return Some(ms);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_micros(100));
        }
    }

    /// Holds `n` connections open end to end through the idle pair, then closes them:
    /// RSS per connection, and RSS a few seconds after they closed.
    fn idle_run(&mut self, backend: &IdleBackend, n: usize) {
        if self.kind == Kind::Plain || n == 0 {
            return;
        }
        let (s, c) = self.pairs[2];
        let before = rss_of(s) + rss_of(c);
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let Ok(mut sock) = TcpStream::connect(&self.idle) else {
                break;
            };
            let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
            let mut b = [b'x'];
            if sock.write_all(&b).is_err() || sock.read_exact(&mut b).is_err() {
                break;
            }
            conns.push(sock);
        }
        if conns.len() < n {
            eprintln!(
                "{}: only {} of {n} idle connections opened",
                self.name,
                conns.len()
            );
        }
        // Idle connections settle after a second (ghostunnel hands back its copy buffer and
        // stack then); measure after that.
        thread::sleep(Duration::from_millis(2500));
        let held = rss_of(s) + rss_of(c);
        let threads = threads_of(s) + threads_of(c);
        self.record(
            "rss_per_conn",
            (held.saturating_sub(before)) as f64 / conns.len().max(1) as f64,
        );
        self.record("rss_held_mib", held as f64 / 1024.0);
        self.record("threads_held", threads as f64);
        drop(conns);
        backend.release();
        // Let both proxies notice the closes and settle (ghostunnel keeps up to 32 idle workers
        // per process).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && threads_of(s) + threads_of(c) > 80 {
            thread::sleep(Duration::from_millis(100));
        }
        thread::sleep(Duration::from_secs(2));
        self.record("rss_after", (rss_of(s) + rss_of(c)) as f64);
    }
}

/// Waits for a child we spawned and returns its CPU seconds (user + system).
fn reap_cpu(pid: i32) -> f64 {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    #[allow(unsafe_code)]
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn parse_latency_ms(v: &str) -> Option<f64> {
    let num_end = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = v.split_at(num_end);
    let n: f64 = num.parse().ok()?;
    Some(match unit.trim() {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => return None,
    })
}

fn stunnel_bin() -> String {
    for b in ["stunnel4", "stunnel"] {
        if Command::new(b)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            return b.into();
        }
    }
    eprintln!("bench: stunnel4 is needed (apt-get install stunnel4)");
    std::process::exit(2)
}

const HAPROXY_GLOBAL: &str = "global\n  maxconn 6000\n\
    defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 60s\n  timeout server 60s\n";

fn haproxy_server_conf(work: &Path, port: u16, target: u16) -> String {
    format!(
        "{HAPROXY_GLOBAL}frontend f\n  bind 127.0.0.1:{port} ssl crt {w}/server.pem \
         ca-file {w}/ca.pem verify required ssl-min-ver TLSv1.2\n\
         tcp-request session reject unless {{ ssl_c_s_dn(CN) -m str client }}\n\
         default_backend b\nbackend b\n  server s 127.0.0.1:{target}\n",
        w = work.display()
    )
}

fn haproxy_spawn(conf: &Path) -> Child {
    Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy (apt-get install haproxy)")
}

fn stunnel_server_conf(work: &Path, port: u16, target: u16) -> String {
    format!(
        "foreground = yes\npid =\ndebug = 3\n[srv]\naccept = 127.0.0.1:{port}\n\
         connect = 127.0.0.1:{target}\ncert = {w}/server.crt\nkey = {w}/server.key\n\
         CAfile = {w}/ca.pem\nverifyChain = yes\nrequireCert = yes\nsslVersionMin = TLSv1.2\n\
         ciphers = ECDHE+AESGCM\n",
        w = work.display()
    )
}

// ---------------------------------------------------------------------------------------------
// Report

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The table rows: figure key, label, decimals.
const ROWS: &[(&str, &str, usize)] = &[
    ("cpu_gb", "CPU per GB, one bulk stream (core-s)", 2),
    ("bulk1", "bulk throughput, one stream (MB/s)", 0),
    ("bulk8", "bulk throughput, 8 streams (MB/s)", 0),
    ("cpu_req", "CPU per request, wrk -c64 keep-alive (µs)", 1),
    ("rps", "requests/s, same", 0),
    ("p99", "p99 latency, same (ms)", 2),
    ("cs_req", "context switches per request, same", 2),
    (
        "cpu_conn_full",
        "CPU per new connection, full handshake (µs)",
        0,
    ),
    ("conns_full", "new connections/s, full handshake", 0),
    (
        "p99_conn_full",
        "p99 new connection, full handshake (ms)",
        2,
    ),
    (
        "cpu_hs_server",
        "server CPU per full handshake, OpenSSL client (µs)",
        0,
    ),
    ("cpu_conn", "CPU per new connection, resumed (µs)", 0),
    ("conns", "new connections/s, resumed", 0),
    ("rss_per_conn", "RSS per idle connection (KiB)", 1),
    (
        "rss_held_mib",
        "RSS with the idle connections held (MiB)",
        1,
    ),
    ("threads_held", "threads with the idle connections held", 0),
    ("rss_idle", "RSS of both processes idle (KiB)", 0),
    (
        "rss_after",
        "RSS after all idle connections closed (KiB)",
        0,
    ),
    ("startup", "start to listening (ms)", 2),
];

fn render(tunnels: &[Tunnel], loadgen: &BTreeMap<&str, Vec<f64>>, opts: &Opts) -> String {
    let mut out = String::new();
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "\n{} repetitions (medians); {cores} cores; one stream {} MiB; wrk -t2 -c64 -d{}s; \
         connections for {} s; {} idle connections",
        opts.reps, opts.mib, opts.secs, opts.secs, opts.idle
    );
    let _ = writeln!(
        out,
        "CPU = both tunnel processes together; RSS = both processes of one pair\n"
    );
    // Ratio columns: ghostunnel over each other TLS implementation in the run.
    let ours = tunnels.iter().find(|t| t.kind == Kind::Ghostunnel);
    let others: Vec<&Tunnel> = tunnels
        .iter()
        .filter(|t| matches!(t.kind, Kind::Stunnel | Kind::Reference | Kind::Haproxy))
        .collect();
    let figure = |t: &Tunnel, key: &str| t.figures.get(key).and_then(|v| median(v));
    let _ = write!(out, "{:<52}", "figure");
    for t in tunnels {
        let _ = write!(out, "{:>14}", t.name);
    }
    for o in &others {
        let _ = write!(out, "{:>12}", format!("gt/{}", short(o)));
    }
    let _ = writeln!(out);
    for (key, label, decimals) in ROWS {
        let _ = write!(out, "{label:<52}");
        for t in tunnels {
            let cell = figure(t, key)
                .map(|m| format!("{m:.decimals$}"))
                .unwrap_or_else(|| "-".into());
            let _ = write!(out, "{cell:>14}");
        }
        for o in &others {
            let cell = match (ours.and_then(|g| figure(g, key)), figure(o, key)) {
                (Some(g), Some(x)) if x > 0.0 => format!("{:.2}", g / x),
                _ => "-".into(),
            };
            let _ = write!(out, "{cell:>12}");
        }
        let _ = writeln!(out);
    }
    if let Some(socat) = tunnels.iter().find(|t| t.kind == Kind::Socat) {
        if let Some(base) = figure(socat, "bulk1") {
            let _ = write!(
                out,
                "\nbulk, one stream, as a fraction of the plaintext socat relay pair's:"
            );
            for t in tunnels.iter().filter(|t| t.kind.is_tls()) {
                if let Some(b) = figure(t, "bulk1") {
                    let _ = write!(out, " {} {:.2};", short(t), b / base);
                }
            }
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(
        out,
        "\nload generator's own CPU (this process: loads and backends; wrk):"
    );
    for (what, v) in loadgen {
        if let Some(m) = median(v) {
            let _ = writeln!(out, "  {what:<30} {m:>10.2} (median over all paths)");
        }
    }
    out
}

/// A column's name in a ratio heading.
fn short(t: &Tunnel) -> &str {
    match t.kind {
        Kind::Stunnel => "stunnel",
        Kind::Reference => "ref",
        Kind::Haproxy => "haproxy",
        _ => &t.name,
    }
}

/// The ratio checks of the CI variant: ghostunnel against stunnel4 in the same run. Bounds are
/// far from today's values (README "Performance"), so only a large regression fails.
fn check(tunnels: &[Tunnel]) -> usize {
    let get = |kind: Kind, key: &str| {
        tunnels
            .iter()
            .find(|t| t.kind == kind)
            .and_then(|t| t.figures.get(key))
            .and_then(|v| median(v))
    };
    // (figure, lower is better, worst allowed ghostunnel / stunnel4 ratio)
    // Today these ratios are about: cpu_gb 0.75, bulk1 1.5, cpu_req 0.55, rps 1.6,
    // cpu_conn_full 0.27, rss_per_conn 0.3, rss_idle 0.5, startup 0.2.
    let rules: &[(&str, bool, f64)] = &[
        ("cpu_gb", true, 1.5),
        ("bulk1", false, 0.4),
        ("cpu_req", true, 1.1),
        ("rps", false, 0.7),
        ("cpu_conn_full", true, 0.6),
        ("rss_per_conn", true, 0.6),
        ("rss_idle", true, 1.0),
        ("startup", true, 0.6),
    ];
    let mut failed = 0;
    println!("\nratio checks (ghostunnel / stunnel4, same run):");
    for &(key, lower_better, bound) in rules {
        let (Some(g), Some(s)) = (get(Kind::Ghostunnel, key), get(Kind::Stunnel, key)) else {
            println!("  {key:<16} missing figure");
            failed += 1;
            continue;
        };
        let ratio = g / s;
        let ok = if lower_better {
            ratio <= bound
        } else {
            ratio >= bound
        };
        let op = if lower_better { "<=" } else { ">=" };
        println!(
            "  {key:<16} {ratio:>6.2} (bound {op} {bound}) {}",
            if ok { "ok" } else { "FAILED" }
        );
        if !ok {
            failed += 1;
        }
    }
    failed
}
