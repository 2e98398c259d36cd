//! Load generator for `bench/bench.sh` (not a test): a sink server and three client loads.
//!
//! Protocol: the client writes bytes, half-closes, and the sink answers with the byte count
//! (8 bytes, big-endian) once it saw EOF, then closes.
//!
//! ```text
//! loadgen sink PORT
//! loadgen throughput ADDR STREAMS MIB_PER_STREAM     prints MB/s
//! loadgen connrate ADDR SECONDS                      prints connections/s
//! loadgen idle ADDR COUNT SECONDS                    holds COUNT open connections
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or_else(|_| usage());
    match arg(0).as_str() {
        "sink" => sink(num(1) as u16),
        "throughput" => throughput(&arg(1), num(2), num(3)),
        "connrate" => connrate(&arg(1), num(2)),
        "idle" => idle(&arg(1), num(2), num(3)),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen sink PORT | throughput ADDR STREAMS MIB | connrate ADDR SECS | idle ADDR N SECS"
    );
    std::process::exit(2)
}

fn sink(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind sink");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = stream;
            let mut buf = vec![0u8; 256 * 1024];
            let mut total: u64 = 0;
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
}

/// Sends `bytes`, half-closes and waits for the sink's count.
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

fn throughput(addr: &str, streams: u64, mib: u64) {
    let bytes = mib * 1024 * 1024;
    let started = Instant::now();
    let handles: Vec<_> = (0..streams)
        .map(|_| {
            let addr = addr.to_string();
            std::thread::spawn(move || exchange(&addr, bytes, &vec![0x5a; 256 * 1024]))
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("stream")).sum();
    assert_eq!(
        total,
        bytes * streams,
        "the sink saw a different byte count"
    );
    let secs = started.elapsed().as_secs_f64();
    println!("{:.0}", total as f64 / secs / 1e6);
}

fn connrate(addr: &str, secs: u64) {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(secs) && n < 1_000_000 {
        assert_eq!(exchange(addr, 4, b"ping"), 4);
        n += 1;
    }
    println!("{:.0}", n as f64 / started.elapsed().as_secs_f64());
}

fn idle(addr: &str, count: u64, secs: u64) {
    let conns: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"x").expect("write");
            s
        })
        .collect();
    println!("open {}", conns.len());
    std::thread::sleep(Duration::from_secs(secs));
}
