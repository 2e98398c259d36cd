//! The process logger (SPEC 13): `[<pid>] YYYY/MM/DD hh:mm:ss.µµµµµµ <message>` lines on
//! stdout or to the local syslog socket, filtered by the `--quiet` classes.
//!
//! Call sites pick a class with the log target: [`CONNS`], [`CONN_ERRS`], [`HANDSHAKE_ERRS`];
//! anything else is suppressed only by `--quiet=all`.

use std::io::Write;

use crate::config::Quiet;

/// `opening pipe` / `closed pipe` lines.
pub const CONNS: &str = "conns";
/// `error accepting connection`, `error on dial`, `error during copy`, PROXY header errors.
pub const CONN_ERRS: &str = "conn-errs";
/// `error on TLS handshake from …`.
pub const HANDSHAKE_ERRS: &str = "handshake-errs";

struct Logger {
    quiet: Quiet,
    pid: u32,
    sink: Sink,
}

enum Sink {
    Stdout,
    Syslog(Syslog),
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let q = &self.quiet;
        !(q.all
            || (q.conns && metadata.target() == CONNS)
            || (q.conn_errs && metadata.target() == CONN_ERRS)
            || (q.handshake_errs && metadata.target() == HANDSHAKE_ERRS))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) || !is_ours(record.target()) {
            return;
        }
        let line = format!("[{}] {} {}", self.pid, timestamp(), record.args());
        match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Sink::Syslog(s) => s.send(&line),
        }
    }

    fn flush(&self) {}
}

/// Only our own lines: dependencies (rustls) log under their crate names.
fn is_ours(target: &str) -> bool {
    target.starts_with("ghostunnel") || [CONNS, CONN_ERRS, HANDSHAKE_ERRS].contains(&target)
}

/// Installs the logger. Fails only when `--syslog` cannot reach a syslog socket.
pub fn init(quiet: Quiet, syslog: bool) -> Result<(), String> {
    let sink = if syslog {
        Sink::Syslog(Syslog::connect()?)
    } else {
        Sink::Stdout
    };
    let logger = Logger {
        quiet,
        pid: std::process::id(),
        sink,
    };
    log::set_boxed_logger(Box::new(logger)).map_err(|e| e.to_string())?;
    log::set_max_level(log::LevelFilter::Info);
    Ok(())
}

/// Local time as `YYYY/MM/DD hh:mm:ss.µµµµµµ`.
fn timestamp() -> String {
    let tm = LocalTime::now();
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:06}",
        tm.year, tm.month, tm.day, tm.hour, tm.min, tm.sec, tm.micros
    )
}

/// Broken-down local time, through the C library's zone handling.
pub struct LocalTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub micros: u32,
}

impl LocalTime {
    pub fn now() -> LocalTime {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs() as libc::time_t;
        // SAFETY: localtime_r writes only into the zeroed `tm` we own; `secs` outlives the call.
        #[allow(unsafe_code)]
        let tm = unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            libc::localtime_r(&secs, &mut tm);
            tm
        };
        LocalTime {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            min: tm.tm_min as u32,
            sec: tm.tm_sec as u32,
            micros: now.subsec_micros(),
        }
    }
}

/// A connection to the local syslog socket (SPEC 13.1).
struct Syslog {
    socket: std::sync::Mutex<SyslogSocket>,
    tag: String,
}

enum SyslogSocket {
    Datagram(std::os::unix::net::UnixDatagram),
    Stream(std::os::unix::net::UnixStream),
}

impl Syslog {
    const PATHS: [&'static str; 3] = ["/dev/log", "/var/run/syslog", "/var/run/log"];

    fn connect() -> Result<Syslog, String> {
        let tag = std::env::args()
            .next()
            .unwrap_or_else(|| "ghostunnel".to_string());
        for path in Self::PATHS {
            if let Ok(d) = std::os::unix::net::UnixDatagram::unbound() {
                if d.connect(path).is_ok() {
                    return Ok(Syslog {
                        socket: std::sync::Mutex::new(SyslogSocket::Datagram(d)),
                        tag,
                    });
                }
            }
            if let Ok(s) = std::os::unix::net::UnixStream::connect(path) {
                return Ok(Syslog {
                    socket: std::sync::Mutex::new(SyslogSocket::Stream(s)),
                    tag,
                });
            }
        }
        Err("Unix syslog delivery error".to_string())
    }

    fn send(&self, line: &str) {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let t = LocalTime::now();
        let msg = format!(
            "<30>{} {:2} {:02}:{:02}:{:02} {}[{}]: {}\n",
            MONTHS[(t.month as usize).saturating_sub(1) % 12],
            t.day,
            t.hour,
            t.min,
            t.sec,
            self.tag,
            std::process::id(),
            line
        );
        let Ok(mut socket) = self.socket.lock() else {
            return;
        };
        let _ = match &mut *socket {
            SyslogSocket::Datagram(d) => d.send(msg.as_bytes()).map(drop),
            SyslogSocket::Stream(s) => s.write_all(msg.as_bytes()),
        };
    }
}
