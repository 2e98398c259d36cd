//! Timeouts, concurrency limits, signals and graceful shutdown (docs/behaviour.md §7.1-7.3, 12,
//! 13.1).

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::util::*;

const LOG_WAIT: Duration = Duration::from_secs(5);

/// Every log line carries `[<pid>] YYYY/MM/DD hh:mm:ss.µµµµµµ `; startup logs the mode,
/// the certificate source, the target and the listen address (docs/behaviour.md §1, §13.1).
#[test]
fn startup_log_lines() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (listen, _) = free_addr();
    let target = backend.target();
    let d = Cmd::new("server")
        .args(["--listen", &listen, "--target", &target])
        .args(pki.server_cred_args())
        .arg("--allow-all")
        .spawn();
    let out = d.stdout();
    let msgs: Vec<&str> = out
        .lines()
        .map(|l| {
            log_message(l, d.pid())
                .unwrap_or_else(|| panic!("bad log prefix in {l:?}{}", d.describe()))
        })
        .collect();
    let pos = |m: &str| {
        msgs.iter()
            .position(|x| *x == m)
            .unwrap_or_else(|| panic!("log lacks {m:?}{}", d.describe()))
    };
    let a = pos("starting ghostunnel in server mode");
    let b = pos("using keystore file on disk as certificate source");
    let c = pos(&format!("using target address {target}"));
    let e = pos(&format!("listening for connections on {listen}"));
    assert!(a < b && b < c && c < e, "startup order{}", d.describe());
}

/// A TCP client that connects and never sends a ClientHello is cut at
/// `--connect-timeout`, while another client is served meanwhile.
#[test]
fn slow_handshake_is_cut_at_connect_timeout() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &["--allow-cn=client", "--connect-timeout=1s"],
    );
    let mut idle = tcp_connect(addr);
    let port = idle.local_addr().unwrap().port();
    let started = Instant::now();
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    try_echo(addr, cfg, b"meanwhile")
        .unwrap_or_else(|e| panic!("second client starved: {e}{}", d.describe()));
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let r = idle.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(r, Ok(0))
            || matches!(&r, Err(e) if e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut),
        "idle client not disconnected (read: {r:?}){}",
        d.describe()
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(1900),
        "idle client cut after {waited:?}, expected about 1s"
    );
    d.wait_log(
        &format!("error on TLS handshake from 127.0.0.1:{port}: "),
        LOG_WAIT,
    );
    assert_eq!(backend.stats.accepted(), 1);
}

/// SIGTERM with an open connection: logs the shutdown lines, stops accepting, keeps the
/// established pipe working, and exits 0 once it closes.
#[test]
fn sigterm_drains_then_exits_zero() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-cn=client"]);
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let mut s = try_echo(addr, cfg.clone(), b"before").expect("first connection");
    d.signal(libc::SIGTERM);
    d.wait_log("received terminated, shutting down", LOG_WAIT);
    d.wait_log("shutdown proxy, waiting for drain", LOG_WAIT);
    // New connections are no longer accepted.
    assert!(
        try_echo(addr, cfg, b"new").is_err(),
        "a new connection was served while draining{}",
        d.describe()
    );
    // The established pipe still works, through the draining process, again and again.
    for i in 0..3 {
        assert_echo(&mut s, b"still open");
        assert!(
            d.try_status().is_none(),
            "exited before the open connection closed ({i}){}",
            d.describe()
        );
    }
    s.conn.send_close_notify();
    let _ = s.flush();
    let _ = s.sock.shutdown(Shutdown::Both);
    drop(s);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status{}", d.describe());
}

/// SIGINT is logged as an interrupt and drains like SIGTERM.
#[test]
fn sigint_with_no_connections_exits_zero() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, _) = start_server(&pki, &backend.target(), &["--allow-all"]);
    d.signal(libc::SIGINT);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status{}", d.describe());
    assert!(
        d.stdout().contains("received interrupt, shutting down"),
        "{}",
        d.describe()
    );
}

/// With `--shutdown-timeout=1s` and a connection that stays open, the daemon gives up
/// draining, logs `graceful shutdown timeout: forcing exit` and exits 1.
#[test]
fn shutdown_timeout_forces_exit_one() {
    let pki = Pki::new();
    let backend = Backend::start(Behaviour::Hold);
    let (mut d, saddr) = start_server(
        &pki,
        &backend.target(),
        &["--allow-cn=client", "--shutdown-timeout=1s"],
    );
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let mut s = tls_connect(saddr, cfg, "localhost").expect("handshake");
    s.write_all(b"x").unwrap();
    s.flush().unwrap();
    assert!(eventually(LOG_WAIT, || backend.stats.accepted() == 1));
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    let took = t.elapsed();
    assert_eq!(status.code(), Some(1), "exit status{}", d.describe());
    assert!(
        d.stdout()
            .contains("graceful shutdown timeout: forcing exit"),
        "{}",
        d.describe()
    );
    assert!(
        took >= Duration::from_millis(800),
        "forced exit after only {took:?}"
    );
    drop(s);
}

/// A connection thread that cannot be started (RLIMIT_NPROC reached) is an accept error
/// (docs/behaviour.md §7.1): that connection is closed, the log says why, the loop backs off and
/// keeps going, and service resumes once threads free up. The daemon runs as an unused uid, since
/// root is exempt from the limit; the test fails when not run as root.
#[test]
fn thread_exhaustion_backs_off_and_recovers() {
    // SAFETY: geteuid(2) has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "needs root, to run the daemon as another uid under RLIMIT_NPROC"
    );
    require_tool("setpriv", "util-linux");
    require_tool("prlimit", "util-linux");
    let pki = Pki::new();
    let backend = Backend::echo();
    let (listen, addr) = free_addr();
    let uid = format!("{}", 65000 + std::process::id() % 500);
    let target = backend.target();
    // Room for about two connection threads beside the daemon's own (main, signals, logger).
    let limit = 5;
    let mut d = Cmd::new("server")
        .wrapped([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "prlimit",
            &format!("--nproc={limit}"),
            "--",
        ])
        .args(["--listen", &listen, "--target", &target])
        .args(pki.server_cred_args())
        .args(["--allow-all", "--connect-timeout", "20s"])
        .spawn();
    let pid = d.pid();
    let threads = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Threads:")
                    .map(|v| v.trim().parse::<usize>())
            })
            .and_then(Result::ok)
            .unwrap_or(0)
    };
    let room = limit - threads();
    assert!(room >= 1, "no room for a connection thread{}", d.describe());
    let holders: Vec<_> = (0..room).map(|_| tcp_connect(addr)).collect();
    assert!(
        eventually(Duration::from_secs(5), || threads() == limit),
        "the connection threads did not start{}",
        d.describe()
    );
    // These find no thread: each is closed at the backoff pace (5 + 10 + 20 + 40 ms).
    let started = Instant::now();
    let mut refused: Vec<_> = (0..4).map(|_| tcp_connect(addr)).collect();
    for s in &mut refused {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "not closed");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "connections without a thread were held for {:?} (the accept loop was blocked){}",
        started.elapsed(),
        d.describe()
    );
    d.wait_log(
        "error accepting connection: cannot start a thread for the connection: resource temporarily unavailable",
        LOG_WAIT,
    );
    drop(holders);
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    assert!(
        eventually(Duration::from_secs(5), || try_echo(
            addr,
            cfg.clone(),
            b"back"
        )
        .is_ok()),
        "service did not resume{}",
        d.describe()
    );
    assert!(!d.stdout().contains("panick"), "{}", d.describe());
}

/// `--max-concurrent-conns=1`: a second client waits in the backlog until the first
/// finishes, then is served.
#[test]
fn max_concurrent_conns_queues_second_client() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    let (d, addr) = start_client(&pki, &srv.target_localhost(), &["--max-concurrent-conns=1"]);
    let mut first = tcp_connect(addr);
    assert_echo(&mut first, b"first");
    // The second connect succeeds (kernel backlog) but is not served yet.
    let mut second = tcp_connect(addr);
    second.write_all(b"second").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut buf = [0u8; 6];
    match second.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
        other => panic!(
            "second client should wait while the first is open, got {other:?}{}",
            d.describe()
        ),
    }
    assert_echo(&mut first, b"first again");
    first.shutdown(Shutdown::Both).unwrap();
    drop(first);
    second.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    second
        .read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("second client never served: {e}{}", d.describe()));
    assert_eq!(&buf, b"second");
}

/// `--max-conn-lifetime=1s` cuts an otherwise healthy, open connection after about 1 s.
#[test]
fn max_conn_lifetime_cuts_connection() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    let (d, addr) = start_client(&pki, &srv.target_localhost(), &["--max-conn-lifetime=1s"]);
    let mut s = tcp_connect(addr);
    let t = Instant::now();
    assert_echo(&mut s, b"hello");
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let mut buf = [0u8; 16];
    let r = s.read(&mut buf);
    let took = t.elapsed();
    assert!(
        matches!(r, Ok(0))
            || matches!(&r, Err(e) if e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut),
        "connection not cut (read: {r:?}){}",
        d.describe()
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(1900),
        "cut after {took:?}, expected about 1s"
    );
}

/// `--close-timeout=1s`: after the client half-closes, a backend that neither answers nor
/// closes is cut after about 1 s; the client sees EOF.
#[test]
fn close_timeout_cuts_half_closed_pipe() {
    let pki = Pki::new();
    let backend = Backend::start(Behaviour::Stall);
    let (d, addr) = start_server(
        &pki,
        &backend.target(),
        &["--allow-cn=client", "--close-timeout=1s"],
    );
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let mut s = tls_connect(addr, cfg, "localhost").expect("handshake");
    s.write_all(b"request").unwrap();
    s.flush().unwrap();
    assert!(eventually(LOG_WAIT, || backend.stats.bytes_in() == 7));
    s.conn.send_close_notify();
    s.flush().unwrap();
    let t = Instant::now();
    s.sock
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let (data, _) = read_to_end_lossy(&mut s);
    let took = t.elapsed();
    assert!(data.is_empty());
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(1900),
        "half-closed pipe cut after {took:?}, expected about 1s{}",
        d.describe()
    );
}

/// Client mode: a `unix:` listener's socket file is removed at graceful shutdown
/// (docs/behaviour.md §6.2, §12.2).
#[test]
fn unix_listener_removed_on_shutdown() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    let path = pki.dir.join("l.sock");
    let mut d = Cmd::new("client")
        .args(["--listen", &format!("unix:{}", path.display())])
        .args(["--target", &srv.target_localhost()])
        .args(pki.client_cred_args())
        .spawn();
    assert!(path.exists(), "socket file missing{}", d.describe());
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", d.describe());
    assert!(!path.exists(), "socket file left behind{}", d.describe());
}

/// A UNIX listen path that already exists fails with `address already in use`.
#[test]
fn unix_listener_existing_path_fails() {
    let pki = Pki::new();
    let path = pki.dir.write("stale.sock", "");
    let o = Cmd::new("client")
        .args(["--listen", &format!("unix:{}", path.display())])
        .args(["--target", "localhost:9"])
        .args(pki.client_cred_args())
        .run(Duration::from_secs(10));
    o.assert_code(1)
        .assert_stderr_contains(&format!(
            "listen unix {}: bind: address already in use",
            path.display()
        ))
        .assert_stdout_lacks(READY_LINE);
}

/// `--quiet=conns` suppresses the pipe lines but not startup lines; `--quiet=all` silences
/// the logger entirely (docs/behaviour.md §13.2).
#[test]
fn quiet_conns_and_all() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));

    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-all"]);
    try_echo(addr, cfg.clone(), b"hello").expect("served");
    d.wait_log("opening pipe: ", LOG_WAIT);

    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-all", "--quiet=conns"]);
    drop(try_echo(addr, cfg.clone(), b"hello").expect("served"));
    // The backend sees the pipe's close once the daemon is done with it (where the pipe lines
    // would be logged); then a handshake failure, which --quiet=conns still logs, marks that
    // the log has caught up.
    assert!(
        eventually(LOG_WAIT, || !backend.stats.received().is_empty()),
        "the pipe never closed{}",
        d.describe()
    );
    drop(tcp_connect(addr));
    d.wait_log("error on TLS handshake", LOG_WAIT);
    assert!(
        !d.stdout().contains("pipe: "),
        "--quiet=conns still logs pipes{}",
        d.describe()
    );

    // With --quiet=all the readiness line is not logged; poll the port instead.
    let (listen, addr) = free_addr();
    let mut q = Cmd::new("server")
        .args(["--listen", &listen, "--target", &backend.target()])
        .args(pki.server_cred_args())
        .args(["--allow-all", "--quiet=all"])
        .start();
    assert!(
        eventually(STARTUP_TIMEOUT, || std::net::TcpStream::connect(addr)
            .is_ok()),
        "--quiet=all daemon never listened{}",
        q.describe()
    );
    try_echo(addr, cfg, b"hello").unwrap_or_else(|e| panic!("{e}{}", q.describe()));
    q.signal(libc::SIGTERM);
    let status = q.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", q.describe());
    assert!(q.stdout().is_empty(), "--quiet=all logged{}", q.describe());
}

/// `--version` prints `rev <version> built with <toolchain> (pkcs11: …, keychain: …)` to
/// stderr and exits 0.
#[test]
fn version_shape() {
    let o = Cmd::bare().arg("--version").run(Duration::from_secs(10));
    o.assert_code(0);
    let line = o.stderr.lines().next().unwrap_or("");
    assert!(
        line.starts_with("rev ")
            && line.contains(" built with ")
            && line.contains("(pkcs11: ")
            && line.ends_with(", keychain: false)"),
        "unexpected version line {line:?}{}",
        o.describe()
    );
}

/// One thread per connection: glibc's per-thread malloc cache is off in the running daemon. It
/// re-executes itself once with `GLIBC_TUNABLES` set (and a marker), keeping its pid (the log
/// prefix), its command line and the rest of the environment; an operator's own settings are
/// kept, and when they cover every tunable nothing is re-executed.
#[test]
fn malloc_thread_cache_off_unless_the_operator_set_it() {
    let pki = Pki::new();
    let backend = Backend::echo();
    // (GLIBC_TUNABLES given, as the daemon's environment shows it, re-executed). glibc cuts the
    // value it parsed at the first ':' in place, so /proc shows only the first tunable.
    let cases = [
        (None, "glibc.malloc.tcache_count=0", true),
        (
            Some("glibc.malloc.arena_max=2"),
            "glibc.malloc.arena_max=2",
            true,
        ),
        (
            Some("glibc.malloc.tcache_count=3:glibc.pthread.stack_cache_size=0"),
            "glibc.malloc.tcache_count=3",
            false,
        ),
    ];
    for (given, shown, reexec) in cases {
        let (listen, addr) = free_addr();
        let mut cmd = Cmd::new("server")
            .args(["--listen", &listen, "--target", &backend.target()])
            .args(pki.server_cred_args())
            .arg("--allow-all")
            .env("MARKER_FOR_TEST", "kept");
        if let Some(v) = given {
            cmd = cmd.env("GLIBC_TUNABLES", v);
        }
        let d = cmd.spawn();
        let pid = d.pid();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        let has = |kv: &str| vars.contains(&kv.as_bytes());
        assert!(
            has(&format!("GLIBC_TUNABLES={shown}")),
            "{given:?}{}",
            d.describe()
        );
        assert_eq!(has("GHOSTUNNEL_MALLOC_TUNED=1"), reexec, "{given:?}");
        assert!(has("MARKER_FOR_TEST=kept"), "environment not kept");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        assert_eq!(argv[1..4], [&b"server"[..], b"--listen", listen.as_bytes()]);
        let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
        try_echo(addr, cfg, b"after re-exec")
            .unwrap_or_else(|e| panic!("not serving: {e}{}", d.describe()));
    }
}
