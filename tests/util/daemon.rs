//! Spawning the real `ghostunnel` binary: readiness from the `listening for connections on`
//! log line, captured stdout/stderr, bounded waits, kill and reap on drop.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ghostunnel");
pub const READY_LINE: &str = "listening for connections on";
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Picks a free TCP port on 127.0.0.1 by binding port 0 and dropping the socket.
///
/// ghostunnel listens with SO_REUSEPORT, so two daemons handed the same port would silently
/// share it. A port is therefore handed out only with an exclusive lock on
/// `$TMPDIR/ghostunnel-test-ports/<port>`, held until this process exits: no other test, in
/// this process (cargo test's threads) or another (nextest runs each test in its own), gets
/// it meanwhile. [`Cmd::start`] also checks that the daemon is alone on its port.
pub fn free_port() -> u16 {
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("ghostunnel-test-ports");
    std::fs::create_dir_all(&dir).expect("port lock directory");
    for _ in 0..1000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind 127.0.0.1:0")
            .local_addr()
            .unwrap()
            .port();
        let lock = File::create(dir.join(port.to_string())).expect("port lock file");
        // flock(2) locks conflict between open files, even within one process.
        // SAFETY: flock(2) on a descriptor this function owns and keeps open.
        let locked = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } == 0;
        if locked {
            HELD.lock().unwrap().push(lock);
            return port;
        }
    }
    panic!("no free port after 1000 tries");
}

/// How many sockets listen on TCP `port` (any address, IPv4 and IPv6), from /proc/net.
pub fn listeners_on(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // `sl local_address rem_address st ...`; 0A is LISTEN.
            cols.len() > 3
                && cols[3] == "0A"
                && cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

/// Every environment variable the binary reads, cleared for each run so that the host's
/// environment cannot change a test. The documented ones come from the man page's ENVIRONMENT
/// section, which is generated from the flag table's fallbacks plus the variables read besides
/// them; any inherited variable with one of their prefixes goes too, and so do the glibc
/// tunables with which the binary re-executes itself and its marker.
fn binary_env_vars() -> &'static [String] {
    static VARS: OnceLock<Vec<String>> = OnceLock::new();
    VARS.get_or_init(|| {
        let out = Command::new(BIN)
            .arg("--help-man")
            .env_clear()
            .output()
            .expect("run --help-man");
        let man = String::from_utf8_lossy(&out.stdout);
        let section = man
            .split("\n.SH ENVIRONMENT\n")
            .nth(1)
            .and_then(|s| s.split("\n.SH ").next())
            .expect("the man page has an ENVIRONMENT section");
        let mut vars: Vec<String> = section
            .lines()
            .filter_map(|l| l.strip_prefix("\\fB")?.strip_suffix("\\fR"))
            .filter(|names| {
                names
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || "0123456789_, ".contains(c))
            })
            .flat_map(|names| names.split(", ").map(str::to_string))
            .collect();
        for known in [
            "KEYSTORE_PATH",
            "PKCS11_PIN",
            "SSL_CERT_DIR",
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
        ] {
            assert!(
                vars.iter().any(|v| v == known),
                "{known} not in the man page: {vars:?}"
            );
        }
        let prefixes = [
            "GHOSTUNNEL_",
            "PKCS11_",
            "SSL_CERT_",
            "LISTEN_",
            "WATCHDOG_",
        ];
        vars.extend(
            std::env::vars_os()
                .filter_map(|(k, _)| k.into_string().ok())
                .filter(|k| prefixes.iter().any(|p| k.starts_with(p))),
        );
        vars.extend(["GLIBC_TUNABLES", "GHOSTUNNEL_MALLOC_TUNED"].map(String::from));
        vars
    })
}

/// `localhost:<free port>` plus the socket address to connect to.
pub fn free_addr() -> (String, SocketAddr) {
    let port = free_port();
    (
        format!("127.0.0.1:{port}"),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    )
}

#[derive(Default)]
struct Buf {
    data: Mutex<Vec<u8>>,
    cond: Condvar,
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data.lock().unwrap()).into_owned()
    }
}

fn pump(mut r: impl Read + Send + 'static, buf: Arc<Buf>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.data.lock().unwrap().extend_from_slice(&chunk[..n]);
                    buf.cond.notify_all();
                }
            }
        }
        buf.cond.notify_all();
    })
}

/// Builder for a ghostunnel invocation.
pub struct Cmd {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    /// A program (and its arguments) that runs the binary: `<wrapper…> BIN <args…>`.
    wrapper: Vec<OsString>,
}

impl Cmd {
    pub fn new(mode: &str) -> Cmd {
        Cmd {
            args: vec![mode.into()],
            envs: vec![],
            wrapper: vec![],
        }
    }

    /// No subcommand; args are given entirely by the caller.
    pub fn bare() -> Cmd {
        Cmd {
            args: vec![],
            envs: vec![],
            wrapper: vec![],
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, it: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(it.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Cmd {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Runs the binary through `wrapper` (e.g. `unshare -m …`), which must exec it.
    pub fn wrapped<I, S>(mut self, wrapper: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    fn command(&self) -> Command {
        let mut c = match self.wrapper.split_first() {
            None => Command::new(BIN),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
        };
        // Keep the tests independent of the host's environment.
        for var in binary_env_vars() {
            c.env_remove(var);
        }
        c.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.envs(self.envs.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn cmdline(&self) -> String {
        let mut s = BIN.to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Starts the daemon without waiting for readiness.
    pub fn start(self) -> Daemon {
        let mut child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.cmdline()));
        let stdout = Arc::new(Buf::default());
        let stderr = Arc::new(Buf::default());
        let t1 = pump(child.stdout.take().unwrap(), stdout.clone());
        let t2 = pump(child.stderr.take().unwrap(), stderr.clone());
        Daemon {
            child,
            cmdline: self.cmdline(),
            stdout,
            stderr,
            pumps: vec![t1, t2],
            status: None,
        }
    }

    /// Starts the daemon and waits (bounded) for `listening for connections on`.
    pub fn spawn(self) -> Daemon {
        let mut d = self.start();
        d.wait_ready();
        d
    }

    /// Runs to completion (bounded by `timeout`, else panics) and returns the outcome.
    pub fn run(self, timeout: Duration) -> Outcome {
        let mut d = self.start();
        let status = d.wait_exit(timeout);
        d.join_pumps();
        Outcome {
            cmdline: d.cmdline.clone(),
            pid: d.pid(),
            status,
            stdout: d.stdout(),
            stderr: d.stderr(),
        }
    }
}

/// A finished run.
pub struct Outcome {
    pub cmdline: String,
    pub pid: i32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn describe(&self) -> String {
        format!(
            "\ncommand: {}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
            self.cmdline, self.status, self.stdout, self.stderr
        )
    }

    pub fn assert_code(&self, code: i32) -> &Outcome {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected exit status{}",
            self.describe()
        );
        self
    }

    pub fn assert_stderr_contains(&self, s: &str) -> &Outcome {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}{}",
            self.describe()
        );
        self
    }

    pub fn assert_stdout_contains(&self, s: &str) -> &Outcome {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}{}",
            self.describe()
        );
        self
    }

    pub fn assert_stdout_lacks(&self, s: &str) -> &Outcome {
        assert!(
            !self.stdout.contains(s),
            "stdout unexpectedly contains {s:?}{}",
            self.describe()
        );
        self
    }
}

/// A running ghostunnel process.
pub struct Daemon {
    child: Child,
    cmdline: String,
    stdout: Arc<Buf>,
    stderr: Arc<Buf>,
    pumps: Vec<thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    pub fn describe(&self) -> String {
        format!(
            "\ncommand: {}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
            self.cmdline,
            self.status,
            self.stdout(),
            self.stderr()
        )
    }

    fn poll_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if self.stdout().contains(READY_LINE) {
                self.assert_alone_on_port();
                return;
            }
            if self.poll_status().is_some() {
                self.join_pumps();
                panic!("ghostunnel exited before becoming ready{}", self.describe());
            }
            if Instant::now() > deadline {
                panic!(
                    "ghostunnel not ready within {STARTUP_TIMEOUT:?}{}",
                    self.describe()
                );
            }
            self.wait_output(Duration::from_millis(50));
        }
    }

    /// A TCP listener must own its port: SO_REUSEPORT would let a second socket on the same
    /// port (a leftover daemon, or a port handed out twice) silently take half the connections.
    fn assert_alone_on_port(&self) {
        let out = self.stdout();
        let Some(line) = out.lines().find(|l| l.contains(READY_LINE)) else {
            return;
        };
        let addr = line.rsplit(READY_LINE).next().unwrap_or_default().trim();
        if addr.contains("unix:") || addr.contains("systemd:") || addr.contains("launchd:") {
            return;
        }
        let Some(port) = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
        else {
            return;
        };
        let n = listeners_on(port);
        assert_eq!(n, 1, "{n} sockets listen on port {port}{}", self.describe());
    }

    fn wait_output(&self, d: Duration) {
        let g = self.stdout.data.lock().unwrap();
        let _ = self.stdout.cond.wait_timeout(g, d).unwrap();
    }

    /// Waits until stdout (the log) contains `needle`; panics after `timeout`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout();
            if out.contains(needle) {
                return out;
            }
            if Instant::now() > deadline {
                panic!(
                    "log line {needle:?} not seen within {timeout:?}{}",
                    self.describe()
                );
            }
            self.wait_output(Duration::from_millis(50));
        }
    }

    /// Counts log lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.stdout().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `count_log(needle) >= n`.
    pub fn wait_log_count(&mut self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count_log(needle) < n {
            if Instant::now() > deadline {
                panic!(
                    "expected {n} log lines containing {needle:?} within {timeout:?}{}",
                    self.describe()
                );
            }
            self.wait_output(Duration::from_millis(50));
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits for exit, panicking (after killing) if it takes longer than `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.poll_status() {
                self.join_pumps();
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "ghostunnel did not exit within {timeout:?}{}",
                    self.describe()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns the exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.poll_status()
    }

    fn join_pumps(&mut self) {
        for t in self.pumps.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.poll_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `ghostunnel server` listening on a free port in front of `target`, with the PKI's
/// server keystore and CA, plus `extra` flags. Returns the daemon and the address to dial.
pub fn start_server(pki: &super::Pki, target: &str, extra: &[&str]) -> (Daemon, SocketAddr) {
    let (listen, addr) = free_addr();
    let d = Cmd::new("server")
        .args(["--listen", &listen, "--target", target])
        .args(pki.server_cred_args())
        .args(extra)
        .spawn();
    (d, addr)
}

/// Starts `ghostunnel client` listening on a free port, dialing `target` with the PKI's
/// client keystore and CA, plus `extra` flags.
pub fn start_client(pki: &super::Pki, target: &str, extra: &[&str]) -> (Daemon, SocketAddr) {
    let (listen, addr) = free_addr();
    let d = Cmd::new("client")
        .args(["--listen", &listen, "--target", target])
        .args(pki.client_cred_args())
        .args(extra)
        .spawn();
    (d, addr)
}

/// Checks the logger prefix of docs/behaviour.md §13.1: `[<pid>] YYYY/MM/DD hh:mm:ss.µµµµµµ `.
/// Returns the message part.
pub fn log_message(line: &str, pid: i32) -> Option<&str> {
    let rest = line.strip_prefix(&format!("[{pid}] "))?;
    let b = rest.as_bytes();
    // "YYYY/MM/DD hh:mm:ss.uuuuuu " is 27 bytes.
    if b.len() < 27 {
        return None;
    }
    let shape = "dddd/dd/dd dd:dd:dd.dddddd ";
    for (c, s) in b.iter().zip(shape.bytes()) {
        let ok = if s == b'd' {
            c.is_ascii_digit()
        } else {
            *c == s
        };
        if !ok {
            return None;
        }
    }
    Some(&rest[27..])
}

/// The log messages (prefix stripped) of lines whose message starts with `prefix`.
pub fn log_messages(stdout: &str, pid: i32, prefix: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| log_message(l, pid))
        .filter(|m| m.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Client mode refused a connection: the plain client's connection on `addr` is closed without
/// any data, and `error on dial: <reason>` is logged.
pub fn assert_dial_fails(d: &mut Daemon, addr: SocketAddr, reason: &str) {
    use std::io::Write;
    let mut s = crate::util::tcp_connect(addr);
    let _ = s.write_all(b"hello");
    let (data, _) = crate::util::read_to_end_lossy(&mut s);
    assert!(
        data.is_empty(),
        "got data {data:?} through a rejected tunnel{}",
        d.describe()
    );
    d.wait_log(&format!("error on dial: {reason}"), Duration::from_secs(5));
}
