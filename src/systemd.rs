//! The systemd protocols without libsystemd (docs/behaviour.md §10): readiness/reload/stop
//! notifications and watchdog pings over `NOTIFY_SOCKET`, and socket activation through
//! `LISTEN_FDS`.
//!
//! Owns `NOTIFY_SOCKET`, `WATCHDOG_*` and `LISTEN_*`; never touches TLS.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
const WATCHDOG_PID: &str = "WATCHDOG_PID";
const LISTEN_PID: &str = "LISTEN_PID";
const LISTEN_FDS: &str = "LISTEN_FDS";
const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
const SD_LISTEN_FDS_START: RawFd = 3;

/// The sd_notify sender. Connected once, at startup and before the sandbox (an abstract socket
/// cannot be reached from inside a scoped Landlock domain, a connected one still can). Shared
/// between threads; a missing `NOTIFY_SOCKET` makes every call a no-op.
pub struct Notifier {
    socket: Option<UnixDatagram>,
    /// `NOTIFY_SOCKET` names an abstract socket (`@name`).
    is_abstract: bool,
    warned: AtomicBool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let path = std::env::var(NOTIFY_SOCKET).ok().filter(|s| !s.is_empty());
        let is_abstract = path.as_deref().is_some_and(|p| p.starts_with('@'));
        let socket = path.and_then(|path| {
            let connected = connect(&path);
            if let Err(e) = &connected {
                log::warn!("warning: cannot reach NOTIFY_SOCKET {path}: {e}");
            }
            connected.ok()
        });
        Notifier {
            socket,
            is_abstract,
            warned: AtomicBool::new(false),
        }
    }

    /// Whether the notify socket is abstract: the sandbox must then leave abstract UNIX
    /// sockets reachable.
    pub fn is_abstract(&self) -> bool {
        self.is_abstract
    }

    /// Sends one datagram. A failure is logged once, never fatal.
    pub fn send(&self, message: &str) {
        let Some(socket) = &self.socket else { return };
        if let Err(e) = socket.send(message.as_bytes()) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!("warning: sd_notify failed: {e}");
            }
        }
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// `RELOADING=1` with the `CLOCK_MONOTONIC` time that `Type=notify-reload` requires.
    pub fn reloading(&self) {
        match monotonic_usec() {
            Some(usec) => self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")),
            None => self.send("RELOADING=1"),
        }
    }
}

fn connect(path: &str) -> std::io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        Some(name) => socket.connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?,
        None => socket.connect(path)?,
    }
    Ok(socket)
}

fn monotonic_usec() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
}

/// The watchdog ping period: half of `WATCHDOG_USEC`, if it is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let var = |n| std::env::var(n).ok();
    watchdog_period(
        var(WATCHDOG_USEC).as_deref(),
        var(WATCHDOG_PID).as_deref(),
        std::process::id(),
    )
}

fn watchdog_period(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec
        .filter(|s| !s.is_empty())?
        .parse()
        .ok()
        .filter(|&u| u > 0)?;
    if let Some(pid) = pid.filter(|s| !s.is_empty()) {
        if pid.parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// What the watchdog asks before each ping.
pub trait Liveness: Send + Sync {
    /// Whether the process is healthy, answered within `within`.
    fn alive(&self, within: Duration) -> bool;
}

/// Starts the watchdog thread: `WATCHDOG=1` every `period` while `alive` says the process is
/// healthy; a wedged process stops pinging and systemd restarts it.
pub fn start_watchdog(
    notifier: std::sync::Arc<Notifier>,
    period: Duration,
    alive: std::sync::Arc<dyn Liveness>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("watchdog".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                if alive.alive(period) {
                    notifier.watchdog();
                }
            }
        })?;
    Ok(())
}

/// A listening socket inherited from systemd.
#[derive(Debug)]
pub enum ActivatedSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// The inherited sockets, by name, read once from the environment.
static ACTIVATED: Mutex<Option<Inherited>> = Mutex::new(None);

/// What systemd passed: listening stream sockets by name, and the names of other fds.
#[derive(Default)]
struct Inherited {
    listeners: HashMap<String, Vec<OwnedFd>>,
    unusable: Vec<String>,
}

/// Takes the inherited listening socket named `name` (`LISTEN_FDNAMES`; unnamed ones are
/// `LISTEN_FD_<fd>`). The environment is read and cleared on the first call, which must happen
/// before any thread starts.
pub fn take_listener(name: &str) -> Result<ActivatedSocket, String> {
    let mut cache = crate::sync::lock(&ACTIVATED);
    let inherited = cache.get_or_insert_with(read_listen_fds);
    if inherited.unusable.iter().any(|n| n == name) && !inherited.listeners.contains_key(name) {
        return Err(format!(
            "socket {name} inherited from systemd is not a listening stream socket (use ListenStream=)"
        ));
    }
    let sockets = &mut inherited.listeners;
    let n = sockets.get(name).map_or(0, Vec::len);
    let fd = match (n, sockets.remove(name).and_then(|v| v.into_iter().next())) {
        (1, Some(fd)) => fd,
        (0, _) | (_, None) => {
            return Err(format!(
                "expected listener with name {name}, but found none"
            ));
        }
        (n, _) => {
            return Err(format!(
                "expected exactly 1 listening socket configured in systemd for name {name}, found {n}"
            ));
        }
    };
    let socket = socket2::Socket::from(fd);
    match socket.domain().map_err(|e| e.to_string())? {
        socket2::Domain::UNIX => Ok(ActivatedSocket::Unix(socket.into())),
        d if d == socket2::Domain::IPV4 || d == socket2::Domain::IPV6 => {
            Ok(ActivatedSocket::Tcp(socket.into()))
        }
        _ => Err(format!(
            "socket {name} inherited from systemd is neither TCP nor UNIX"
        )),
    }
}

fn read_listen_fds() -> Inherited {
    let var = |n| std::env::var(n).ok();
    let (pid, fds, names) = (var(LISTEN_PID), var(LISTEN_FDS), var(LISTEN_FDNAMES));
    // SAFETY: called from the main thread during startup, before any other thread exists
    // (take_listener's contract), so nothing reads the environment concurrently.
    #[allow(unsafe_code)]
    unsafe {
        std::env::remove_var(LISTEN_PID);
        std::env::remove_var(LISTEN_FDS);
        std::env::remove_var(LISTEN_FDNAMES);
    }
    let mut out = Inherited::default();
    for (fd, name) in plan_fds(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    ) {
        // SAFETY: systemd passed us fds 3..3+LISTEN_FDS (LISTEN_PID matched); each is adopted
        // exactly once here.
        #[allow(unsafe_code)]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let socket = socket2::Socket::from(owned);
        let _ = socket.set_cloexec(true);
        let listening = socket.r#type().ok() == Some(socket2::Type::STREAM)
            && socket.is_listener().unwrap_or(false);
        if listening {
            out.listeners
                .entry(name)
                .or_default()
                .push(OwnedFd::from(socket));
        } else {
            // Not a listening stream socket: unusable, and named in the error if asked for.
            out.unusable.push(name);
            std::mem::forget(socket);
        }
    }
    out
}

/// Which fds belong to us and their names (pure, for tests).
fn plan_fds(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Vec<(RawFd, String)> {
    if pid.and_then(|p| p.parse::<u32>().ok()) != Some(me) {
        return vec![];
    }
    let Some(n) = fds.and_then(|f| f.parse::<i32>().ok()).filter(|&n| n > 0) else {
        return vec![];
    };
    let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
    (0..n)
        .map(|i| {
            let fd = SD_LISTEN_FDS_START + i;
            let name = names
                .get(i as usize)
                .filter(|s| !s.is_empty())
                .map_or_else(|| format!("LISTEN_FD_{fd}"), |s| s.to_string());
            (fd, name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_fds_are_ours_only_with_our_pid() {
        assert_eq!(
            plan_fds(Some("7"), Some("2"), Some("gt:st"), 7),
            vec![(3, "gt".into()), (4, "st".into())]
        );
        assert_eq!(
            plan_fds(Some("7"), Some("2"), Some("gt"), 7),
            vec![(3, "gt".into()), (4, "LISTEN_FD_4".into())]
        );
        assert!(plan_fds(Some("8"), Some("2"), None, 7).is_empty());
        assert!(plan_fds(Some("7"), Some("0"), None, 7).is_empty());
        assert!(plan_fds(None, Some("1"), None, 7).is_empty());
    }

    #[test]
    fn watchdog_period_is_half_and_honours_the_pid() {
        assert_eq!(
            watchdog_period(Some("1000000"), None, 5),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            watchdog_period(Some("1000000"), Some("5"), 5),
            Some(Duration::from_millis(500))
        );
        assert_eq!(watchdog_period(Some("1000000"), Some("6"), 5), None);
        assert_eq!(watchdog_period(Some("x"), None, 5), None);
        assert_eq!(watchdog_period(Some("0"), None, 5), None);
        assert_eq!(watchdog_period(None, None, 5), None);
    }
}
