//! Client → server pairs: plaintext in, mutual TLS between two ghostunnel processes,
//! plaintext out (docs/behaviour.md §7.3).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::util::*;

const LOG_WAIT: Duration = Duration::from_secs(5);

/// A ghostunnel server in front of `backend_target` and a ghostunnel client pointing at it.
struct Pair {
    server: Daemon,
    client: Daemon,
    addr: SocketAddr,
}

fn pair(pki: &Pki, backend_target: &str, extra: &[&str]) -> Pair {
    let mut sflags = vec!["--allow-cn=client"];
    sflags.extend_from_slice(extra);
    let (server, saddr) = start_server(pki, backend_target, &sflags);
    let target = format!("localhost:{}", saddr.port());
    let (client, addr) = start_client(pki, &target, extra);
    Pair {
        server,
        client,
        addr,
    }
}

impl Pair {
    fn describe(&self) -> String {
        format!(
            "\n=== server ==={}\n=== client ==={}",
            self.server.describe(),
            self.client.describe()
        )
    }
}

/// Data goes through both processes and comes back; both log their pipes.
#[test]
fn pair_end_to_end() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let mut p = pair(&pki, &backend.target(), &[]);
    let mut s = tcp_connect(p.addr);
    assert_echo(&mut s, b"hello");
    assert_echo(&mut s, &pattern(1, 100_000));
    s.shutdown(Shutdown::Write).unwrap();
    let (rest, clean) = read_to_end_lossy(&mut s);
    assert!(
        rest.is_empty() && clean,
        "expected clean EOF{}",
        p.describe()
    );
    p.client
        .wait_log("[forwarded 97.7 KiB, returned 97.7 KiB, open ", LOG_WAIT);
    p.server
        .wait_log("[forwarded 97.7 KiB, returned 97.7 KiB, open ", LOG_WAIT);
    assert_eq!(backend.stats.accepted(), 1);
}

/// Half-close towards the backend: the client sends a request and shuts down its write
/// side; the backend, which answers only after EOF, still gets its reply back to the
/// client, followed by EOF.
#[test]
fn half_close_client_first() {
    let pki = Pki::new();
    let backend = Backend::start(Behaviour::ReplyAfterEof(b"the reply".to_vec()));
    let p = pair(&pki, &backend.target(), &[]);
    let mut s = tcp_connect(p.addr);
    s.write_all(b"the request").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (reply, clean) = read_to_end_lossy(&mut s);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "the reply",
        "reply after half-close{}",
        p.describe()
    );
    assert!(
        clean,
        "expected a clean EOF after the reply{}",
        p.describe()
    );
    assert!(eventually(LOG_WAIT, || backend.stats.received()
        == vec![b"the request".to_vec()]));
}

/// Half-close from the backend: the backend sends a greeting and shuts down its write
/// side; the client reads the greeting and EOF, and can still send data that reaches the
/// backend.
#[test]
fn half_close_backend_first() {
    let pki = Pki::new();
    let backend = Backend::start(Behaviour::GreetThenCloseWrite(b"greeting".to_vec()));
    let p = pair(&pki, &backend.target(), &[]);
    let mut s = tcp_connect(p.addr);
    let mut greeting = [0u8; 8];
    s.read_exact(&mut greeting).expect("greeting");
    assert_eq!(&greeting, b"greeting");
    let mut one = [0u8; 1];
    let n = s.read(&mut one).expect("EOF after greeting");
    assert_eq!(n, 0, "expected EOF after the greeting{}", p.describe());
    s.write_all(b"late data").expect("write after backend EOF");
    s.shutdown(Shutdown::Write).unwrap();
    assert!(
        eventually(LOG_WAIT, || backend.stats.received()
            == vec![b"late data".to_vec()]),
        "backend received {:?}{}",
        backend.stats.received(),
        p.describe()
    );
}

/// 256 MiB through client → server, verified by length and SHA-256 at the backend.
#[test]
fn transfer_256_mib_intact() {
    const TOTAL: usize = 256 << 20;
    let pki = Pki::new();
    let backend = Backend::start(Behaviour::HashSink);
    let mut p = pair(&pki, &backend.target(), &[]);
    let mut s = tcp_connect(p.addr);
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(120))).unwrap();
    let chunk = pattern(42, 1 << 20);
    let mut h = Sha256::new();
    let started = Instant::now();
    for i in 0..(TOTAL / chunk.len()) {
        // Vary each chunk so reordering or duplication would change the hash.
        let mut c = chunk.clone();
        c[..8].copy_from_slice(&(i as u64).to_le_bytes());
        h.update(&c);
        s.write_all(&c)
            .unwrap_or_else(|e| panic!("write chunk {i}: {e}{}", p.describe()));
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("read digest: {e}{}", p.describe()));
    assert_eq!(
        line.trim_end(),
        format!("{TOTAL} {}", hex(&h.finalize())),
        "backend saw different data (after {:?}){}",
        started.elapsed(),
        p.describe()
    );
    p.server
        .wait_log("[forwarded 256.0 MiB, returned 75 bytes, open ", LOG_WAIT);
}

/// 200 concurrent connections through the pair all echo their own data.
#[test]
fn concurrent_200_connections() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let p = pair(&pki, &backend.target(), &[]);
    let mut conns: Vec<_> = (0..200).map(|_| tcp_connect(p.addr)).collect();
    // All 200 are open at once before any data flows.
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(format!("conn {i:03}\n").as_bytes()).unwrap();
    }
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            thread::spawn(move || {
                let mut got = [0u8; 9];
                s.read_exact(&mut got)
                    .map_err(|e| format!("conn {i}: {e}"))?;
                if got != *format!("conn {i:03}\n").as_bytes() {
                    return Err(format!("conn {i}: wrong data {got:?}"));
                }
                let big = pattern(i as u64, 20_000);
                s.write_all(&big).map_err(|e| format!("conn {i}: {e}"))?;
                let mut back = vec![0u8; big.len()];
                s.read_exact(&mut back)
                    .map_err(|e| format!("conn {i}: {e}"))?;
                if back != big {
                    return Err(format!("conn {i}: echo mismatch"));
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap().err())
        .collect();
    assert!(errors.is_empty(), "failures: {errors:?}{}", p.describe());
    assert_eq!(backend.stats.accepted(), 200);
}
