//! One thread drives one connection: the TLS handshake under a deadline, then both copy
//! directions with poll(2) over non-blocking sockets (docs/behaviour.md §7.2, §7.3).
//!
//! Half-close is real: EOF from one side becomes `shutdown(SHUT_WR)` (plain) or `close_notify`
//! then FIN (TLS) towards the other, and the reverse direction keeps flowing until it ends too or
//! the close timeout expires. Every wait has a deadline, so no peer can pin the thread.
//! Owns no policy: the caller decides deadlines and logs.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::Connection;

use crate::net::Stream;

/// How long one poll may sleep before re-checking the shutdown flag during a handshake.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(250);

/// Plaintext read size; the reference copies with 32 KiB buffers.
const CHUNK: usize = 32 * 1024;

/// A connection with nothing to do for this long releases its copy buffer.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Why a handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The deadline passed (or shutdown started) first.
    Timeout,
    /// The peer closed the connection mid-handshake.
    Eof,
    Tls(rustls::Error),
    Io(io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Timeout => f.write_str("i/o timeout"),
            HandshakeError::Eof => f.write_str("EOF"),
            HandshakeError::Tls(e) => f.write_str(&crate::tls::describe(e)),
            HandshakeError::Io(e) => f.write_str(&crate::net::strip_os_error(e)),
        }
    }
}

/// Completes the TLS handshake on a non-blocking socket before `deadline`. Abandons it early
/// when `cancel` becomes true (shutdown).
pub fn handshake(
    sock: &mut Stream,
    conn: &mut Connection,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<(), HandshakeError> {
    sock.set_nonblocking(true).map_err(HandshakeError::Io)?;
    loop {
        while conn.wants_write() {
            match conn.write_tls(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
        if !conn.is_handshaking() && !conn.wants_write() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline || cancel.load(Ordering::Relaxed) {
            return Err(HandshakeError::Timeout);
        }
        let mut events = 0;
        if conn.wants_read() {
            events |= libc::POLLIN;
        }
        if conn.wants_write() {
            events |= libc::POLLOUT;
        }
        let wait = (deadline - now).min(SHUTDOWN_CHECK);
        let mut fds = [libc::pollfd {
            fd: sock.as_raw_fd(),
            events,
            revents: 0,
        }];
        poll(&mut fds, Some(wait)).map_err(HandshakeError::Io)?;
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && conn.wants_read()
        {
            match conn.read_tls(sock) {
                Ok(0) => return Err(HandshakeError::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(HandshakeError::Io(e)),
            }
            if let Err(e) = conn.process_new_packets() {
                // Best effort: tell the peer why (the alert rustls queued).
                let _ = conn.write_tls(sock);
                return Err(HandshakeError::Tls(e));
            }
        }
    }
}

/// Reads a TLS ClientHello on a non-blocking socket before `deadline`, for a server that picks
/// its configuration from it (ACME TLS-ALPN-01 challenges); the handshake then continues with
/// [`handshake`] on the connection made from the result. Abandons early on `cancel`.
pub fn read_client_hello(
    sock: &mut Stream,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<rustls::server::Accepted, HandshakeError> {
    sock.set_nonblocking(true).map_err(HandshakeError::Io)?;
    let mut acceptor = rustls::server::Acceptor::default();
    loop {
        let now = Instant::now();
        if now >= deadline || cancel.load(Ordering::Relaxed) {
            return Err(HandshakeError::Timeout);
        }
        let mut fds = [libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        poll(&mut fds, Some((deadline - now).min(SHUTDOWN_CHECK))).map_err(HandshakeError::Io)?;
        if fds[0].revents == 0 {
            continue;
        }
        match acceptor.read_tls(sock) {
            Ok(0) => return Err(HandshakeError::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(HandshakeError::Io(e)),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(accepted),
            Ok(None) => {}
            Err((e, mut alert)) => {
                let _ = alert.write_all(sock);
                return Err(HandshakeError::Tls(e));
            }
        }
    }
}

/// Deadlines for the copy phase.
#[derive(Debug, Clone, Copy)]
pub struct CopyLimits {
    /// `--close-timeout`: once either direction ends, the whole pipe has this long to finish.
    pub close: Duration,
    /// `--max-conn-lifetime` as an absolute deadline, if any.
    pub lifetime: Option<Instant>,
}

/// What the copy phase did.
#[derive(Debug, Default)]
pub struct CopyStats {
    /// Plaintext bytes from the inbound side to the target.
    pub forwarded: u64,
    /// Plaintext bytes from the target back to the inbound side.
    pub returned: u64,
    /// The copy ended on a deadline (lifetime or close timeout).
    pub timed_out: bool,
    /// The error that ended the copy, if it is worth logging (resets and broken pipes are not).
    pub error: Option<String>,
}

/// One side of a pipe: a socket, optionally with TLS on it.
pub struct Endpoint {
    sock: Stream,
    tls: Option<Connection>,
    /// Plaintext from the other side not yet accepted by this socket (plain endpoints only;
    /// TLS endpoints buffer inside rustls).
    out: Vec<u8>,
    /// We have seen the end of this side's data.
    read_eof: bool,
    /// The transport itself (TCP) reported EOF; for TLS the records may still hold data.
    sock_eof: bool,
    /// We decided to end writes towards this side.
    write_shut: bool,
    /// The FIN has been sent (after any queued TLS data and close_notify).
    fin_sent: bool,
    /// The socket may have input: true until a read comes back short or would block, and again
    /// when poll says so. Saves the read that would only say "nothing yet".
    readable: bool,
    /// The socket may take output: false after a short or blocked write, until poll says so.
    writable: bool,
}

impl Endpoint {
    pub fn plain(sock: Stream) -> Endpoint {
        Endpoint::new(sock, None)
    }

    pub fn tls(sock: Stream, conn: Connection) -> Endpoint {
        Endpoint::new(sock, Some(conn))
    }

    fn new(sock: Stream, tls: Option<Connection>) -> Endpoint {
        Endpoint {
            sock,
            tls,
            out: Vec::new(),
            read_eof: false,
            sock_eof: false,
            write_shut: false,
            fin_sent: false,
            readable: true,
            writable: true,
        }
    }

    /// Whether output is queued for this side.
    fn pending(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Writes whatever is queued, without blocking. Sends the FIN once everything is out.
    fn flush(&mut self) -> io::Result<bool> {
        let mut progress = false;
        match &mut self.tls {
            Some(conn) => {
                while conn.wants_write() && self.writable {
                    let mut sink = Probe::new(&mut self.sock);
                    match conn.write_tls(&mut sink) {
                        Ok(_) => progress = true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                    // A short write means the socket buffer is full: the next one would block.
                    if sink.short {
                        self.writable = false;
                    }
                }
            }
            None => {
                while !self.out.is_empty() && self.writable {
                    match self.sock.write(&self.out) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            self.writable = n == self.out.len();
                            self.out.drain(..n);
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if self.write_shut && !self.fin_sent && !self.pending() {
            self.fin_sent = true;
            progress = true;
            // The peer may already be gone; the FIN is a courtesy then.
            let _ = self.sock.shutdown(Shutdown::Write);
        }
        Ok(progress)
    }

    /// Queues plaintext for this side.
    fn queue(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.tls {
            Some(conn) => conn.writer().write_all(data),
            None => {
                self.out.extend_from_slice(data);
                Ok(())
            }
        }
    }

    /// Ends writes towards this side once queued data is out: close_notify for TLS, then FIN.
    fn shut_write(&mut self) {
        if !self.write_shut {
            self.write_shut = true;
            if let Some(conn) = &mut self.tls {
                conn.send_close_notify();
            }
        }
    }

    /// Reads plaintext without blocking: `Ok(Some(n))` data, `Ok(None)` nothing yet; EOF sets
    /// `read_eof` and returns `Ok(Some(0))`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(conn) = &mut self.tls else {
            if !self.readable {
                return Ok(None);
            }
            return match self.sock.read(buf) {
                Ok(0) => {
                    self.read_eof = true;
                    // Plain source: its read side is done (docs/behaviour.md §7.3).
                    let _ = self.sock.shutdown(Shutdown::Read);
                    Ok(Some(0))
                }
                Ok(n) => {
                    // A short read drained the receive queue; poll tells when more arrives.
                    self.readable = n == buf.len();
                    Ok(Some(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
                Err(e) => Err(e),
            };
        };
        loop {
            match conn.reader().read(buf) {
                Ok(0) => {
                    self.read_eof = true;
                    return Ok(Some(0));
                }
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP FIN without close_notify: the data stream ended all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.read_eof = true;
                    return Ok(Some(0));
                }
                Err(e) => return Err(e),
            }
            if self.sock_eof || !conn.wants_read() || !self.readable {
                return Ok(None);
            }
            let mut source = Probe::new(&mut self.sock);
            match conn.read_tls(&mut source) {
                Ok(0) => self.sock_eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
                Err(e) => return Err(e),
            }
            if source.short {
                self.readable = false;
            }
            if let Err(e) = conn.process_new_packets() {
                let _ = conn.write_tls(&mut self.sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Frees the output buffer's capacity once it is empty (an idle connection).
    fn release_idle(&mut self) {
        if self.out.is_empty() {
            self.out = Vec::new();
        }
    }

    /// Takes poll's verdict on this side's socket.
    fn ready(&mut self, revents: libc::c_short) {
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            self.readable = true;
        }
        if revents & (libc::POLLOUT | libc::POLLHUP | libc::POLLERR) != 0 {
            self.writable = true;
        }
    }

    /// Whether poll should wake us for input on this side.
    fn wants_input(&self) -> bool {
        !self.read_eof && !self.sock_eof && self.tls.as_ref().is_none_or(|c| c.wants_read())
    }

    pub fn stream(&self) -> &Stream {
        &self.sock
    }

    pub fn tls_conn(&self) -> Option<&Connection> {
        self.tls.as_ref()
    }
}

/// The socket as rustls reads and writes it, noting whether the one read or write came back
/// short: the receive queue is drained then, or the send buffer full, so the next call would
/// only fail with `WouldBlock` (poll says when that changes).
struct Probe<'a> {
    sock: &'a mut Stream,
    short: bool,
}

impl<'a> Probe<'a> {
    fn new(sock: &'a mut Stream) -> Probe<'a> {
        Probe { sock, short: false }
    }
}

impl Read for Probe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

impl Write for Probe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.sock.write(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.sock.write_vectored(bufs)?;
        self.short = n < bufs.iter().map(|b| b.len()).sum::<usize>();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies both ways between `inbound` and `outbound` until both directions have ended, an error
/// occurs, or a deadline passes.
pub fn copy(inbound: &mut Endpoint, outbound: &mut Endpoint, limits: CopyLimits) -> CopyStats {
    let mut stats = CopyStats::default();
    if let Err(e) = inbound
        .sock
        .set_nonblocking(true)
        .and(outbound.sock.set_nonblocking(true))
    {
        stats.error = Some(e.to_string());
        return stats;
    }
    // Its own mapping, kept by the thread: an idle connection gives the pages back (below).
    match crate::memory::with_scratch(CHUNK, |buf| copy_with(inbound, outbound, limits, buf)) {
        Ok(stats) => stats,
        Err(e) => CopyStats {
            error: Some(e.to_string()),
            ..CopyStats::default()
        },
    }
}

fn copy_with(
    inbound: &mut Endpoint,
    outbound: &mut Endpoint,
    limits: CopyLimits,
    buf: &mut crate::memory::PageBuf,
) -> CopyStats {
    let mut stats = CopyStats::default();
    let mut close_deadline: Option<Instant> = None;
    loop {
        let step = pump(inbound, outbound, buf, &mut stats.forwarded)
            .and_then(|a| Ok(a | pump(outbound, inbound, buf, &mut stats.returned)?));
        let progress = match step {
            Ok(p) => p,
            Err(e) => {
                if !is_quiet_error(&e) {
                    stats.error = Some(crate::net::strip_os_error(&e));
                }
                return stats;
            }
        };
        let done = |src: &Endpoint, dst: &Endpoint| src.read_eof && dst.fin_sent;
        if done(inbound, outbound) && done(outbound, inbound) {
            return stats;
        }
        if close_deadline.is_none() && (inbound.read_eof || outbound.read_eof) {
            close_deadline = Some(Instant::now() + limits.close);
        }
        if progress {
            continue;
        }
        let deadline = match (close_deadline, limits.lifetime) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(t) if !t.is_zero() => Some(t),
                _ => {
                    stats.timed_out = true;
                    stats.error = Some("i/o timeout".to_string());
                    return stats;
                }
            },
            None => None,
        };
        let interest = |me: &Endpoint, other: &Endpoint| {
            let mut ev = 0;
            if me.wants_input() && !other.pending() {
                ev |= libc::POLLIN;
            }
            if me.pending() {
                ev |= libc::POLLOUT;
            }
            ev
        };
        let ev_in = interest(inbound, outbound);
        let ev_out = interest(outbound, inbound);
        if ev_in == 0 && ev_out == 0 {
            // Nothing can move and nothing is awaited: the pipe is finished.
            return stats;
        }
        let mut fds = [
            libc::pollfd {
                fd: if ev_in == 0 {
                    -1
                } else {
                    inbound.sock.as_raw_fd()
                },
                events: ev_in,
                revents: 0,
            },
            libc::pollfd {
                fd: if ev_out == 0 {
                    -1
                } else {
                    outbound.sock.as_raw_fd()
                },
                events: ev_out,
                revents: 0,
            },
        ];
        // An idle connection gives its copy buffer and the untouched part of its stack back
        // after a while: thousands of idle connections then cost little more than their TLS
        // state. A busy one keeps both.
        let idle_wait = timeout.is_none_or(|t| t > IDLE_RELEASE);
        let mut waited = poll(
            &mut fds,
            if idle_wait {
                Some(IDLE_RELEASE)
            } else {
                timeout
            },
        );
        if idle_wait && matches!(waited, Ok(0)) {
            buf.release();
            inbound.release_idle();
            outbound.release_idle();
            crate::memory::release_stack();
            waited = poll(&mut fds, timeout.map(|t| t - IDLE_RELEASE));
        }
        if let Err(e) = waited {
            stats.error = Some(e.to_string());
            return stats;
        }
        inbound.ready(fds[0].revents);
        outbound.ready(fds[1].revents);
    }
}

/// Moves data from `src` to `dst` as far as possible without blocking.
fn pump(
    src: &mut Endpoint,
    dst: &mut Endpoint,
    buf: &mut crate::memory::PageBuf,
    count: &mut u64,
) -> io::Result<bool> {
    let mut progress = dst.flush()?;
    loop {
        if dst.pending() {
            return Ok(progress);
        }
        if src.read_eof {
            if !dst.write_shut {
                dst.shut_write();
                progress = true;
            }
            return Ok(dst.flush()? || progress);
        }
        let buf = buf.as_mut_slice();
        match src.read(buf)? {
            None => return Ok(progress),
            Some(0) => progress = true,
            Some(mut n) => {
                // TLS hands out one record (at most 16 KiB) at a time: fill the chunk while
                // records are at hand, so the plaintext side gets one write per chunk.
                while src.tls.is_some() && n < buf.len() {
                    match src.read(&mut buf[n..])? {
                        Some(0) | None => break,
                        Some(more) => n += more,
                    }
                }
                *count += n as u64;
                dst.queue(&buf[..n])?;
                dst.flush()?;
                progress = true;
            }
        }
    }
}

/// Resets and broken pipes end a copy without a log line (docs/behaviour.md §7.3).
fn is_quiet_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// poll(2), retrying on EINTR. `None` waits forever.
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        // Round up so a sub-millisecond remainder does not spin.
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        None => -1,
    };
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the whole call.
        #[allow(unsafe_code)]
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{
        ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
    };

    use super::*;

    /// A connected TCP pair: (our side, the peer's side).
    fn pair() -> (Stream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        (Stream::Tcp(ours), peer)
    }

    fn limits() -> CopyLimits {
        CopyLimits {
            close: Duration::from_secs(5),
            lifetime: None,
        }
    }

    #[test]
    fn plain_half_close_keeps_the_reverse_direction_flowing() {
        let (a, mut client) = pair();
        let (b, mut backend) = pair();
        let relay =
            thread::spawn(move || copy(&mut Endpoint::plain(a), &mut Endpoint::plain(b), limits()));
        client.write_all(b"request").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"request");
        // The backend answers only after it saw EOF; the client still gets it, then EOF.
        backend.write_all(b"response").unwrap();
        backend.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"response");
        let stats = relay.join().unwrap();
        assert_eq!((stats.forwarded, stats.returned), (7, 8));
        assert!(stats.error.is_none() && !stats.timed_out);
    }

    #[test]
    fn close_timeout_cuts_a_half_closed_pipe() {
        let (a, client) = pair();
        let (b, _backend) = pair();
        let limits = CopyLimits {
            close: Duration::from_millis(200),
            lifetime: None,
        };
        let started = Instant::now();
        let relay =
            thread::spawn(move || copy(&mut Endpoint::plain(a), &mut Endpoint::plain(b), limits));
        client.shutdown(Shutdown::Write).unwrap();
        let stats = relay.join().unwrap();
        assert!(stats.timed_out);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    #[test]
    fn tls_half_close_sends_close_notify_and_keeps_reading() {
        let (server_cfg, client_cfg) = tls_configs();
        let (mut a, client_sock) = pair();
        let (b, mut backend) = pair();
        let client = thread::spawn(move || {
            let conn =
                ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap())
                    .unwrap();
            let mut tls = rustls::StreamOwned::new(conn, client_sock);
            tls.write_all(b"ping").unwrap();
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            let mut got = Vec::new();
            tls.read_to_end(&mut got).unwrap();
            got
        });
        let relay = thread::spawn(move || {
            let mut conn = Connection::Server(ServerConnection::new(server_cfg).unwrap());
            let cancel = AtomicBool::new(false);
            handshake(
                &mut a,
                &mut conn,
                Instant::now() + Duration::from_secs(5),
                &cancel,
            )
            .unwrap();
            copy(
                &mut Endpoint::tls(a, conn),
                &mut Endpoint::plain(b),
                limits(),
            )
        });
        let mut got = Vec::new();
        backend.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ping");
        backend.write_all(b"pong after EOF").unwrap();
        drop(backend);
        assert_eq!(client.join().unwrap(), b"pong after EOF");
        let stats = relay.join().unwrap();
        assert_eq!((stats.forwarded, stats.returned), (4, 14));
    }

    #[test]
    fn silent_peer_is_cut_at_the_handshake_deadline() {
        let (server_cfg, _) = tls_configs();
        let (mut a, _silent) = pair();
        let mut conn = Connection::Server(ServerConnection::new(server_cfg).unwrap());
        let started = Instant::now();
        let cancel = AtomicBool::new(false);
        let r = handshake(
            &mut a,
            &mut conn,
            Instant::now() + Duration::from_millis(300),
            &cancel,
        );
        assert!(matches!(r, Err(HandshakeError::Timeout)));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
