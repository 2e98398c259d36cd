//! The process logger (docs/behaviour.md §13): `[<pid>] YYYY/MM/DD hh:mm:ss.µµµµµµ <message>` lines
//! on stdout or to the local syslog socket, filtered by the `--quiet` classes.
//!
//! Call sites pick a class with the log target: [`CONNS`], [`CONN_ERRS`], [`HANDSHAKE_ERRS`];
//! anything else is suppressed only by `--quiet=all`. They also pick a level: `error!` for
//! failures that need the operator (startup, dial, reload, PROXY header), `warn!` for failures
//! a peer or the environment caused (handshakes, copy errors, degraded sandbox), `info!` for
//! routine lines. The level never changes the text; when stdout is connected to the journal
//! (`JOURNAL_STREAM`), it becomes an sd-daemon(3) `<N>` prefix in place of our pid and
//! timestamp (journald records both itself), so `journalctl -p warning` works. `--syslog`
//! sends every line at severity info, as the reference does (docs/behaviour.md §13.1): syslog
//! filters written for it keep matching.

use std::io::Write;
use std::os::fd::AsFd;

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
    /// `[<pid>] <timestamp> <message>`.
    Stdout,
    /// stdout is a journal stream: `<N><message>`.
    Journal,
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
        let stdout = |line: String| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        let plain = || format!("[{}] {} {}", self.pid, timestamp(), record.args());
        match &self.sink {
            Sink::Stdout => stdout(plain()),
            Sink::Journal => stdout(format!("<{}>{}", severity(record.level()), record.args())),
            Sink::Syslog(s) => s.send(&plain()),
        }
    }

    fn flush(&self) {}
}

/// The syslog severity of a level: sd-daemon(3)'s `SD_ERR` (3), `SD_WARNING` (4), `SD_INFO` (6),
/// `SD_DEBUG` (7).
fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Whether stdout is the stream systemd connected to the journal: `JOURNAL_STREAM` holds the
/// `<dev>:<inode>` of that stream (for stdout or stderr, whichever goes to the journal), so it
/// must match the file stdout actually is, not merely be set (a child of a journald-logged
/// process inherits the variable with its own stdout elsewhere).
fn stdout_is_journal() -> bool {
    is_journal(std::io::stdout().as_fd())
}

/// The prefix for an `error: …` line on stderr: `<3>` when stderr is the journal stream (so
/// a startup failure shows under `journalctl -p err`), otherwise nothing.
pub fn stderr_error_prefix() -> &'static str {
    if is_journal(std::io::stderr().as_fd()) {
        "<3>"
    } else {
        ""
    }
}

fn is_journal(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = fd.try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Only our own lines: dependencies (rustls) log under their crate names.
fn is_ours(target: &str) -> bool {
    target.starts_with("ghostunnel") || [CONNS, CONN_ERRS, HANDSHAKE_ERRS].contains(&target)
}

/// Installs the logger. Fails only when `--syslog` cannot reach a syslog socket.
pub fn init(quiet: Quiet, syslog: bool) -> Result<(), String> {
    let sink = if syslog {
        Sink::Syslog(Syslog::connect()?)
    } else if stdout_is_journal() {
        Sink::Journal
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

/// Broken-down local time, through the C library's zone handling: the one `localtime_r` call
/// of the crate (log lines, syslog, `/_status` times).
pub struct LocalTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub micros: u32,
    pub nanos: u32,
    /// Seconds east of UTC.
    pub utc_offset: i64,
}

impl LocalTime {
    pub fn now() -> LocalTime {
        LocalTime::at(std::time::SystemTime::now())
    }

    /// `t` in the local zone; times before 1970 count as the epoch.
    pub fn at(t: std::time::SystemTime) -> LocalTime {
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs() as libc::time_t;
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
            micros: since.subsec_micros(),
            nanos: since.subsec_nanos(),
            utc_offset: tm.tm_gmtoff,
        }
    }
}

/// A connection to the local syslog socket (docs/behaviour.md §13.1).
struct Syslog {
    socket: std::sync::Mutex<SyslogSocket>,
    tag: String,
}

enum SyslogSocket {
    Datagram(std::os::unix::net::UnixDatagram),
    Stream(std::os::unix::net::UnixStream),
}

impl SyslogSocket {
    fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        match self {
            SyslogSocket::Datagram(d) => d.send(msg).map(drop),
            SyslogSocket::Stream(s) => s.write_all(msg),
        }
    }
}

impl Syslog {
    const PATHS: [&'static str; 3] = ["/dev/log", "/var/run/syslog", "/var/run/log"];

    fn connect() -> Result<Syslog, String> {
        let tag = std::env::args()
            .next()
            .unwrap_or_else(|| "ghostunnel".to_string());
        Ok(Syslog {
            socket: std::sync::Mutex::new(Self::open()?),
            tag,
        })
    }

    /// The first syslog socket that accepts a connection: each path as datagram, then stream.
    fn open() -> Result<SyslogSocket, String> {
        for path in Self::PATHS {
            if let Ok(d) = std::os::unix::net::UnixDatagram::unbound() {
                if d.connect(path).is_ok() {
                    return Ok(SyslogSocket::Datagram(d));
                }
            }
            if let Ok(s) = std::os::unix::net::UnixStream::connect(path) {
                return Ok(SyslogSocket::Stream(s));
            }
        }
        Err("Unix syslog delivery error".to_string())
    }

    /// Sends `line` with facility daemon, severity info (`<30>`), as the reference sends every
    /// line.
    fn send(&self, line: &str) {
        const INFO: u8 = 6;
        const DAEMON: u8 = 3 << 3;
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let t = LocalTime::now();
        let msg = format!(
            "<{}>{} {:2} {:02}:{:02}:{:02} {}[{}]: {}\n",
            DAEMON + INFO,
            MONTHS[(t.month as usize).saturating_sub(1) % 12],
            t.day,
            t.hour,
            t.min,
            t.sec,
            self.tag,
            std::process::id(),
            line
        );
        let mut socket = crate::sync::lock(&self.socket);
        // A restarted syslog daemon leaves our socket dead: reconnect once and resend.
        if socket.send(msg.as_bytes()).is_err() {
            if let Ok(fresh) = Self::open() {
                *socket = fresh;
                let _ = socket.send(msg.as_bytes());
            }
        }
    }
}
