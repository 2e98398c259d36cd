//! The status endpoint (docs/behaviour.md §8.1-8.3, 8.6): it reports the lifecycle
//! (`lifecycle.rs`).
//!
//! The HTTP/1.1 responder serves `/_status`, `/_metrics*` and
//! `/_shutdown` over plain TCP, TLS or a UNIX socket; request heads are parsed by httparse.
//! Owns no proxy logic: it asks the [`BackendCheck`], the reloader (identity), the proxy
//! (connection count) and the signal controller (shutdown), and only renders metrics.
//!
//! A status client can never hold up the proxy: the server has its own threads, at most
//! [`MAX_CONNS`] of them (further connections are closed at once), and every read and write has
//! a deadline: the TLS handshake and each request head must arrive within `--connect-timeout`,
//! a request body within 30 s, the next request within the 120 s keep-alive.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rustls::{ClientConfig, ServerConnection, StreamOwned};

use crate::client::Client;

use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::Metrics;
use crate::net::{self, Addr, Listener, Stream};
use crate::proxy::Proxy;
use crate::reload::Reloader;
use crate::report::{self, HttpUrl};
use crate::signals::Controller;

/// Everything `/_status` reports besides the lifecycle.
pub struct StatusInfo {
    pub listen: String,
    pub target: String,
    pub hostname: Option<String>,
    /// What the Landlock sandbox enforces, as logged at startup.
    pub sandbox: String,
    pub connect_timeout: Duration,
    /// The `/_status` backend check.
    pub backend: BackendCheck,
    /// Whether the status port speaks TLS (with the served identity, re-fetched per
    /// connection so reloads apply) rather than plain HTTP.
    pub tls: bool,
    /// The served identity (subject, notAfter, extra fields) and the status port's TLS.
    pub reloader: Arc<Reloader>,
    /// `--enable-shutdown`: POST `/_shutdown` starts the drain through it.
    pub shutdown: Option<Arc<Controller>>,
    /// Counts the open connections.
    pub proxy: Arc<Proxy>,
    /// The registry behind `/_metrics*`.
    pub metrics: Arc<Metrics>,
}

/// The `/_status` backend check: dial `--target` (server), a full TLS dial (client), or a GET
/// of `--target-status` through the backend dialer, which must answer 200.
pub enum BackendCheck {
    Dial {
        target: Addr,
        timeout: Duration,
    },
    TargetStatus {
        url: HttpUrl,
        target: Addr,
        https: Option<Arc<ClientConfig>>,
        timeout: Duration,
    },
    TlsDial {
        client: Arc<Client>,
        proxy: Arc<Proxy>,
        timeout: Duration,
    },
}

impl BackendCheck {
    /// Runs the check now; `Err` carries the text for `backend_error`. Any thread.
    pub fn run(&self) -> Result<(), String> {
        match self {
            BackendCheck::Dial { target, timeout } => net::dial(target, Instant::now() + *timeout)
                .map(drop)
                .map_err(|e| e.to_string()),
            BackendCheck::TargetStatus {
                url,
                target,
                https,
                timeout,
            } => {
                let dial = || net::dial(target, Instant::now() + *timeout);
                report::target_status(url, dial, https.as_ref(), *timeout)
            }
            BackendCheck::TlsDial {
                client,
                proxy,
                timeout,
            } => client.dial(Instant::now() + *timeout, proxy).map(drop),
        }
    }
}

/// At most this many status connections are served at once; more are closed on accept.
pub const MAX_CONNS: usize = 32;
const HEAD_LIMIT: usize = 8192;
const KEEP_ALIVE: Duration = Duration::from_secs(120);
/// The whole request (head and body) must arrive within this (the reference's ReadTimeout).
const REQUEST_READ: Duration = Duration::from_secs(30);
/// A response must be taken by the client within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";

/// Serves the status endpoint on its own thread until the process exits.
pub fn serve(
    listener: Arc<Listener>,
    lifecycle: Arc<Lifecycle>,
    info: Arc<StatusInfo>,
) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("status".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            loop {
                let stream = match listener.accept() {
                    Ok(s) => s,
                    Err(_) if lifecycle.phase() == Phase::Stopping => return,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let (lifecycle, info, active) = (lifecycle.clone(), info.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        connection(stream, &lifecycle, &info);
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    // The connection was moved into the closure and dropped with it.
                    continue;
                }
            }
        })?;
    Ok(())
}

fn connection(stream: Stream, lifecycle: &Lifecycle, info: &StatusInfo) {
    // A second handle on the socket lets the request loop change its read timeout while the
    // stream itself is borrowed (possibly inside TLS).
    let Ok(handle) = stream.try_clone() else {
        return;
    };
    let _ = handle.set_write_timeout(Some(WRITE_TIMEOUT));
    let set_timeout = move |d: Duration| {
        // A zero timeout means "none" to the kernel: keep at least a millisecond.
        let _ = handle.set_read_timeout(Some(d.max(Duration::from_millis(1))));
    };
    let tls = match info.tls {
        true => info.reloader.status_tls(),
        false => None,
    };
    match (stream, tls) {
        (Stream::Tcp(tcp), Some(config)) => {
            let Ok(conn) = ServerConnection::new(config) else {
                return;
            };
            let mut tls = StreamOwned::new(conn, tcp);
            // The whole handshake runs under the header timeout, however slowly it trickles.
            let deadline = Instant::now() + info.connect_timeout;
            while tls.conn.is_handshaking() {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    return;
                };
                set_timeout(left);
                if tls.conn.complete_io(&mut tls.sock).is_err() {
                    return;
                }
            }
            http(&mut tls, &set_timeout, lifecycle, info);
        }
        (mut plain, _) => http(&mut plain, &set_timeout, lifecycle, info),
    }
}

/// Serves requests on one connection until it closes, errs or idles out.
fn http<S: Read + Write>(
    s: &mut S,
    set_timeout: &dyn Fn(Duration),
    lifecycle: &Lifecycle,
    info: &StatusInfo,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut first = true;
    loop {
        let idle = if first {
            info.connect_timeout
        } else {
            KEEP_ALIVE
        };
        first = false;
        let Some((head_len, started)) = read_head(s, &mut buf, set_timeout, idle, info) else {
            return;
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = req.parse(&buf[..head_len]) else {
            let _ = respond(
                s,
                400,
                "text/plain; charset=utf-8",
                b"400 Bad Request",
                false,
                true,
            );
            return;
        };
        let method = req.method.unwrap_or("GET").to_string();
        let path = req.path.unwrap_or("/").to_string();
        let close = req.version == Some(0)
            || req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
            });
        let body_len = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0);
        buf.drain(..head_len);
        let body_deadline = started + REQUEST_READ;
        if body_len > 64 * 1024 || !discard(s, &mut buf, body_len, set_timeout, body_deadline) {
            return;
        }
        let (code, ctype, body) = route(&method, &path, lifecycle, info);
        let sent = respond(s, code, ctype, body.as_bytes(), method == "HEAD", close);
        // The answer goes out before the shutdown starts, so the caller sees its 200.
        let shutdown = path.split('?').next() == Some("/_shutdown") && method == "POST";
        if let (true, Some(controller)) = (shutdown, &info.shutdown) {
            if lifecycle.phase() != Phase::Stopping {
                log::info!("shutdown was requested via status endpoint");
                controller.shutdown("shutdown request processing");
            }
        }
        if sent.is_err() || close {
            return;
        }
    }
}

/// Reads until a complete request head is buffered; returns its length and when the request
/// began. The first byte may take `idle`; from then on the head must be complete within
/// `--connect-timeout`, however slowly it trickles.
fn read_head<S: Read>(
    s: &mut S,
    buf: &mut Vec<u8>,
    set_timeout: &dyn Fn(Duration),
    idle: Duration,
    info: &StatusInfo,
) -> Option<(usize, Instant)> {
    let mut started = (!buf.is_empty()).then(Instant::now);
    let mut before_read = |buffered: bool| {
        let began = match started {
            Some(t) => t,
            None if buffered => *started.insert(Instant::now()),
            None => {
                set_timeout(idle);
                return true;
            }
        };
        match (began + info.connect_timeout).checked_duration_since(Instant::now()) {
            Some(left) => {
                set_timeout(left);
                true
            }
            None => false,
        }
    };
    let len = net::read_http_head(s, buf, HEAD_LIMIT, 1024, &mut before_read).ok()?;
    Some((len, started.unwrap_or_else(Instant::now)))
}

/// Drops a request body of `len` bytes (some may already be buffered) before `deadline`.
fn discard<S: Read>(
    s: &mut S,
    buf: &mut Vec<u8>,
    len: usize,
    set_timeout: &dyn Fn(Duration),
    deadline: Instant,
) -> bool {
    while buf.len() < len {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        set_timeout(left);
        let mut chunk = [0u8; 1024];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..len);
    true
}

fn route(
    method: &str,
    target: &str,
    lifecycle: &Lifecycle,
    info: &StatusInfo,
) -> (u16, &'static str, String) {
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/_status" => {
            let (ok, body) = status_json(lifecycle, info);
            (if ok { 200 } else { 503 }, "application/json", body)
        }
        "/_metrics" if query_value(target, "format") == Some("prometheus") => {
            (200, PROMETHEUS_TYPE, info.metrics.prometheus())
        }
        // The reference sets no content type for JSON metrics; Go sniffs it as text.
        "/_metrics" | "/_metrics/json" => (200, TEXT_TYPE, info.metrics.json()),
        "/_metrics/prometheus" => (200, PROMETHEUS_TYPE, info.metrics.prometheus()),
        "/_shutdown" if info.shutdown.is_some() => {
            if method != "POST" {
                return (405, TEXT_TYPE, String::new());
            }
            (200, TEXT_TYPE, String::new())
        }
        _ => (
            404,
            "text/plain; charset=utf-8",
            "404 page not found\n".to_string(),
        ),
    }
}

/// The first value of `key` in the request target's query string, undecoded.
fn query_value<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The `/_status` document with keys in the reference's order (docs/behaviour.md §8.3), then ours:
/// `sandbox`, the served certificate's subject and expiry, and the open connection count.
fn status_json(lifecycle: &Lifecycle, info: &StatusInfo) -> (bool, String) {
    let phase = lifecycle.phase();
    let listening = matches!(phase, Phase::Listening | Phase::Reloading);
    let backend = info.backend.run();
    let ok = listening && backend.is_ok();
    let word = |b: bool| if b { "ok" } else { "critical" };
    let mut out = format!(
        "{{\"ok\":{ok},\"status\":\"{}\",\"listen_address\":{},\"forward_address\":{},\"backend_ok\":{},\"backend_status\":\"{}\"",
        word(ok),
        json_str(&info.listen),
        json_str(&info.target),
        backend.is_ok(),
        word(backend.is_ok()),
    );
    if let Err(e) = &backend {
        out.push_str(&format!(",\"backend_error\":{}", json_str(e)));
    }
    let last_reload = lifecycle
        .last_reload()
        .map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339);
    out.push_str(&format!(
        ",\"time\":\"{}\",\"last_reload\":\"{last_reload}\"",
        rfc3339(SystemTime::now())
    ));
    if let Some(h) = &info.hostname {
        out.push_str(&format!(",\"hostname\":{}", json_str(h)));
    }
    out.push_str(&format!(
        ",\"message\":\"{}\",\"revision\":{},\"compiler\":{},\"sandbox\":{}",
        phase.as_str(),
        json_str(env!("CARGO_PKG_VERSION")),
        json_str(env!("GHOSTUNNEL_TOOLCHAIN")),
        json_str(&info.sandbox),
    ));
    let identity = info.reloader.identity();
    if !identity.subject.is_empty() {
        out.push_str(&format!(
            ",\"certificate_subject\":{}",
            json_str(&identity.subject)
        ));
    }
    if let Some(t) = identity.not_after {
        out.push_str(&format!(",\"certificate_not_after\":\"{}\"", rfc3339(t)));
    }
    for (key, value) in info.reloader.status_fields() {
        out.push_str(&format!(",{}:{}", json_str(key), json_str(&value)));
    }
    out.push_str(&format!(
        ",\"open_connections\":{}}}",
        info.proxy.open_connections()
    ));
    (ok, out)
}

fn respond<S: Write>(
    s: &mut S,
    code: u16,
    ctype: &str,
    body: &[u8],
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    s.write_all(&out)?;
    s.flush()
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// RFC 3339 with nanoseconds (trailing zeros trimmed) in the local zone, `Z` for UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let tm = crate::logging::LocalTime::at(t);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        tm.year, tm.month, tm.day, tm.hour, tm.min, tm.sec
    );
    if tm.nanos != 0 {
        out.push_str(format!(".{:09}", tm.nanos).trim_end_matches('0'));
    }
    let off = tm.utc_offset;
    if off == 0 {
        out.push('Z');
    } else {
        let sign = if off < 0 { '-' } else { '+' };
        let off = off.abs();
        out.push_str(&format!("{sign}{:02}:{:02}", off / 3600, off % 3600 / 60));
    }
    out
}

/// The host name, read once at startup (docs/behaviour.md §8.3 omits the key when it cannot be
/// read).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
