//! A plain HTTP/1.1 client for the status endpoint, over TCP, UNIX sockets or TLS, and a tiny
//! HTTP server standing in for collectors and backends with a health URL.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A response: status code, head (status line and headers) and body.
#[derive(Debug)]
pub struct Response {
    pub code: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends one request with `Connection: close` on `s` and reads the whole response.
pub fn request(mut s: impl Read + Write, method: &str, path: &str) -> Response {
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("write request");
    s.flush().expect("flush request");
    let mut raw = Vec::new();
    // A TLS peer may end without close_notify; what was read is what counts.
    let _ = s.read_to_end(&mut raw);
    let out = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Response {
        code,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// One request over plain TCP.
pub fn http(addr: &str, method: &str, path: &str) -> Response {
    let s = TcpStream::connect(addr).expect("connect to status port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    request(s, method, path)
}

/// One request over a UNIX socket.
pub fn http_unix(path: &Path, method: &str, target: &str) -> Response {
    let s = std::os::unix::net::UnixStream::connect(path).expect("connect to status socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    request(s, method, target)
}

/// A request as an [`HttpServer`] saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: String,
}

/// A tiny HTTP server on 127.0.0.1 that answers every request with `code` (changeable) and
/// records what it received.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub code: Arc<AtomicU16>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl HttpServer {
    /// Plain HTTP.
    pub fn start(code: u16) -> HttpServer {
        HttpServer::start_with(code, None)
    }

    /// HTTPS with `tls` (no client certificate asked).
    pub fn start_tls(code: u16, tls: Arc<ServerConfig>) -> HttpServer {
        HttpServer::start_with(code, Some(tls))
    }

    fn start_with(code: u16, tls: Option<Arc<ServerConfig>>) -> HttpServer {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind http server");
        let addr = l.local_addr().unwrap();
        let code = Arc::new(AtomicU16::new(code));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (code.clone(), seen.clone());
        thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let answer = |conn: &mut dyn ReadWrite| {
                    let Some(req) = read_request(conn) else {
                        return;
                    };
                    s.lock().unwrap().push(req);
                    let code = c.load(Ordering::SeqCst);
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                    let _ = conn.flush();
                };
                match &tls {
                    None => answer(&mut { conn }),
                    Some(cfg) => {
                        let Ok(sc) = ServerConnection::new(cfg.clone()) else {
                            continue;
                        };
                        let mut tls = StreamOwned::new(sc, conn);
                        answer(&mut tls);
                        tls.conn.send_close_notify();
                        let _ = tls.conn.complete_io(&mut tls.sock);
                    }
                }
            }
        });
        HttpServer { addr, code, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Reads one request with a Content-Length body.
fn read_request(conn: &mut dyn ReadWrite) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + 4 + len {
        let n = conn.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).into_owned();
    Some(Seen { head, body })
}
