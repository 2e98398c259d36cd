//! systemd integration (docs/behaviour.md §10): the exact notify datagrams, watchdog pings, socket
//! activation, and the unit files in packaging/ checked by systemd-analyze.

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

/// Reads datagrams until `n` arrived or `timeout` passed.
fn receive(sock: &UnixDatagram, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(len) => out.push(String::from_utf8_lossy(&buf[..len]).to_string()),
            Err(_) => break,
        }
    }
    out
}

fn without_watchdog(msgs: Vec<String>) -> Vec<String> {
    msgs.into_iter().filter(|m| m != "WATCHDOG=1").collect()
}

fn notify_sequence(notify_env: &str, sock: &UnixDatagram, pki: &Pki) {
    let backend = Backend::echo();
    let (mut d, addr) = start_server_env(pki, &backend.target(), notify_env);
    let status = format!(
        "server proxying 127.0.0.1:{} => {} | 0 open connections",
        addr.port(),
        backend.target()
    );
    let start = receive(sock, 2, Duration::from_secs(10));
    assert_eq!(
        start,
        vec![
            "READY=1".to_string(),
            format!("STATUS=listening | {status}")
        ],
        "{}",
        d.describe()
    );

    // A reload with good files, then one with a broken keystore: both bracketed.
    for round in 0..2 {
        if round == 1 {
            std::fs::write(pki.dir.join("server.pem"), "broken").unwrap();
        }
        d.signal(libc::SIGHUP);
        let msgs = receive(sock, 4, Duration::from_secs(10));
        assert_eq!(msgs.len(), 4, "{msgs:?}{}", d.describe());
        let usec = msgs[0]
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .expect("RELOADING with MONOTONIC_USEC");
        assert!(usec.parse::<u64>().unwrap() > 0);
        assert_eq!(
            msgs[1..],
            [
                format!("STATUS=reloading | {status}"),
                "READY=1".into(),
                format!("STATUS=listening | {status}")
            ]
        );
    }
    d.wait_log("error reloading TLS configuration", Duration::from_secs(10));

    d.signal(libc::SIGTERM);
    let stop = receive(sock, 2, Duration::from_secs(10));
    assert_eq!(
        stop,
        vec![
            "STOPPING=1".to_string(),
            format!("STATUS=stopping | {status}")
        ]
    );
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(
        receive(sock, 1, Duration::from_millis(300)).is_empty(),
        "nothing after STOPPING"
    );
}

fn start_server_env(pki: &Pki, target: &str, notify: &str) -> (Daemon, std::net::SocketAddr) {
    let (listen, addr) = free_addr();
    let d = Cmd::new("server")
        .args(["--listen", &listen, "--target", target])
        .args(pki.server_cred_args())
        .arg("--allow-all")
        .env("NOTIFY_SOCKET", notify)
        .spawn();
    (d, addr)
}

#[test]
fn notify_sequence_on_a_path_socket() {
    let pki = Pki::new();
    let path = pki.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    notify_sequence(path.to_str().unwrap(), &sock, &pki);
}

#[test]
fn notify_sequence_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let pki = Pki::new();
    let name = format!("gt-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    notify_sequence(&format!("@{name}"), &sock, &pki);
}

#[test]
fn watchdog_pings_every_half_interval() {
    let pki = Pki::new();
    let path = pki.dir.join("wd.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let (listen, _) = free_addr();
    let _d = Cmd::new("server")
        .args([
            "--listen",
            &listen,
            "--target",
            "localhost:9",
            "--allow-all",
        ])
        .args(pki.server_cred_args())
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("WATCHDOG_USEC", "400000")
        .spawn();
    let started = Instant::now();
    let msgs = receive(&sock, 7, Duration::from_secs(5));
    let pings = msgs.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert_eq!(pings, 5, "{msgs:?}");
    // Five pings at 200 ms: about a second, certainly not five.
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(without_watchdog(msgs)[0], "READY=1");
}

/// Runs the binary with pre-bound listeners on fds 3 and 4 named `gt:st`, as systemd would.
#[test]
fn socket_activation_for_listen_and_status() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let pki = Pki::new();
    let backend = Backend::echo();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let status_path = pki.dir.join("status.sock");
    let status = UnixListener::bind(&status_path).unwrap();
    let (a, b) = (tcp.as_raw_fd(), status.as_raw_fd());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_ghostunnel"))
        .args([
            "server",
            "--listen=systemd:gt",
            "--status=systemd:st",
            "--allow-all",
        ])
        .args(["--target", &backend.target()])
        .args(pki.server_cred_args())
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "gt:st")
        .stdout(std::process::Stdio::null());
    // SAFETY: only dup2, which is async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let ok = eventually(Duration::from_secs(10), || {
        try_echo(addr, cfg.clone(), b"activated").is_ok()
    });
    let status_ok = eventually(Duration::from_secs(10), || {
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&status_path) else {
            return false;
        };
        use std::io::{Read, Write};
        let _ = s.write_all(b"GET /_status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("\"listen_address\":\"systemd:gt\"")
    });
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let code = child.wait().unwrap().code();
    assert!(ok, "no echo through the inherited TCP socket");
    assert!(status_ok, "no /_status on the inherited UNIX socket");
    assert_eq!(code, Some(0));
    assert!(
        status_path.exists(),
        "an inherited UNIX socket file must never be unlinked"
    );
}

#[test]
fn socket_activation_with_a_missing_name_fails_clearly() {
    let pki = Pki::new();
    let o = Cmd::new("server")
        .args([
            "--listen=systemd:nope",
            "--target=localhost:9",
            "--allow-all",
        ])
        .args(pki.server_cred_args())
        .run(Duration::from_secs(10));
    o.assert_code(1)
        .assert_stderr_contains("expected listener with name nope, but found none");
}

/// Every unit in packaging/ passes `systemd-analyze verify` with ExecStart on the built binary.
#[test]
fn unit_files_verify() {
    require_tool("systemd-analyze", "systemd");
    let dir = TempDir::new();
    let units = [
        "ghostunnel.service",
        "ghostunnel.socket",
        "ghostunnel-socket.service",
        "ghostunnel-unix.socket",
        "ghostunnel-hardened.service",
    ];
    let mut paths = Vec::new();
    for unit in units.iter().chain(&["ghostunnel@.service"]) {
        let text = std::fs::read_to_string(Path::new("packaging").join(unit)).unwrap();
        let text = text.replace("/usr/bin/ghostunnel", env!("CARGO_BIN_EXE_ghostunnel"));
        // Verify the template through an instance.
        let name = unit.replace("@.", "@web.");
        paths.push(dir.write(&name, text));
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // systemd before 253 does not know Type=notify-reload and says so; anything else fails.
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("Failed to parse service type, ignoring: notify-reload"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(out.status.success() && problems.is_empty(), "{stderr}");
}

/// The hardened unit keeps systemd's exposure score at or below 2.0 (of 10).
#[test]
fn hardened_unit_exposure() {
    require_tool("systemd-analyze", "systemd");
    let out = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=true",
            "--threshold=20",
            "packaging/ghostunnel-hardened.service",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("exposure level for ghostunnel-hardened.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("exposure score");
    assert!(score <= 2.0, "exposure {score}");
}

/// Reload by rename: a new handshake sees the new certificate while an old connection keeps
/// flowing on the old session.
#[test]
fn reload_swaps_the_certificate_without_dropping_connections() {
    use std::io::Write;
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-all"]);
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let mut old = tls_connect(addr, cfg.clone(), "localhost").expect("first handshake");
    assert_echo(&mut old, b"before");
    let leaf = |s: &TlsStream| s.conn.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(leaf(&old), pki.server.cert_der);

    // Rotate the way operators do: write a new file, rename it over the old one.
    let new = pki.issue("server2", &LeafSpec::server("server2"));
    let staged = pki.dir.join("server.pem.new");
    std::fs::copy(&new.combined_path, &staged).unwrap();
    std::fs::rename(&staged, &pki.server.combined_path).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("loaded certificate: CN=server2", Duration::from_secs(10));
    d.wait_log("reloading configuration complete", Duration::from_secs(10));

    let mut fresh = tls_connect(addr, cfg, "localhost").expect("handshake after reload");
    assert_eq!(
        leaf(&fresh),
        new.cert_der,
        "a new handshake must see the new certificate"
    );
    assert_echo(&mut fresh, b"after");
    assert_echo(&mut old, b"still flowing");
    let _ = old.flush();
}

/// The real systemd-socket-activate (from the systemd package) hands the daemon its listener;
/// it starts the daemon on the first connection, which is then served.
#[test]
fn systemd_socket_activate_starts_the_daemon() {
    require_tool("systemd-socket-activate", "systemd");
    let pki = Pki::new();
    let backend = Backend::echo();
    let (listen, addr) = free_addr();
    let mut child = Command::new("systemd-socket-activate")
        .args([
            "-l",
            &listen,
            "--fdname=gt",
            env!("CARGO_BIN_EXE_ghostunnel"),
        ])
        .args([
            "server",
            "--listen=systemd:gt",
            "--allow-all",
            "--target",
            &backend.target(),
        ])
        .args(pki.server_cred_args())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let served = eventually(Duration::from_secs(10), || {
        try_echo(addr, cfg.clone(), b"activated").is_ok()
    });
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    assert!(
        served,
        "no echo through the socket systemd-socket-activate passed on"
    );
}
