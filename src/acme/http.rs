//! The HTTP client the ACME protocol runs over: blocking HTTP/1.1, one request per connection,
//! through the rustls we already link (aws-lc-rs), trusting the system store (`SSL_CERT_FILE`
//! and `SSL_CERT_DIR` honoured, `--cacert` deliberately not: it is the client-CA pool). It
//! implements instant-acme's `HttpClient` with futures that finish in their first poll, so the
//! ACME thread needs no async runtime. Every socket operation is bounded by a timeout; a
//! failing exchange is retried twice, 250 ms apart, as the reference does. `HTTPS_PROXY`,
//! `HTTP_PROXY` and `NO_PROXY` (or their lower-case forms) are honoured as Go's client does,
//! read once at startup: requests go through an HTTP CONNECT or SOCKS5 tunnel, except to
//! loopback hosts and hosts `NO_PROXY` lists.

use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::net::{self, Stream};
use crate::report::HttpUrl;
use crate::tunnel::ProxyUrl;

/// A response larger than this is refused (certificate chains are a few KB).
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// Exchanges per request, counting the first.
const ATTEMPTS: u32 = 3;

/// The client: cheap to clone, shareable between threads.
#[derive(Clone)]
pub struct Client {
    tls: Arc<ClientConfig>,
    timeout: Duration,
    proxies: Proxies,
}

/// The proxy settings from the environment.
#[derive(Clone, Debug, Default)]
pub struct Proxies {
    https: Option<ProxyUrl>,
    http: Option<ProxyUrl>,
    no_proxy: Vec<String>,
}

impl Proxies {
    /// Reads `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (upper case first, then lower case).
    /// A value without a scheme is taken as `http://`; one that does not parse is ignored.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Proxies {
        let get = |upper: &str| {
            env(upper)
                .or_else(|| env(&upper.to_ascii_lowercase()))
                .filter(|v| !v.is_empty())
        };
        let url = |v: String| {
            let v = match v.contains("://") {
                true => v,
                false => format!("http://{v}"),
            };
            ProxyUrl::parse(&v).ok()
        };
        Proxies {
            https: get("HTTPS_PROXY").and_then(url),
            http: get("HTTP_PROXY").and_then(url),
            no_proxy: get("NO_PROXY")
                .map(|v| {
                    v.split(',')
                        .map(|e| e.trim().to_ascii_lowercase())
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The TCP ports of the configured proxies (for the sandbox).
    pub fn ports(&self) -> Vec<u16> {
        [&self.https, &self.http]
            .into_iter()
            .flatten()
            .filter_map(|p| p.addr.tcp_port())
            .collect()
    }

    /// The proxy for a request to `host` (`https` or not), if any.
    pub fn for_host(&self, host: &str, https: bool) -> Option<&ProxyUrl> {
        let proxy = match https {
            true => self.https.as_ref(),
            false => self.http.as_ref(),
        }?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let excluded = self.no_proxy.iter().any(|entry| {
            let entry = match entry.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
                _ => entry.as_str(),
            };
            let bare = entry.trim_start_matches("*.").trim_start_matches('.');
            entry == "*" || host == bare || host.ends_with(&format!(".{bare}"))
        });
        (!loopback && !excluded).then_some(proxy)
    }
}

impl Client {
    /// A client trusting the system store (`SSL_CERT_FILE`/`SSL_CERT_DIR` as read at startup),
    /// with `timeout` on connecting and on every read and write.
    pub fn new(system: &crate::config::SystemTrust, timeout: Duration) -> Result<Client, String> {
        Client::with_roots(crate::certs::load_trust(None, system)?, timeout)
    }

    /// A client trusting only `roots`.
    pub fn with_roots(
        roots: Vec<rustls::pki_types::CertificateDer<'static>>,
        timeout: Duration,
    ) -> Result<Client, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(roots);
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Client {
            tls: Arc::new(tls),
            timeout,
            proxies: Proxies::from_env(|k| std::env::var(k).ok()),
        })
    }

    /// The same client with other proxy settings.
    pub fn with_proxies(mut self, proxies: Proxies) -> Client {
        self.proxies = proxies;
        self
    }

    /// One request, retried on transport failures. Errors read like Go's client:
    /// `Get "https://ca/dir": dial tcp 127.0.0.1:1: connect: connection refused`.
    pub fn send(
        &self,
        method: &Method,
        url: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Response<Vec<u8>>, String> {
        let verb = go_verb(method.as_str());
        let fail = |e: String| format!("{verb} \"{url}\": {e}");
        let parsed = HttpUrl::parse(url).map_err(fail)?;
        let mut attempt = 1;
        loop {
            match self.exchange(method, &parsed, headers, body) {
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < ATTEMPTS => {
                    log::debug!("ACME: HTTP request failed; retrying: {}", fail(e));
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(fail(e)),
            }
        }
    }

    fn exchange(
        &self,
        method: &Method,
        url: &HttpUrl,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Response<Vec<u8>>, String> {
        let deadline = Instant::now() + self.timeout;
        let sock = match self.proxies.for_host(&url.host, url.https) {
            Some(proxy) => {
                let target =
                    net::with_default_port(&url.host_header, if url.https { 443 } else { 80 });
                proxy.dial(&target, deadline)
            }
            None => net::dial(&url.addr, deadline),
        }
        .map_err(|e| net::strip_os_error(&e))?;
        sock.set_read_timeout(Some(self.timeout))
            .and_then(|()| sock.set_write_timeout(Some(self.timeout)))
            .map_err(|e| e.to_string())?;
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\n",
            url.path, url.host_header
        );
        for (name, value) in headers {
            if let Ok(v) = value.to_str() {
                head.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        if !body.is_empty() || *method == Method::POST {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        let head_only = *method == Method::HEAD;
        let result = if url.https {
            let name = ServerName::try_from(url.host.clone()).map_err(|e| e.to_string())?;
            let conn = ClientConnection::new(self.tls.clone(), name).map_err(|e| e.to_string())?;
            round_trip(&mut StreamOwned::new(conn, sock), &out, head_only)
        } else {
            let mut sock: Stream = sock;
            round_trip(&mut sock, &out, head_only)
        };
        result.map_err(
            |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => format!("tls: {tls}"),
                None => net::timed_io_error(&e),
            },
        )
    }
}

impl HttpClient for Client {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let mut body = std::pin::pin!(body);
            let mut data = Vec::new();
            while let Some(frame) =
                std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
            {
                let Ok(frame) = frame;
                if let Ok(chunk) = frame.into_data() {
                    data.extend_from_slice(&chunk);
                }
            }
            let body = data;
            let resp = client
                .send(&parts.method, &parts.uri.to_string(), &parts.headers, &body)
                .map_err(|e| instant_acme::Error::Other(e.into()))?;
            let (parts, body) = resp.into_parts();
            Ok(BytesResponse {
                parts,
                body: Box::new(Bytes::from(body)),
            })
        })
    }
}

/// `GET` as Go's client names it in errors: `Get`.
fn go_verb(method: &str) -> String {
    let lower = method.to_ascii_lowercase();
    let mut c = lower.chars();
    c.next().map_or(String::new(), |f| {
        f.to_ascii_uppercase().to_string() + c.as_str()
    })
}

/// Writes `request` and reads one response: until the body announced by the head is complete,
/// or until EOF when the head announces no length.
fn round_trip<S: Read + Write>(
    s: &mut S,
    request: &[u8],
    head_only: bool,
) -> io::Result<Response<Vec<u8>>> {
    s.write_all(request)?;
    s.flush()?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(resp) = complete(&buf, head_only, false)? {
            return Ok(resp);
        }
        if buf.len() > MAX_RESPONSE {
            return Err(io::Error::other("response too large"));
        }
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            // A peer closing without TLS close_notify still ends a Connection: close reply.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return complete(&buf, head_only, true)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "unexpected EOF"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The response in `buf` if it is complete (`eof`: nothing more will come).
fn complete(buf: &[u8], head_only: bool, eof: bool) -> io::Result<Option<Response<Vec<u8>>>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let start = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::other(format!("malformed HTTP response: {e}"))),
    };
    let code = parsed.code.unwrap_or(0);
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let rest = &buf[start..];
    let body = if head_only || code / 100 == 1 || code == 204 || code == 304 {
        Some(Vec::new())
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| io::Error::other("malformed HTTP response: bad Content-Length"))?;
        (rest.len() >= len).then(|| rest[..len].to_vec())
    } else {
        eof.then(|| rest.to_vec())
    };
    let Some(body) = body else {
        return Ok(None);
    };
    let mut builder = Response::builder().status(code);
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    builder
        .body(body)
        .map(Some)
        .map_err(|e| io::Error::other(format!("malformed HTTP response: {e}")))
}

/// Decodes a chunked body; `None` while incomplete.
fn dechunk(mut rest: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let bad = || io::Error::other("malformed HTTP response: bad chunk");
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| bad())?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad())?;
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let done = rest.starts_with(b"\r\n") || rest.windows(4).any(|w| w == b"\r\n\r\n");
            return Ok(done.then_some(out));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[..size]);
        if &rest[size..size + 2] != b"\r\n" {
            return Err(bad());
        }
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// Serves `reply` to one connection and returns what the client sent.
    fn one_shot(reply: &'static [u8]) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/dir", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = vec![0u8; 4096];
            let n = s.read(&mut got).unwrap();
            s.write_all(reply).unwrap();
            got.truncate(n);
            got
        });
        (url, h)
    }

    #[test]
    fn reads_a_chunked_body_and_its_headers() {
        let (url, h) = one_shot(
            b"HTTP/1.1 201 Created\r\nReplay-Nonce: abc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        );
        let client = Client::new(&Default::default(), Duration::from_secs(5)).unwrap();
        let mut hm = http::HeaderMap::new();
        hm.insert("content-type", "application/jose+json".parse().unwrap());
        let resp = client.send(&Method::POST, &url, &hm, b"{}").unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.headers()["replay-nonce"], "abc");
        assert_eq!(resp.body(), b"hello world");
        let sent = String::from_utf8(h.join().unwrap()).unwrap();
        assert!(sent.starts_with("POST /dir HTTP/1.1\r\n"), "{sent}");
        assert!(
            sent.contains("content-type: application/jose+json\r\n"),
            "{sent}"
        );
        assert!(
            sent.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n{}"),
            "{sent}"
        );
    }

    #[test]
    fn reads_a_body_by_content_length_without_waiting_for_eof() {
        let (url, _h) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
        let client = Client::new(&Default::default(), Duration::from_secs(5)).unwrap();
        let resp = client
            .send(&Method::GET, &url, &http::HeaderMap::new(), b"")
            .unwrap();
        assert_eq!(resp.body(), b"abc");
    }

    #[test]
    fn a_refused_connection_reads_like_go() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&Default::default(), Duration::from_secs(2)).unwrap();
        let url = format!("https://127.0.0.1:{port}/dir");
        let e = client
            .send(&Method::GET, &url, &http::HeaderMap::new(), b"")
            .unwrap_err();
        assert_eq!(
            e,
            format!("Get \"{url}\": dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
    }

    #[test]
    fn proxies_come_from_the_environment_like_gos() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let p = Proxies::from_env(env(&[
            ("https_proxy", "proxy.example:3128"),
            ("NO_PROXY", "internal.example, .corp.example:443"),
        ]));
        let via = p.for_host("acme-v02.api.letsencrypt.org", true).unwrap();
        assert_eq!(via.addr.tcp_port(), Some(3128));
        assert!(p.for_host("acme-v02.api.letsencrypt.org", false).is_none());
        assert!(p.for_host("internal.example", true).is_none());
        assert!(p.for_host("ca.internal.example", true).is_none());
        assert!(p.for_host("ca.corp.example", true).is_none());
        assert!(p.for_host("127.0.0.1", true).is_none());
        assert!(p.for_host("[::1]", true).is_none());
        assert!(p.for_host("localhost", true).is_none());
        let all = Proxies::from_env(env(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "*")]));
        assert!(all.for_host("ca.example", true).is_none());
    }

    #[test]
    fn requests_go_through_an_http_connect_proxy() {
        // A minimal CONNECT proxy: answers 200 and relays to the requested target.
        let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_port = proxy.local_addr().unwrap().port();
        let (origin, _h) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let seen = std::thread::spawn(move || {
            let (mut c, _) = proxy.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                c.read_exact(&mut b).unwrap();
                head.push(b[0]);
            }
            let line = String::from_utf8(head).unwrap();
            let target = line.split_whitespace().nth(1).unwrap().to_string();
            let port = target.rsplit(':').next().unwrap();
            let mut up = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
            c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            let mut c2 = c.try_clone().unwrap();
            let mut up2 = up.try_clone().unwrap();
            let t = std::thread::spawn(move || {
                let _ = io::copy(&mut c2, &mut up2);
            });
            let _ = io::copy(&mut up, &mut c);
            let _ = t.join();
            line
        });
        // Loopback hosts are never proxied; give the origin a name only the proxy resolves.
        let origin = origin.replace("127.0.0.1", "127.0.0.1.nip.invalid");
        let client = Client::new(&Default::default(), Duration::from_secs(5))
            .unwrap()
            .with_proxies(Proxies::from_env(move |k| {
                (k == "HTTP_PROXY").then(|| format!("127.0.0.1:{proxy_port}"))
            }));
        let resp = client
            .send(&Method::GET, &origin, &http::HeaderMap::new(), b"")
            .unwrap();
        assert_eq!(resp.body(), b"ok");
        let line = seen.join().unwrap();
        assert!(line.starts_with("CONNECT 127.0.0.1.nip.invalid:"), "{line}");
    }

    #[test]
    fn incomplete_chunks_wait_for_more() {
        assert_eq!(dechunk(b"5\r\nhel").unwrap(), None);
        assert_eq!(dechunk(b"3\r\nabc\r\n0\r\n").unwrap(), None);
        assert_eq!(
            dechunk(b"3\r\nabc\r\n0\r\n\r\n").unwrap(),
            Some(b"abc".to_vec())
        );
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
