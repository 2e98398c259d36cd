//! The rig around the daemons under test: starting them, sampling them through /proc, the
//! backend they forward to, and the client side of the exchange protocol.
//!
//! Exchange protocol (driver -> proxies -> backend): a 32-byte header (`GTSK`, mode, id,
//! request length, response length), then the request bytes. In mode `H` the backend reads the
//! whole request, answers with its SHA-256 and then `response length` bytes of a stream derived
//! from the id, and closes; the driver checks both. Other modes misbehave on purpose (see
//! [`Mode`]).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const HEADER: usize = 32;
const MAGIC: &[u8; 4] = b"GTSK";
const BLOCK: usize = 64 * 1024;
const REQ_SALT: u64 = 0x5245_5155_4553_5421;
const RESP_SALT: u64 = 0x5245_5350_4f4e_5345;
/// Driver-side bound on any single read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What the backend does with a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Read the request, answer its hash and the response stream, close.
    Hash = b'H' as isize,
    /// Never read after the header; hold the socket until the peer goes (at most 60 s).
    Stall = b'S' as isize,
    /// As `Stall`, but send FIN first.
    StallFin = b'F' as isize,
    /// Read half the request, then reset the connection.
    Reset = b'R' as isize,
    /// Write the response stream as fast as the peer takes it, ignore the request.
    Blast = b'B' as isize,
}

/// A deterministic byte stream per seed, identical however it is cut into reads.
pub struct Pattern {
    state: u64,
    block: Vec<u8>,
    pos: usize,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            state: seed,
            block: vec![0; BLOCK],
            pos: BLOCK,
        }
    }

    /// The next `out.len()` bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.pos == BLOCK {
                for word in self.block.chunks_mut(8) {
                    self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = self.state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
                }
                self.pos = 0;
            }
            let n = (out.len() - done).min(BLOCK - self.pos);
            out[done..done + n].copy_from_slice(&self.block[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
    }

    /// Whether `got` is the next part of the stream.
    pub fn matches(&mut self, got: &[u8]) -> bool {
        let mut want = vec![0; got.len()];
        self.fill(&mut want);
        want == got
    }
}

/// A small xorshift generator for sizes and choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Connects with a bounded wait and driver-side I/O timeouts.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Sends the header and `req` request bytes (paced by `pause` between 64 KiB blocks), then
/// half-closes. Returns the request's SHA-256.
pub fn send_request(
    s: &mut TcpStream,
    mode: Mode,
    id: u64,
    req: u64,
    resp: u64,
    pause: Option<Duration>,
) -> io::Result<[u8; 32]> {
    let mut head = [0u8; HEADER];
    head[..4].copy_from_slice(MAGIC);
    head[4] = mode as u8;
    head[8..16].copy_from_slice(&id.to_be_bytes());
    head[16..24].copy_from_slice(&req.to_be_bytes());
    head[24..32].copy_from_slice(&resp.to_be_bytes());
    s.write_all(&head)?;
    let mut pattern = Pattern::new(id ^ REQ_SALT);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut left = req;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        pattern.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        s.write_all(&buf[..n])?;
        left -= n as u64;
        if let Some(p) = pause {
            thread::sleep(p);
        }
    }
    if mode == Mode::Hash {
        s.shutdown(Shutdown::Write)?;
    }
    Ok(hash.finalize().into())
}

/// Reads and checks a mode `H` answer: the request's hash, `resp` bytes of the id's stream,
/// then EOF.
pub fn read_reply(s: &mut TcpStream, id: u64, resp: u64, sent: &[u8; 32]) -> Result<(), String> {
    let mut hash = [0u8; 32];
    s.read_exact(&mut hash)
        .map_err(|e| format!("reading the request hash: {e}"))?;
    if &hash != sent {
        return Err("the backend's hash of the request differs".into());
    }
    let mut pattern = Pattern::new(id ^ RESP_SALT);
    let mut buf = vec![0u8; BLOCK];
    let mut got = 0u64;
    while got < resp {
        let want = (resp - got).min(BLOCK as u64) as usize;
        let n = match s.read(&mut buf[..want]) {
            Ok(0) => return Err(format!("response cut short at {got} of {resp} bytes")),
            Ok(n) => n,
            Err(e) => return Err(format!("response read after {got} of {resp} bytes: {e}")),
        };
        if !pattern.matches(&buf[..n]) {
            return Err(format!("response corrupt near byte {got}"));
        }
        got += n as u64;
    }
    match s.read(&mut buf[..1]) {
        Ok(0) => Ok(()),
        Ok(_) => Err("bytes after the response".into()),
        Err(e) => Err(format!("no EOF after the response: {e}")),
    }
}

/// One verified round trip on a new connection; returns its duration.
pub fn exchange(addr: SocketAddr, id: u64, req: u64, resp: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = connect(addr).map_err(|e| format!("connect: {e}"))?;
    let sent = send_request(&mut s, Mode::Hash, id, req, resp, None)
        .map_err(|e| format!("sending the request: {e}"))?;
    read_reply(&mut s, id, resp, &sent)?;
    Ok(started.elapsed())
}

/// Unique connection ids across the whole run.
pub fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs `f` on a thread with a small stack.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(f)
        .expect("driver thread")
}

/// The plaintext service behind the proxies. It can be taken down and brought back on the same
/// port, and remembers every connection id whose header it read.
pub struct Backend {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    seen: Arc<Mutex<HashSet<u64>>>,
    accepted: Arc<AtomicUsize>,
}

impl Backend {
    pub fn start() -> Backend {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let backend = Backend {
            addr,
            up: Arc::new(AtomicBool::new(true)),
            seen: Arc::default(),
            accepted: Arc::default(),
        };
        let (up, seen, accepted) = (
            backend.up.clone(),
            backend.seen.clone(),
            backend.accepted.clone(),
        );
        thread::spawn(move || accept_loop(addr, &up, &seen, &accepted));
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        backend
    }

    /// Takes the listener down (connections are refused) or brings it back.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(60));
    }

    /// Whether the backend read the header of connection `id`.
    pub fn saw(&self, id: u64) -> bool {
        self.seen.lock().unwrap().contains(&id)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn accept_loop(
    addr: SocketAddr,
    up: &AtomicBool,
    seen: &Arc<Mutex<HashSet<u64>>>,
    accepted: &AtomicUsize,
) {
    let mut listener: Option<TcpListener> = None;
    loop {
        let want = up.load(Ordering::SeqCst);
        if !want {
            listener = None;
        } else if listener.is_none() {
            listener = listen(addr).ok();
        }
        let Some(l) = &listener else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        if !poll_one(l.as_raw_fd(), libc::POLLIN, 20) {
            continue;
        }
        while let Ok((s, _)) = l.accept() {
            accepted.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            let spawned = thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || serve(s, &seen));
            if spawned.is_err() {
                eprintln!("backend: cannot start a thread");
            }
        }
    }
}

/// poll(2) on one descriptor; true when any event is reported.
pub fn poll_one(fd: i32, events: i16, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    #[allow(unsafe_code)]
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents != 0
}

fn serve(mut s: TcpStream, seen: &Mutex<HashSet<u64>>) {
    let _ = s.set_nonblocking(false);
    let mut head = [0u8; HEADER];
    // Idle connections send their header only at the end of the soak: no timeout here.
    if s.read_exact(&mut head).is_err() || &head[..4] != MAGIC {
        return;
    }
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let num = |i: usize| u64::from_be_bytes(head[i..i + 8].try_into().unwrap());
    let (mode, id, req, resp) = (head[4], num(8), num(16), num(24));
    seen.lock().unwrap().insert(id);
    let mut buf = vec![0u8; BLOCK];
    match mode {
        b'H' => {
            let mut hash = Sha256::new();
            let mut left = req;
            while left > 0 {
                let want = left.min(BLOCK as u64) as usize;
                match s.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        hash.update(&buf[..n]);
                        left -= n as u64;
                    }
                }
            }
            let digest: [u8; 32] = hash.finalize().into();
            if s.write_all(&digest).is_err() {
                return;
            }
            let _ = blast(&mut s, id, resp, &mut buf);
            let _ = s.shutdown(Shutdown::Write);
            // Wait for the client's FIN so the close is orderly.
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
        b'S' | b'F' => {
            if mode == b'F' {
                let _ = s.shutdown(Shutdown::Write);
            }
            poll_one(s.as_raw_fd(), libc::POLLRDHUP, 60_000);
        }
        b'R' => {
            let mut left = req / 2;
            while left > 0 {
                match s.read(&mut buf[..left.min(BLOCK as u64) as usize]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left -= n as u64,
                }
            }
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
        b'B' => {
            let _ = blast(&mut s, id, resp, &mut buf);
        }
        _ => {}
    }
}

fn blast(s: &mut TcpStream, id: u64, len: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut pattern = Pattern::new(id ^ RESP_SALT);
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        pattern.fill(&mut buf[..n]);
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// A process's open descriptors, threads and resident memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub fds: usize,
    pub threads: usize,
    pub rss_kib: usize,
}

impl Sample {
    pub fn max(self, o: Sample) -> Sample {
        Sample {
            fds: self.fds.max(o.fds),
            threads: self.threads.max(o.threads),
            rss_kib: self.rss_kib.max(o.rss_kib),
        }
    }

    /// Every figure within `factor` times `base`'s.
    pub fn within(self, base: Sample, factor: usize) -> bool {
        self.fds <= base.fds * factor
            && self.threads <= base.threads * factor
            && self.rss_kib <= base.rss_kib * factor
    }
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} fds, {} threads, {:.1} MiB RSS",
            self.fds,
            self.threads,
            self.rss_kib as f64 / 1024.0
        )
    }
}

/// A ghostunnel process under test, its output going to a log file.
pub struct Daemon {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    /// The proxy's listening address.
    pub addr: SocketAddr,
    /// The plain-HTTP status address, if any.
    pub status: Option<SocketAddr>,
    exited: Option<ExitStatus>,
}

/// A free port on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

impl Daemon {
    /// Starts `wrapper... bin args...` and waits for its readiness line.
    pub fn start(
        name: &str,
        bin: &Path,
        wrapper: &[&str],
        args: Vec<String>,
        dir: &Path,
        addr: SocketAddr,
        status: Option<SocketAddr>,
    ) -> Result<Daemon, String> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(&args).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(|e| format!("{name}: {e}"))?;
        let mut d = Daemon {
            name: name.into(),
            child,
            log,
            addr,
            status,
            exited: None,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !d.log_text().contains("listening for connections on") {
            if d.try_exit().is_some() || Instant::now() > deadline {
                return Err(format!(
                    "{name} did not start: {:?}\n{}",
                    args,
                    d.log_text()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The first log line containing `needle`, without its `[pid]` prefix, or "none".
    pub fn first_line(&self, needle: &str) -> String {
        let text = self.log_text();
        let line = text
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default();
        line.split_once(' ').map_or("none", |l| l.1).to_string()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn sample(&self) -> Sample {
        sample(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Descriptors, threads and RSS of `pid` (zeros once it is gone).
pub fn sample(pid: i32) -> Sample {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Sample {
        fds,
        threads: field("Threads:"),
        rss_kib: field("VmRSS:"),
    }
}

/// GET /_status over plain HTTP: the status code and body.
pub fn get_status(addr: SocketAddr) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /_status HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response: {text:?}"))?;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((code, body))
}

/// Connection churn: `threads` workers doing verified exchanges of random sizes until stopped.
pub struct Churn {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    pub stats: Arc<ChurnStats>,
}

#[derive(Default)]
pub struct ChurnStats {
    pub ok: AtomicU64,
    pub bytes: AtomicU64,
    /// Latency of every successful exchange, in microseconds.
    pub latency_us: Mutex<Vec<u32>>,
    /// (id, error) of every failed exchange.
    pub failures: Mutex<Vec<(u64, String)>>,
}

impl ChurnStats {
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
    pub fn failures(&self) -> Vec<(u64, String)> {
        self.failures.lock().unwrap().clone()
    }
    /// The `p`th percentile latency (0-100) of the exchanges recorded in `from..to`.
    pub fn percentile(&self, from: usize, to: usize, p: f64) -> Duration {
        let v = self.latency_us.lock().unwrap();
        let to = to.min(v.len());
        let mut v = v[from.min(to)..to].to_vec();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * p / 100.0).round() as usize;
        Duration::from_micros(u64::from(v[i]))
    }
    pub fn recorded(&self) -> usize {
        self.latency_us.lock().unwrap().len()
    }
}

impl Churn {
    /// Sizes: up to `max` bytes each way, with one exchange in 16 up to 4 MiB when `max` is at
    /// least 64 KiB.
    pub fn start(addr: SocketAddr, threads: usize, max: u64) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ChurnStats::default());
        let handles = (0..threads)
            .map(|t| {
                let (stop, stats) = (stop.clone(), stats.clone());
                spawn(move || {
                    let mut rng = Rng::new(0x1234_5678 + t as u64 * 7919);
                    while !stop.load(Ordering::Relaxed) {
                        let big = max >= 64 * 1024 && rng.below(16) == 0;
                        let cap = if big { 4 << 20 } else { max };
                        let (req, resp) = (rng.below(cap + 1), rng.below(cap + 1));
                        let id = next_id();
                        match exchange(addr, id, req, resp) {
                            Ok(d) => {
                                stats.ok.fetch_add(1, Ordering::Relaxed);
                                stats.bytes.fetch_add(req + resp, Ordering::Relaxed);
                                let us = d.as_micros().min(u32::MAX as u128) as u32;
                                stats.latency_us.lock().unwrap().push(us);
                            }
                            Err(e) => {
                                stats.failures.lock().unwrap().push((id, e));
                                // Do not spin on a refused port.
                                thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                })
            })
            .collect();
        Churn {
            stop,
            handles,
            stats,
        }
    }

    pub fn stop_after(self, d: Duration) -> Arc<ChurnStats> {
        thread::sleep(d);
        self.stop()
    }

    pub fn stop(self) -> Arc<ChurnStats> {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            let _ = h.join();
        }
        self.stats
    }
}
