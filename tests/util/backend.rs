//! Plaintext backends standing in for the service behind ghostunnel.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// What a backend observed.
#[derive(Default)]
pub struct Stats {
    pub accepted: AtomicUsize,
    pub bytes_in: AtomicUsize,
    /// Everything received, per connection, once the connection ended (bounded use only).
    pub received: Mutex<Vec<Vec<u8>>>,
}

impl Stats {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    pub fn bytes_in(&self) -> usize {
        self.bytes_in.load(Ordering::SeqCst)
    }
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

/// Behaviour of a backend connection.
#[derive(Clone)]
pub enum Behaviour {
    /// Echo every byte back; half-close the write side on EOF.
    Echo,
    /// Read to EOF, then write this response and close.
    ReplyAfterEof(Vec<u8>),
    /// Write this greeting, shut down the write side, then read to EOF and record it.
    GreetThenCloseWrite(Vec<u8>),
    /// Read to EOF, then write `<len> <sha256 hex>\n` and close.
    HashSink,
    /// Close immediately after accepting.
    CloseImmediately,
    /// Accept and hold the connection open, reading and discarding data, until EOF.
    Hold,
    /// Read to EOF, then keep the connection open (no reply, no FIN) for 30 s.
    Stall,
}

fn handle<S: Read + Write>(mut s: S, b: &Behaviour, stats: &Stats, shut_wr: impl Fn(&S)) {
    stats.accepted.fetch_add(1, Ordering::SeqCst);
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    let record = |got: &mut Vec<u8>, chunk: &[u8]| {
        stats.bytes_in.fetch_add(chunk.len(), Ordering::SeqCst);
        // Keep at most 1 MiB per connection for assertions.
        if got.len() < 1 << 20 {
            got.extend_from_slice(chunk);
        }
    };
    match b {
        Behaviour::Echo => {
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                record(&mut got, &buf[..n]);
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            shut_wr(&s);
        }
        Behaviour::ReplyAfterEof(reply) => {
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                record(&mut got, &buf[..n]);
            }
            let _ = s.write_all(reply);
            shut_wr(&s);
        }
        Behaviour::GreetThenCloseWrite(greeting) => {
            let _ = s.write_all(greeting);
            shut_wr(&s);
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                record(&mut got, &buf[..n]);
            }
        }
        Behaviour::HashSink => {
            let mut h = Sha256::new();
            let mut len = 0usize;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                stats.bytes_in.fetch_add(n, Ordering::SeqCst);
                h.update(&buf[..n]);
                len += n;
            }
            let _ = writeln!(s, "{len} {}", hex(&h.finalize()));
            shut_wr(&s);
        }
        Behaviour::CloseImmediately => {}
        Behaviour::Hold => {
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                record(&mut got, &buf[..n]);
            }
        }
        Behaviour::Stall => {
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                record(&mut got, &buf[..n]);
            }
            thread::sleep(Duration::from_secs(30));
        }
    }
    stats.received.lock().unwrap().push(got);
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A TCP backend on 127.0.0.1 serving each connection on its own thread.
pub struct Backend {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

impl Backend {
    pub fn start(b: Behaviour) -> Backend {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind backend");
        let addr = l.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let b = b.clone();
                let st = st.clone();
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    handle(s, &b, &st, |s: &TcpStream| {
                        let _ = s.shutdown(Shutdown::Write);
                    })
                });
            }
        });
        Backend { addr, stats }
    }

    pub fn echo() -> Backend {
        Backend::start(Behaviour::Echo)
    }

    /// `127.0.0.1:<port>` for `--target`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
}

/// A UNIX-socket backend.
pub struct UnixBackend {
    pub path: PathBuf,
    pub stats: Arc<Stats>,
}

impl UnixBackend {
    pub fn start(path: &Path, b: Behaviour) -> UnixBackend {
        let l = UnixListener::bind(path).expect("bind unix backend");
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let b = b.clone();
                let st = st.clone();
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    handle(s, &b, &st, |s: &UnixStream| {
                        let _ = s.shutdown(Shutdown::Write);
                    })
                });
            }
        });
        UnixBackend {
            path: path.to_path_buf(),
            stats,
        }
    }

    pub fn target(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

/// Connects a plain TCP client with read/write timeouts.
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Reads until EOF (or error); returns the bytes and whether it ended with a clean EOF.
pub fn read_to_end_lossy(s: &mut impl Read) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// Writes `msg`, reads exactly `msg.len()` bytes back, asserts equality.
pub fn assert_echo(s: &mut (impl Read + Write), msg: &[u8]) {
    s.write_all(msg).expect("write to tunnel");
    s.flush().expect("flush");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("read echo from tunnel");
    assert_eq!(back, msg, "echo mismatch");
}

/// Deterministic pseudo-random data (xorshift64*), `len` bytes from `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A Python that can `import module`. There is no skip: without one, the test fails and says
/// what to install (`install`).
pub fn python_with(module: &str, install: &str) -> &'static str {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = std::process::Command::new(py)
            .args(["-c", &format!("import {module}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py;
        }
    }
    panic!("no python3 with the {module} module: {install}");
}
