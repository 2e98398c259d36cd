//! Client-mode `--proxy` (docs/behaviour.md §6.6): reaching `--target` through an HTTP CONNECT or
//! SOCKS5 proxy. Owns the proxy URL grammar and the two handshakes; the TLS session runs over the
//! returned stream as if it were a direct connection.
//!
//! Credentials in the URL (`user:pass@`, percent-encoded as in any URL) are sent to either kind
//! of proxy: SOCKS5 username/password authentication, or HTTP `Proxy-Authorization: Basic`
//! (the reference drops them for HTTP, so such a proxy used to answer 407). `socks5://`
//! resolves the target name here and sends the proxy an address; `socks5h://` sends the name
//! for the proxy to resolve.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::net::{self, Addr, AddrKind, HeadError, Stream};

/// A parsed `--proxy` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub kind: ProxyKind,
    /// `host:port` of the proxy itself.
    pub addr: Addr,
    /// Username and password from the URL, percent-decoded.
    pub credentials: Option<(String, String)>,
    /// `socks5h://`: the proxy resolves the target name. `socks5://` resolves it here.
    pub remote_dns: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    HttpConnect,
    Socks5,
}

impl ProxyUrl {
    /// Parses `http://host[:port]`, `socks5://[user[:pass]@]host[:port]` or `socks5h://…`.
    /// Errors: `proxy: unknown scheme: <scheme>`, or a description of the malformed URL.
    pub fn parse(url: &str) -> Result<ProxyUrl, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("parse \"{url}\": missing protocol scheme"));
        };
        let scheme = scheme.to_ascii_lowercase();
        let (kind, default_port) = match scheme.as_str() {
            "http" => (ProxyKind::HttpConnect, 8080),
            "socks5" | "socks5h" => (ProxyKind::Socks5, 1080),
            other => return Err(format!("proxy: unknown scheme: {other}")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                Some((percent_decode(user)?, percent_decode(pass)?))
            }
        };
        let addr = Addr::parse(&net::with_default_port(hostport, default_port))?;
        if !matches!(addr.kind, AddrKind::Tcp { .. }) {
            return Err(format!("invalid proxy address {hostport}"));
        }
        Ok(ProxyUrl {
            kind,
            addr,
            credentials,
            remote_dns: scheme == "socks5h",
        })
    }

    /// Connects to the proxy and asks it for a tunnel to `target` (`host:port`), all before
    /// `deadline`. The returned stream is blocking.
    pub fn dial(&self, target: &str, deadline: Instant) -> io::Result<Stream> {
        // `socks5://` resolves before reaching the proxy: a name that does not resolve fails
        // here, as a direct dial would.
        let socks = match self.kind {
            ProxyKind::Socks5 => Some(self.socks_dest(target)?),
            ProxyKind::HttpConnect => None,
        };
        let mut sock = net::dial(&self.addr, deadline)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "i/o timeout"));
        }
        if let Stream::Tcp(s) = &sock {
            s.set_read_timeout(Some(left))?;
            s.set_write_timeout(Some(left))?;
        }
        match &socks {
            None => http_connect(&mut sock, target, self.credentials.as_ref())?,
            Some((dest, port)) => {
                socks5_connect(&mut sock, dest, *port, self.credentials.as_ref())?;
            }
        }
        if let Stream::Tcp(s) = &sock {
            s.set_read_timeout(None)?;
            s.set_write_timeout(None)?;
        }
        Ok(sock)
    }

    /// What to ask a SOCKS5 proxy for: an IP literal as is; a name as is for `socks5h://`,
    /// resolved here for `socks5://` (the first IPv4 address, else the first IPv6).
    fn socks_dest(&self, target: &str) -> io::Result<(SocksDest, u16)> {
        let (host, port) = net::split_host_port(target).map_err(io::Error::other)?;
        let port_num: u16 = port
            .parse()
            .map_err(|_| io::Error::other(format!("socks5: bad port in {target}")))?;
        let dest = match host.parse::<IpAddr>() {
            Ok(ip) => SocksDest::Ip(ip),
            Err(_) if self.remote_dns => SocksDest::Name(host),
            Err(_) => SocksDest::Ip(net::pick_listen_addr(&net::resolve(&host, &port)?).ip()),
        };
        Ok((dest, port_num))
    }
}

/// The URL for the log, with a password replaced by `xxxxx` (as Go's `URL.Redacted`).
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:xxxxx@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Where a SOCKS5 proxy is asked to connect.
enum SocksDest {
    Ip(IpAddr),
    Name(String),
}

/// Decodes `%XX` escapes of a URL's userinfo.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid URL escape in proxy credentials: {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "proxy credentials are not UTF-8".to_string())
}

fn http_connect(
    sock: &mut Stream,
    target: &str,
    creds: Option<&(String, String)>,
) -> io::Result<()> {
    use base64ct::{Base64, Encoding};
    let auth = creds.map_or(String::new(), |(user, pass)| {
        format!(
            "Proxy-Authorization: Basic {}\r\n",
            Base64::encode_string(format!("{user}:{pass}").as_bytes())
        )
    });
    // One write, so the request leaves in one segment.
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n");
    sock.write_all(request.as_bytes())?;
    // Read the response head byte by byte so no tunnelled byte is consumed.
    let mut head = Vec::with_capacity(256);
    net::read_http_head(sock, &mut head, 8192, 1, &mut |_| true).map_err(|e| match e {
        HeadError::Eof => {
            io::Error::new(io::ErrorKind::UnexpectedEof, "http_tunnel: unexpected EOF")
        }
        HeadError::Io(e) => e,
        HeadError::TooLarge | HeadError::Deadline => {
            io::Error::other("http_tunnel: response head too large")
        }
    })?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&head)
        .map_err(|e| io::Error::other(format!("http_tunnel: {e}")))?;
    let code = resp.code.unwrap_or(0);
    if code != 200 {
        let line = String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or_default());
        let status = line.split_once(' ').map_or("", |(_, s)| s);
        return Err(io::Error::other(format!(
            "http_tunnel: failed proxying {code}: {status}"
        )));
    }
    Ok(())
}

fn socks5_connect(
    sock: &mut Stream,
    dest: &SocksDest,
    port: u16,
    creds: Option<&(String, String)>,
) -> io::Result<()> {
    let method = if creds.is_some() { 2 } else { 0 };
    sock.write_all(&[5, 1, method])?;
    let mut reply = [0u8; 2];
    sock.read_exact(&mut reply)?;
    if reply[0] != 5 || reply[1] != method {
        return Err(io::Error::other(
            "socks5: no acceptable authentication method",
        ));
    }
    if let Some((user, pass)) = creds {
        let too_long = || io::Error::other("socks5: username or password too long");
        let mut auth = vec![1, u8::try_from(user.len()).map_err(|_| too_long())?];
        auth.extend_from_slice(user.as_bytes());
        auth.push(u8::try_from(pass.len()).map_err(|_| too_long())?);
        auth.extend_from_slice(pass.as_bytes());
        sock.write_all(&auth)?;
        sock.read_exact(&mut reply)?;
        if reply[1] != 0 {
            return Err(io::Error::other(
                "socks5: username/password authentication failed",
            ));
        }
    }
    let mut req = vec![5, 1, 0];
    match dest {
        SocksDest::Ip(IpAddr::V4(ip)) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
        }
        SocksDest::Ip(IpAddr::V6(ip)) => {
            req.push(4);
            req.extend_from_slice(&ip.octets());
        }
        SocksDest::Name(host) => {
            req.push(3);
            req.push(
                u8::try_from(host.len())
                    .map_err(|_| io::Error::other("socks5: host name too long"))?,
            );
            req.extend_from_slice(host.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    sock.write_all(&req)?;
    let mut head = [0u8; 4];
    sock.read_exact(&mut head)?;
    if head[1] != 0 {
        let target = match dest {
            SocksDest::Ip(ip) => SocketAddr::new(*ip, port).to_string(),
            SocksDest::Name(host) => format!("{host}:{port}"),
        };
        return Err(io::Error::other(format!(
            "socks5: connect to {target} failed: {}",
            socks_reply(head[1])
        )));
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8];
            sock.read_exact(&mut len)?;
            usize::from(len[0]) + 2
        }
        _ => return Err(io::Error::other("socks5: bad address type in reply")),
    };
    let mut skip = vec![0u8; rest];
    sock.read_exact(&mut skip)?;
    Ok(())
}

fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    use super::*;

    #[test]
    fn url_grammar_and_default_ports() {
        let p = ProxyUrl::parse("http://proxy.local").unwrap();
        assert_eq!(
            (p.kind, p.addr.raw.as_str()),
            (ProxyKind::HttpConnect, "proxy.local:8080")
        );
        let p = ProxyUrl::parse("socks5://u:p@127.0.0.1").unwrap();
        assert_eq!(p.addr.raw, "127.0.0.1:1080");
        assert_eq!(p.credentials, Some(("u".into(), "p".into())));
        assert!(!p.remote_dns);
        let p = ProxyUrl::parse("http://us%40er:p%3Ass@proxy:3128").unwrap();
        assert_eq!(p.credentials, Some(("us@er".into(), "p:ss".into())));
        assert!(ProxyUrl::parse("http://u:%zz@proxy").is_err());
        assert!(ProxyUrl::parse("SOCKS5H://proxy").unwrap().remote_dns);
        assert_eq!(
            ProxyUrl::parse("socks5h://[::1]:9050").unwrap().addr.raw,
            "[::1]:9050"
        );
        assert_eq!(
            ProxyUrl::parse("ftp://x").unwrap_err(),
            "proxy: unknown scheme: ftp"
        );
    }

    #[test]
    fn logged_urls_hide_the_password() {
        assert_eq!(
            redacted("http://alice:s3cret@proxy:3128/x"),
            "http://alice:xxxxx@proxy:3128/x"
        );
        assert_eq!(redacted("socks5://bob@proxy"), "socks5://bob@proxy");
        assert_eq!(redacted("socks5h://proxy:1080"), "socks5h://proxy:1080");
    }

    #[test]
    fn http_connect_refusal_names_the_status() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let server = one_http_exchange(l, b"HTTP/1.1 403 Forbidden\r\n\r\n");
        let err = ProxyUrl::parse(&url)
            .unwrap()
            .dial("backend:443", Instant::now() + Duration::from_secs(5))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "http_tunnel: failed proxying 403: 403 Forbidden"
        );
        assert_eq!(
            server.join().unwrap(),
            "CONNECT backend:443 HTTP/1.1\r\nHost: backend:443\r\n\r\n"
        );
    }

    #[test]
    fn socks5_passes_the_host_name_and_credentials() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("socks5h://alice:secret@{}", l.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut greet = [0u8; 3];
            s.read_exact(&mut greet).unwrap();
            s.write_all(&[5, 2]).unwrap();
            let mut auth = [0u8; 14];
            s.read_exact(&mut auth).unwrap();
            s.write_all(&[1, 0]).unwrap();
            let mut req = [0u8; 5 + 7 + 2];
            s.read_exact(&mut req).unwrap();
            s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 80]).unwrap();
            s.write_all(b"tunnelled").unwrap();
            (greet, auth.to_vec(), req.to_vec())
        });
        let mut sock = ProxyUrl::parse(&url)
            .unwrap()
            .dial("backend:443", Instant::now() + Duration::from_secs(5))
            .unwrap();
        let mut got = [0u8; 9];
        sock.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"tunnelled");
        let (greet, auth, req) = server.join().unwrap();
        assert_eq!(greet, [5, 1, 2]);
        assert_eq!(auth, b"\x01\x05alice\x06secret");
        assert_eq!(req, b"\x05\x01\x00\x03\x07backend\x01\xbb");
    }

    /// Reads a request head, answers `response`, returns the head.
    fn one_http_exchange(l: TcpListener, response: &'static [u8]) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while !got.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "request cut short");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(response).unwrap();
            String::from_utf8_lossy(&got).to_string()
        })
    }

    #[test]
    fn http_connect_sends_basic_credentials() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://us%40er:pa%3Ass@{}", l.local_addr().unwrap());
        let server = one_http_exchange(l, b"HTTP/1.1 200 Connection established\r\n\r\n");
        ProxyUrl::parse(&url)
            .unwrap()
            .dial("backend:443", Instant::now() + Duration::from_secs(5))
            .unwrap();
        // base64("us@er:pa:ss")
        assert_eq!(
            server.join().unwrap(),
            "CONNECT backend:443 HTTP/1.1\r\nHost: backend:443\r\n\
             Proxy-Authorization: Basic dXNAZXI6cGE6c3M=\r\n\r\n"
        );
    }

    #[test]
    fn socks5_without_h_resolves_the_name_itself() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("socks5://{}", l.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut greet = [0u8; 3];
            s.read_exact(&mut greet).unwrap();
            s.write_all(&[5, 0]).unwrap();
            let mut req = [0u8; 4 + 4 + 2];
            s.read_exact(&mut req).unwrap();
            s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 80]).unwrap();
            req
        });
        ProxyUrl::parse(&url)
            .unwrap()
            .dial("localhost:443", Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            server.join().unwrap(),
            *b"\x05\x01\x00\x01\x7f\x00\x00\x01\x01\xbb"
        );
        let err = ProxyUrl::parse(&url)
            .unwrap()
            .dial(
                "doesnotexist.invalid:443",
                Instant::now() + Duration::from_secs(5),
            )
            .unwrap_err();
        assert!(
            err.to_string().starts_with("lookup doesnotexist.invalid"),
            "{err}"
        );
    }
}
