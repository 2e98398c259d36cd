//! Talking HTTP and Graphite *out* of the process (docs/behaviour.md §8.4, §8.5): the
//! `--metrics-graphite` and `--metrics-url` push threads, and the `--target-status` health check.
//!
//! Owns a tiny blocking HTTP/1.1 client (one request per connection, `Connection: close`,
//! response heads parsed by httparse) over our own [`Stream`], optionally inside the rustls we
//! already link, and the `http(s)://` URL grammar of those flags. Every socket operation has a
//! timeout, so a stuck collector or backend can hold up only its own thread. Never touches the
//! proxy's connections; reads metrics only through [`Metrics`]' formats.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::metrics::Metrics;
use crate::net::{self, Addr, AddrKind, HeadError, Stream};

/// A parsed `http://` or `https://` URL of `--metrics-url` or `--target-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub raw: String,
    pub https: bool,
    /// `host:port` to dial (the default port filled in).
    pub addr: Addr,
    /// The `Host` header: the authority as written, without user info.
    pub host_header: String,
    /// The bare host name, for TLS server name checks.
    pub host: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `http(s)://[user@]host[:port][/path][?query][#fragment]`.
    pub fn parse(raw: &str) -> Result<HttpUrl, String> {
        let bad = |why: &str| format!("parse \"{raw}\": {why}");
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(bad("missing protocol scheme"));
        };
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(bad(&format!("unsupported protocol scheme \"{scheme}\""))),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if authority.is_empty() {
            return Err(bad("missing host"));
        }
        let hostport = net::with_default_port(authority, if https { 443 } else { 80 });
        let addr = Addr::parse(&hostport).map_err(|e| bad(&e))?;
        let AddrKind::Tcp { host, .. } = &addr.kind else {
            return Err(bad("invalid host"));
        };
        if addr.tcp_port().is_none_or(|p| p == 0) {
            return Err(bad("invalid port"));
        }
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(HttpUrl {
            raw: raw.to_string(),
            https,
            host: host.clone(),
            addr,
            host_header: authority.to_string(),
            path,
        })
    }
}

/// One HTTP request on a fresh connection from `dial`; returns the response status code.
/// `timeout` bounds every read and write (and the TLS handshake). Errors read like Go's
/// client: `Get "<url>": <cause>`.
pub fn fetch(
    url: &HttpUrl,
    dial: impl FnOnce() -> io::Result<Stream>,
    tls: Option<&Arc<ClientConfig>>,
    timeout: Duration,
    method: &str,
    body: Option<(&str, &[u8])>,
) -> Result<u16, String> {
    let verb = {
        let lower = method.to_ascii_lowercase();
        let mut c = lower.chars();
        c.next().map_or(String::new(), |f| {
            f.to_ascii_uppercase().to_string() + c.as_str()
        })
    };
    let fail = |e: String| format!("{verb} \"{}\": {e}", url.raw);
    let sock = dial().map_err(|e| fail(net::strip_os_error(&e)))?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| fail(e.to_string()))?;
    if let Stream::Tcp(t) = &sock {
        t.set_write_timeout(Some(timeout))
            .map_err(|e| fail(e.to_string()))?;
    }
    let result = if url.https {
        let Some(config) = tls else {
            return Err(fail("https is not configured".into()));
        };
        let name = ServerName::try_from(url.host.clone()).map_err(|e| fail(e.to_string()))?;
        let conn = ClientConnection::new(config.clone(), name).map_err(|e| fail(e.to_string()))?;
        let mut stream = StreamOwned::new(conn, sock);
        exchange(&mut stream, method, url, body)
    } else {
        let mut sock = sock;
        exchange(&mut sock, method, url, body)
    };
    result.map_err(|e| fail(net::timed_io_error(&e)))
}

/// Writes the request and reads the response head.
fn exchange<S: Read + Write>(
    s: &mut S,
    method: &str,
    url: &HttpUrl,
    body: Option<(&str, &[u8])>,
) -> io::Result<u16> {
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ghostunnel/{}\r\nConnection: close\r\n",
        url.path,
        url.host_header,
        env!("CARGO_PKG_VERSION")
    );
    if let Some((ctype, data)) = body {
        req.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            data.len()
        ));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    if let Some((_, data)) = body {
        out.extend_from_slice(data);
    }
    s.write_all(&out)?;
    s.flush()?;
    let mut buf = Vec::with_capacity(1024);
    let head = net::read_http_head(s, &mut buf, 16 * 1024, 2048, &mut |_| true);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {
            return resp
                .code
                .ok_or_else(|| io::Error::other("malformed HTTP response"));
        }
        Ok(httparse::Status::Partial) => {}
        Err(e) => return Err(io::Error::other(format!("malformed HTTP response: {e}"))),
    }
    Err(match head {
        Err(HeadError::Eof) => io::Error::new(io::ErrorKind::UnexpectedEof, "EOF"),
        Err(HeadError::Io(e)) => e,
        Err(HeadError::TooLarge | HeadError::Deadline) | Ok(_) => {
            io::Error::other("malformed HTTP response: head too large")
        }
    })
}

/// The `--target-status` check (docs/behaviour.md §8.4): GET the URL over a connection made by
/// `dial` (the backend dialer); anything but 200 fails. The reference sets no timeout beyond the
/// dial's; here reads are bounded by `timeout` too, so a hung backend cannot pin a status thread.
pub fn target_status(
    url: &HttpUrl,
    dial: impl FnOnce() -> io::Result<Stream>,
    tls: Option<&Arc<ClientConfig>>,
    timeout: Duration,
) -> Result<(), String> {
    match fetch(url, dial, tls, timeout, "GET", None)? {
        200 => Ok(()),
        code => Err(format!("target returned status: {code}")),
    }
}

/// Bounds one push: long enough for a slow collector, short enough to keep pace.
fn push_timeout(every: Duration) -> Duration {
    every.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Starts the `--metrics-graphite` thread: every `every`, a new TCP connection carrying one
/// flush of plaintext lines. The reference flushes every second whatever the interval; we use
/// `--metrics-interval` (default 30 s), as the flag's help says. Failures go to stderr, as in
/// the reference, and the next flush tries again.
pub fn start_graphite(addr: Addr, every: Duration, metrics: Arc<Metrics>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("graphite".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut previous = Vec::new();
            let mut last = Instant::now();
            loop {
                std::thread::sleep(every);
                let secs = last.elapsed().as_secs_f64();
                last = Instant::now();
                let lines = metrics.graphite(&mut previous, secs);
                let sent = net::dial(&addr, Instant::now() + push_timeout(every)).and_then(|s| {
                    let Stream::Tcp(mut tcp) = s else {
                        return Err(io::Error::other("graphite needs a TCP address"));
                    };
                    tcp.set_write_timeout(Some(push_timeout(every)))?;
                    tcp.write_all(lines.as_bytes())?;
                    tcp.shutdown(std::net::Shutdown::Write)
                });
                if let Err(e) = sent {
                    eprintln!(
                        "error sending metrics to graphite {addr}: {}",
                        net::strip_os_error(&e)
                    );
                }
            }
        })?;
    Ok(())
}

/// Starts the `--metrics-url` thread: every `every`, POST the JSON array with
/// `Content-Type: application/json`. Failures are logged `error reporting metrics: <e>`.
pub fn start_url_push(
    url: HttpUrl,
    tls: Option<Arc<ClientConfig>>,
    every: Duration,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("metrics-url".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let body = metrics.json();
                let timeout = push_timeout(every);
                let dial = || net::dial(&url.addr, Instant::now() + timeout);
                let sent = fetch(
                    &url,
                    dial,
                    tls.as_ref(),
                    timeout,
                    "POST",
                    Some(("application/json", body.as_bytes())),
                );
                match sent {
                    Ok(code) if (200..300).contains(&code) => {}
                    Ok(code) => {
                        log::warn!("error reporting metrics: server returned status: {code}")
                    }
                    Err(e) => log::warn!("error reporting metrics: {e}"),
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports_and_paths() {
        let u = HttpUrl::parse("http://localhost/health?x=1#frag").unwrap();
        assert!(!u.https);
        assert_eq!(u.addr.raw, "localhost:80");
        assert_eq!(
            (u.host_header.as_str(), u.path.as_str()),
            ("localhost", "/health?x=1")
        );
        let u = HttpUrl::parse("HTTPS://user@[::1]:8443").unwrap();
        assert!(u.https);
        assert_eq!((u.addr.tcp_port(), u.host.as_str()), (Some(8443), "::1"));
        assert_eq!(
            (u.host_header.as_str(), u.path.as_str()),
            ("[::1]:8443", "/")
        );
        assert_eq!(HttpUrl::parse("https://h?q").unwrap().path, "/?q");
        assert_eq!(
            HttpUrl::parse("https://h").unwrap().addr.tcp_port(),
            Some(443)
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        for bad in [
            "ftp://h/",
            "http://",
            "http:///x",
            "http://h:0/",
            "http://h:x/",
            "h:80",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fetch_reports_status_and_errors_like_go() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let url = HttpUrl::parse(&format!("http://localhost:{port}/h")).unwrap();
        let target = Addr::parse(&format!("127.0.0.1:{port}")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let r = target_status(
            &url,
            || net::dial(&target, deadline),
            None,
            Duration::from_secs(5),
        );
        assert_eq!(r.unwrap_err(), "target returned status: 503");
        let req = server.join().unwrap();
        assert!(
            req.starts_with(&format!("GET /h HTTP/1.1\r\nHost: localhost:{port}\r\n")),
            "{req}"
        );
        // Nothing listens any more: the dial error is wrapped like Go's client does.
        let r = target_status(
            &url,
            || net::dial(&target, deadline),
            None,
            Duration::from_secs(5),
        );
        let e = r.unwrap_err();
        assert!(
            e.starts_with(&format!(
                "Get \"http://localhost:{port}/h\": dial tcp 127.0.0.1:{port}: connect:"
            )),
            "{e}"
        );
    }
}
