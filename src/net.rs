//! Addresses and sockets: the `--listen`/`--target`/`--status` grammar (docs/behaviour.md §6.1),
//! the safety prefixes (6.4), listeners (6.2), dialing (6.3) and the [`Stream`] type that the proxy
//! moves bytes over. Owns no TLS and no policy.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

/// A parsed address, with the string the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub raw: String,
    pub kind: AddrKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrKind {
    Tcp { host: String, port: String },
    Unix(PathBuf),
    Systemd(String),
    Launchd(String),
}

/// Literal prefixes that make an address "safe" (docs/behaviour.md §6.4).
const SAFE_PREFIXES: [&str; 6] = [
    "unix:",
    "systemd:",
    "launchd:",
    "127.0.0.1:",
    "[::1]:",
    "localhost:",
];

/// `authority` (`host`, `host:port`, `[v6]` or `[v6]:port`) with `port` added when it names
/// none, for URL parsers whose scheme implies a port.
pub fn with_default_port(authority: &str, port: u16) -> String {
    let has_port = match authority.rsplit_once(':') {
        Some((host, _)) => !host.starts_with('[') || host.ends_with(']'),
        None => false,
    };
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{port}")
    }
}

impl Addr {
    /// Parses `launchd:NAME`, `systemd:NAME`, `unix:PATH` or `HOST:PORT`, in that order. The
    /// error text is the host:port splitter's, e.g. `address x: missing port in address`.
    pub fn parse(raw: &str) -> Result<Addr, String> {
        let kind = if let Some(name) = raw.strip_prefix("launchd:") {
            AddrKind::Launchd(name.to_string())
        } else if let Some(name) = raw.strip_prefix("systemd:") {
            AddrKind::Systemd(name.to_string())
        } else if let Some(path) = raw.strip_prefix("unix:") {
            AddrKind::Unix(PathBuf::from(path))
        } else {
            let (host, port) = split_host_port(raw)?;
            AddrKind::Tcp { host, port }
        };
        Ok(Addr {
            raw: raw.to_string(),
            kind,
        })
    }

    /// Whether the literal string starts with one of the safe prefixes (docs/behaviour.md §6.4).
    pub fn is_safe(raw: &str) -> bool {
        SAFE_PREFIXES.iter().any(|p| raw.starts_with(p))
    }

    /// The network name used in messages: `tcp`, `unix`, `systemd` or `launchd`.
    pub fn network(&self) -> &'static str {
        match self.kind {
            AddrKind::Tcp { .. } => "tcp",
            AddrKind::Unix(_) => "unix",
            AddrKind::Systemd(_) => "systemd",
            AddrKind::Launchd(_) => "launchd",
        }
    }

    /// The TCP port, if this is a TCP address with a numeric port.
    pub fn tcp_port(&self) -> Option<u16> {
        match &self.kind {
            AddrKind::Tcp { port, .. } => port.parse().ok(),
            _ => None,
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Go's `net.SplitHostPort`, with its error texts.
pub fn split_host_port(addr: &str) -> Result<(String, String), String> {
    let err = |why: &str| Err(format!("address {addr}: {why}"));
    let Some(i) = addr.rfind(':') else {
        return err("missing port in address");
    };
    let (host, rest) = if addr.starts_with('[') {
        let Some(end) = addr.find(']') else {
            return err("missing ']' in address");
        };
        match end + 1 {
            e if e == addr.len() => return err("missing port in address"),
            e if e == i => {}
            e if addr.as_bytes()[e] == b':' => return err("too many colons in address"),
            _ => return err("missing port in address"),
        }
        (&addr[1..end], &addr[i + 1..])
    } else {
        let host = &addr[..i];
        if host.contains(':') {
            return err("too many colons in address");
        }
        (host, &addr[i + 1..])
    };
    // Byte-wise: the first character may be multi-byte (found by fuzzing).
    if addr.bytes().skip(1).any(|b| b == b'[') {
        return err("unexpected '[' in address");
    }
    if !addr.starts_with('[') && addr.contains(']') || addr[..i].matches(']').count() > 1 {
        return err("unexpected ']' in address");
    }
    Ok((host.to_string(), rest.to_string()))
}

/// Resolves `host:port` like the reference (empty host = 0.0.0.0, IPv4 first when `prefer_v4`).
pub fn resolve(host: &str, port: &str) -> io::Result<Vec<SocketAddr>> {
    let port: u16 = port.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("lookup tcp/{port}: unknown port"),
        )
    })?;
    if host.is_empty() {
        return Ok(vec![SocketAddr::from(([0, 0, 0, 0], port))]);
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("lookup {host}: {}", lookup_cause(&e))))?
        .collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("lookup {host}: no such host"),
        ));
    }
    Ok(addrs)
}

fn lookup_cause(e: &io::Error) -> String {
    let s = e.to_string();
    if s.contains("Name or service not known") || s.contains("No address associated") {
        "no such host".to_string()
    } else {
        s
    }
}

/// Picks the first IPv4 address, else the first IPv6 (docs/behaviour.md §6.2).
pub fn pick_listen_addr(addrs: &[SocketAddr]) -> SocketAddr {
    *addrs.iter().find(|a| a.is_ipv4()).unwrap_or(&addrs[0])
}

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    /// A UNIX listener; `unlink` is the path to remove when closed (none if inherited).
    Unix {
        listener: UnixListener,
        unlink: std::sync::Mutex<Option<PathBuf>>,
    },
}

impl Listener {
    /// Binds `addr` as the reference does: TCP with SO_REUSEADDR + SO_REUSEPORT and a
    /// somaxconn backlog; UNIX at the path with the process umask, failing if it exists.
    pub fn bind(addr: &Addr) -> io::Result<Listener> {
        match &addr.kind {
            AddrKind::Tcp { host, port } => {
                let sa = pick_listen_addr(&resolve(host, port)?);
                let socket = Socket::new(Domain::for_address(sa), Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                socket.set_reuse_port(true)?;
                socket
                    .bind(&sa.into())
                    .map_err(|e| op_error("listen tcp", &sa.to_string(), "bind", e))?;
                socket.listen(backlog())?;
                Ok(Listener::Tcp(socket.into()))
            }
            AddrKind::Unix(path) => {
                let listener = UnixListener::bind(path).map_err(|e| {
                    let e = if e.kind() == io::ErrorKind::AddrInUse {
                        io::Error::new(e.kind(), "address already in use")
                    } else {
                        e
                    };
                    op_error("listen unix", &path.display().to_string(), "bind", e)
                })?;
                Ok(Listener::Unix {
                    listener,
                    unlink: std::sync::Mutex::new(Some(path.clone())),
                })
            }
            AddrKind::Systemd(name) => match crate::systemd::take_listener(name) {
                Ok(crate::systemd::ActivatedSocket::Tcp(l)) => Ok(Listener::Tcp(l)),
                // systemd owns the socket file: never unlinked by us.
                Ok(crate::systemd::ActivatedSocket::Unix(l)) => Ok(Listener::Unix {
                    listener: l,
                    unlink: std::sync::Mutex::new(None),
                }),
                Err(e) => Err(io::Error::new(io::ErrorKind::NotFound, e)),
            },
            AddrKind::Launchd(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "launchd socket activation is only supported on darwin",
            )),
        }
    }

    /// Accepts one connection (blocking).
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Listener::Unix { listener, .. } => Ok(Stream::Unix(listener.accept()?.0)),
        }
    }

    /// Wakes a thread blocked in [`Listener::accept`]: it returns an error from then on.
    /// Safe to call from any thread, any number of times.
    pub fn shutdown(&self) {
        // SAFETY: shutdown(2) on a descriptor we own; no memory is passed.
        #[allow(unsafe_code)]
        unsafe {
            libc::shutdown(self.as_raw_fd(), libc::SHUT_RDWR);
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix { listener, .. } => listener.as_raw_fd(),
        }
    }
}

impl Listener {
    /// Removes the socket file of a UNIX listener we created (once; never an inherited one).
    /// Any thread, any number of times.
    pub fn unlink(&self) {
        if let Listener::Unix { unlink, .. } = self {
            let path = crate::sync::lock(unlink).take();
            if let Some(path) = path {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.unlink();
    }
}

fn backlog() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map_or(4096, |n| n.clamp(1, 65535))
}

pub(crate) fn op_error(op: &str, addr: &str, call: &str, e: io::Error) -> io::Error {
    let cause = match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => strip_os_error(&e),
    };
    io::Error::new(e.kind(), format!("{op} {addr}: {call}: {cause}"))
}

/// Why [`read_http_head`] found no complete HTTP head.
#[derive(Debug)]
pub enum HeadError {
    /// The limit was reached without the blank line that ends a head.
    TooLarge,
    /// The peer closed the connection first.
    Eof,
    /// `before_read` gave up: its deadline passed.
    Deadline,
    Io(io::Error),
}

/// The one HTTP head reader (status requests, the report client's responses, HTTP CONNECT
/// replies): reads from `s` into `buf` until `buf` holds a complete head, ended by a blank line
/// (CRLF or bare LF line ends, as Go and httparse accept), and returns the head's length; bytes
/// after it stay in `buf`. Reads at most `chunk` bytes at a time: 1 where the bytes after the
/// head belong to someone else (a CONNECT tunnel). Fails once `limit` bytes hold no head.
/// `before_read(buffered)` runs before every read, `buffered` saying whether part of the head
/// arrived; it sets the read timeout and returns `false` when its deadline has passed.
pub fn read_http_head<S: Read>(
    s: &mut S,
    buf: &mut Vec<u8>,
    limit: usize,
    chunk: usize,
    before_read: &mut dyn FnMut(bool) -> bool,
) -> Result<usize, HeadError> {
    let mut scratch = [0u8; 2048];
    let chunk = chunk.clamp(1, scratch.len());
    loop {
        if let Some(len) = head_len(buf) {
            return Ok(len);
        }
        if buf.len() >= limit {
            return Err(HeadError::TooLarge);
        }
        if !before_read(!buf.is_empty()) {
            return Err(HeadError::Deadline);
        }
        match s.read(&mut scratch[..chunk]) {
            Ok(0) => return Err(HeadError::Eof),
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// The length of the head at the start of `buf`, through its blank line, if it is complete.
fn head_len(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let after = from + i + 1;
        match &buf[after..] {
            [b'\n', ..] => return Some(after + 1),
            [b'\r', b'\n', ..] => return Some(after + 2),
            _ => from = after,
        }
    }
    None
}

/// A listener that could not be opened (or, for `--check`, would not open): the listeners'
/// startup boundary. `Display` is the text printed as `error: <e>`; [`log_lines`] are the
/// reference's log lines for it.
///
/// [`log_lines`]: ListenError::log_lines
#[derive(Debug)]
pub enum ListenError {
    /// `--listen`, in server or client mode.
    Listen { server: bool, error: io::Error },
    /// `--status`.
    Status(io::Error),
}

impl ListenError {
    /// The lines logged before the error is printed.
    pub fn log_lines(&self) -> Vec<String> {
        match self {
            ListenError::Listen { server, error } => {
                let (step, mode) = match server {
                    true => ("error trying to listen", "server"),
                    false => ("error opening socket", "client"),
                };
                let e = strip_os_error(error);
                vec![
                    format!("{step}: {e}"),
                    format!("error from {mode} listen: {e}"),
                ]
            }
            ListenError::Status(_) => vec![
                format!("error: {self}"),
                format!("error serving /_status: {self}"),
            ],
        }
    }
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::Listen { error, .. } => f.write_str(&strip_os_error(error)),
            ListenError::Status(e) => {
                write!(f, "unable to bind on status port: {}", strip_os_error(e))
            }
        }
    }
}

impl std::error::Error for ListenError {}

/// `Connection refused (os error 111)` → `connection refused`, as Go prints errno texts.
pub fn strip_os_error(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(first) if e.raw_os_error().is_some() => {
            first.to_lowercase().collect::<String>() + c.as_str()
        }
        _ => s,
    }
}

/// The text of an I/O error on a socket with a read or write timeout: `i/o timeout` when the
/// timeout fired (as the reference words a missed deadline), otherwise [`strip_os_error`].
pub fn timed_io_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => strip_os_error(e),
    }
}

/// Dials a TCP or UNIX target before `deadline` (docs/behaviour.md §6.3). TCP names are resolved on
/// every dial and every address is tried in turn.
pub fn dial(addr: &Addr, deadline: Instant) -> io::Result<Stream> {
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "i/o timeout"))
    };
    match &addr.kind {
        AddrKind::Tcp { host, port } => {
            let addrs = resolve(host, port)?;
            let mut last = None;
            for sa in addrs {
                let timeout = remaining().map_err(|e| dial_error("tcp", &sa.to_string(), e))?;
                match TcpStream::connect_timeout(&sa, timeout) {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        return Ok(Stream::Tcp(s));
                    }
                    Err(e) => last = Some(dial_error("tcp", &sa.to_string(), e)),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other("no addresses")))
        }
        AddrKind::Unix(path) => {
            let timeout =
                remaining().map_err(|e| dial_error("unix", &path.display().to_string(), e))?;
            connect_unix(path, timeout).map(Stream::Unix)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{} addresses cannot be dialed", addr.network()),
        )),
    }
}

fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    let sa = SockAddr::unix(path)?;
    socket
        .connect_timeout(&sa, timeout)
        .map_err(|e| dial_error("unix", &path.display().to_string(), e))?;
    Ok(socket.into())
}

fn dial_error(net: &str, addr: &str, e: io::Error) -> io::Error {
    let cause = if e.kind() == io::ErrorKind::TimedOut {
        "i/o timeout".to_string()
    } else {
        format!("connect: {}", strip_os_error(&e))
    };
    io::Error::new(e.kind(), format!("dial {net} {addr}: {cause}"))
}

/// A plain connected stream socket, TCP or UNIX.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(d),
            Stream::Unix(s) => s.set_write_timeout(d),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// `tcp:1.2.3.4:5` / `unix:/path` / `unix:@` for the remote end (docs/behaviour.md §13.3).
    pub fn peer_display(&self) -> String {
        match self {
            Stream::Tcp(s) => match s.peer_addr() {
                Ok(a) => format!("tcp:{a}"),
                Err(_) => "tcp:?".to_string(),
            },
            Stream::Unix(s) => match s
                .peer_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            {
                Some(p) => format!("unix:{}", p.display()),
                None => "unix:@".to_string(),
            },
        }
    }

    /// The remote `ip:port` for TLS handshake errors (`@` for UNIX peers).
    pub fn peer_ip_port(&self) -> String {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            Stream::Unix(_) => "@".to_string(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    /// Forwarded, not left to the default (which writes only the first buffer): rustls hands
    /// `write_tls` all queued records at once, and one sendmsg for them halves the syscalls of
    /// a bulk transfer.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_head_ends_at_the_first_blank_line_and_keeps_what_follows() {
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\ntunnelled";
        let mut buf = Vec::new();
        let len = read_http_head(&mut input, &mut buf, 8192, 1, &mut |_| true).unwrap();
        assert_eq!(&buf[..len], b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n");
        assert_eq!(
            input, b"tunnelled",
            "one byte at a time reads nothing past the head"
        );
        assert_eq!(head_len(b"GET / HTTP/1.0\n\nx"), Some(16));
        assert_eq!(head_len(b"GET / HTTP/1.0\r\nHost: a\r\n"), None);
        let mut big: &[u8] = &[b'a'; 100];
        let too_large = read_http_head(&mut big, &mut Vec::new(), 10, 4, &mut |_| true);
        assert!(matches!(too_large, Err(HeadError::TooLarge)));
        let mut short: &[u8] = b"HTTP/1.1 200";
        let eof = read_http_head(&mut short, &mut Vec::new(), 100, 4, &mut |_| true);
        assert!(matches!(eof, Err(HeadError::Eof)));
    }

    use super::*;

    #[test]
    fn vectored_writes_send_every_buffer() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut stream = Stream::Unix(a);
        let bufs = [io::IoSlice::new(b"first "), io::IoSlice::new(b"second")];
        assert_eq!(
            stream.write_vectored(&bufs).unwrap(),
            12,
            "not just the first buffer"
        );
        drop(stream);
        let mut got = String::new();
        b.read_to_string(&mut got).unwrap();
        assert_eq!(got, "first second");
    }

    #[test]
    fn address_grammar() {
        // A multi-byte first character must not split (a fuzzer-found panic).
        assert_eq!(
            Addr::parse("\u{5fa}:z-").unwrap().kind,
            AddrKind::Tcp {
                host: "\u{5fa}".into(),
                port: "z-".into()
            }
        );
        assert_eq!(
            Addr::parse("unix:/x").unwrap().kind,
            AddrKind::Unix("/x".into())
        );
        assert_eq!(
            Addr::parse("systemd:gt").unwrap().kind,
            AddrKind::Systemd("gt".into())
        );
        assert_eq!(
            Addr::parse("[::1]:80").unwrap().kind,
            AddrKind::Tcp {
                host: "::1".into(),
                port: "80".into()
            }
        );
        assert_eq!(
            Addr::parse(":80").unwrap().kind,
            AddrKind::Tcp {
                host: "".into(),
                port: "80".into()
            }
        );
        assert_eq!(
            Addr::parse("nohost").unwrap_err(),
            "address nohost: missing port in address"
        );
        assert_eq!(
            Addr::parse("a:b:c").unwrap_err(),
            "address a:b:c: too many colons in address"
        );
        assert_eq!(
            Addr::parse("[::1]").unwrap_err(),
            "address [::1]: missing port in address"
        );
    }

    #[test]
    fn safety_prefixes_are_literal() {
        for ok in [
            "unix:/x",
            "systemd:a",
            "127.0.0.1:1",
            "[::1]:1",
            "localhost:1",
        ] {
            assert!(Addr::is_safe(ok), "{ok}");
        }
        for bad in [
            "LOCALHOST:80",
            "127.0.0.2:80",
            "0.0.0.0:80",
            ":80",
            "localhost.example:80",
            "alocalhost.com:1",
        ] {
            assert!(!Addr::is_safe(bad), "{bad}");
        }
    }
}
