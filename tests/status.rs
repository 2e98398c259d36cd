//! The status endpoint (docs/behaviour.md §8): `/_status` reflects the backend and the lifecycle,
//! the port speaks HTTPS with the proxy's certificate or plain HTTP as asked, a misbehaving status
//! client cannot hold up the proxy, and `/_shutdown` drains.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::util::*;

#[test]
fn status_follows_the_backend_down_up_down() {
    let pki = Pki::new();
    // Nothing listens on the target yet: the backend check fails.
    let (target, target_addr) = free_addr();
    let (status, _) = free_addr();
    let (d, _) = start_server(
        &pki,
        &target,
        &["--allow-all", &format!("--status=http://{status}")],
    );
    let r = http(&status, "GET", "/_status");
    assert_eq!(r.code, 503, "{r:?}{}", d.describe());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.body
            .starts_with("{\"ok\":false,\"status\":\"critical\",\"listen_address\":"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&format!(
            "\"backend_ok\":false,\"backend_status\":\"critical\",\"backend_error\":\"dial tcp {target}: connect: connection refused\""
        )),
        "{}",
        r.body
    );

    // Once the backend is up, the same endpoint says ok.
    let backend = std::net::TcpListener::bind(target_addr).expect("bind the target port");
    let r = http(&status, "GET", "/_status");
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(
        r.body.starts_with("{\"ok\":true,\"status\":\"ok\",")
            && r.body.contains("\"message\":\"listening\"")
            && !r.body.contains("backend_error"),
        "{}",
        r.body
    );
    // Our keys come after the reference's: sandbox, the served certificate, open connections.
    let tail = r.body.split_once("\"compiler\":").expect("compiler key").1;
    assert!(tail.contains(",\"sandbox\":\"landlock: "), "{}", r.body);
    assert!(
        tail.contains(",\"certificate_subject\":\"CN=server,OU=servers,O=Acme\""),
        "{}",
        r.body
    );
    assert!(
        tail.contains(",\"certificate_not_after\":\"20"),
        "{}",
        r.body
    );
    assert!(tail.ends_with(",\"open_connections\":0}"), "{}", r.body);

    // And down again.
    drop(backend);
    assert_eq!(http(&status, "GET", "/_status").code, 503);
    assert_eq!(http(&status, "HEAD", "/_status").code, 503);
}

#[test]
fn routes_and_methods() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (status, _) = free_addr();
    let (_d, _) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", &format!("--status=http://{status}")],
    );
    let r = http(&status, "GET", "/nope");
    assert_eq!((r.code, r.body.as_str()), (404, "404 page not found\n"));
    // Without --enable-shutdown, /_shutdown does not exist.
    assert_eq!(http(&status, "POST", "/_shutdown").code, 404);
    // /_status answers any method.
    assert_eq!(http(&status, "POST", "/_status").code, 200);
    for path in ["/_metrics", "/_metrics/json", "/_metrics?format=json"] {
        let r = http(&status, "GET", path);
        assert_eq!(r.code, 200, "{path}");
        assert!(r.body.starts_with("[{\"hostname\":"), "{path}: {}", r.body);
    }
    for path in [
        "/_metrics/prometheus",
        "/_metrics?format=prometheus",
        "/_metrics?x=1&format=prometheus&format=json",
    ] {
        let r = http(&status, "GET", path);
        assert_eq!(r.code, 200, "{path}");
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{path}"
        );
        assert!(
            r.body.starts_with("# HELP ghostunnel_conn_open "),
            "{path}: {}",
            r.body
        );
    }
    let r = http(&status, "GET", "/_metrics?format=json&format=prometheus");
    assert!(r.body.starts_with('['), "the first format value wins");
}

/// `/_shutdown` (docs/behaviour.md §8.6): 405 for other methods, 200 for POST (repeatable), then
/// the same graceful drain as SIGTERM: an open connection keeps working until it closes, then exit
/// 0.
#[test]
fn shutdown_endpoint_drains_and_exits_0() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (status, _) = free_addr();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &[
            "--allow-all",
            &format!("--status=http://{status}"),
            "--enable-shutdown",
        ],
    );
    assert_eq!(http(&status, "GET", "/_shutdown").code, 405);
    assert_eq!(http(&status, "PUT", "/_shutdown").code, 405);
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let mut open = try_echo(addr, cfg.clone(), b"before").expect("echo before shutdown");
    let r = http(&status, "POST", "/_shutdown");
    assert_eq!((r.code, r.body.as_str()), (200, ""));
    d.wait_log(
        "shutdown was requested via status endpoint",
        Duration::from_secs(10),
    );
    // A second POST is harmless.
    assert_eq!(http(&status, "POST", "/_shutdown").code, 200);
    // No new connections; the open one still works.
    assert!(
        try_echo(addr, cfg, b"new").is_err(),
        "accepted after shutdown"
    );
    // The open connection is served by the draining process, again and again.
    for i in 0..3 {
        open.write_all(b"during").unwrap();
        let mut back = [0u8; 6];
        open.read_exact(&mut back).expect("echo during the drain");
        assert_eq!(&back, b"during");
        assert!(
            d.try_status().is_none(),
            "exited before the drain ({i}){}",
            d.describe()
        );
    }
    drop(open);
    assert_eq!(
        d.wait_exit(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        d.describe()
    );
    assert_eq!(d.count_log("shutdown was requested via status endpoint"), 1);
}

/// Without a scheme the status port speaks HTTPS with the proxy's certificate and asks for no
/// client certificate; it never answers plaintext HTTP.
#[test]
fn https_status_with_the_proxy_certificate_and_no_client_certificate() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (status, status_addr) = free_addr();
    let (_d, _) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", &format!("--status={status}")],
    );
    let cfg = client_config(&pki.ca.cert_der, None);
    let sock = TcpStream::connect(status_addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let conn = ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .expect("TLS handshake without a client certificate");
    }
    let leaf = tls.conn.peer_certificates().expect("server certificate")[0].to_vec();
    assert_eq!(leaf, pki.server.cert_der, "not the proxy's certificate");
    let r = request(tls, "GET", "/_status");
    assert_eq!(r.code, 200, "{r:?}");
    assert!(r.body.contains("\"ok\":true"), "{}", r.body);

    // Plain HTTP on the HTTPS port gets no HTTP answer. The daemon may close the connection
    // while the request is still being written (EPIPE): only what comes back counts.
    let mut plain = TcpStream::connect(status_addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = plain.write_all(b"GET /_status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plaintext answered on the HTTPS port: {}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn unix_status_socket_serves_plain_http() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let path = pki.dir.join("status.sock");
    let (mut d, _) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", &format!("--status=unix:{}", path.display())],
    );
    let r = http_unix(&path, "GET", "/_status");
    assert_eq!(r.code, 200, "{r:?}");
    assert!(r.body.contains("\"message\":\"listening\""), "{}", r.body);
    let r = http_unix(&path, "GET", "/_metrics/prometheus");
    assert!(
        r.body.contains("# TYPE ghostunnel_accept_total gauge"),
        "{}",
        r.body
    );
    // The socket file goes at shutdown (under Landlock too), so a restart can bind it again.
    d.signal(libc::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        d.describe()
    );
    assert!(!path.exists(), "the status socket file stayed behind");
    let (_again, _) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", &format!("--status=unix:{}", path.display())],
    );
    assert_eq!(http_unix(&path, "GET", "/_status").code, 200);
}

/// A reload that blocks (the key is a FIFO nobody writes yet) shows `reloading`, still 200;
/// once it completes, `listening` again, with a new `last_reload`.
#[test]
fn reloading_is_reported_during_a_slow_reload() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (status, _) = free_addr();
    let fifo = pki.dir.join("slow-key.pem");
    let c_path = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let key = std::fs::read(&pki.server.key_path).unwrap();
    let feed = |fifo: std::path::PathBuf, key: Vec<u8>| {
        std::thread::spawn(move || {
            // Opening for write blocks until the daemon opens the FIFO to read.
            std::fs::write(fifo, key).expect("write the key into the FIFO");
        })
    };
    let first = feed(fifo.clone(), key.clone());
    let (listen, _) = free_addr();
    let mut d = Cmd::new("server")
        .args(["--listen", &listen, "--target", &backend.target()])
        .args([
            "--cert",
            &pki.server.cert_path.display().to_string(),
            "--key",
            &fifo.display().to_string(),
        ])
        .args(pki.cacert_args())
        .args(["--allow-all", &format!("--status=http://{status}")])
        .spawn();
    first.join().unwrap();
    let r = http(&status, "GET", "/_status");
    assert!(
        r.body.contains("\"last_reload\":\"0001-01-01T00:00:00Z\"")
            && r.body.contains("\"message\":\"listening\""),
        "{}",
        r.body
    );
    d.signal(libc::SIGHUP);
    d.wait_log(
        "received hangup, reloading TLS configuration",
        Duration::from_secs(10),
    );
    // The status turns `reloading` just after that line (docs/behaviour.md §9, step 1), and stays
    // so while the key's FIFO has no writer.
    let reloading = eventually(Duration::from_secs(5), || {
        http(&status, "GET", "/_status")
            .body
            .contains("\"message\":\"reloading\"")
    });
    let r = http(&status, "GET", "/_status");
    assert!(reloading, "{}", r.body);
    assert_eq!(r.code, 200, "a reload is still healthy: {}", r.body);
    assert!(!r.body.contains("\"last_reload\":\"0001-"), "{}", r.body);
    feed(fifo, key).join().unwrap();
    d.wait_log("reloading configuration complete", Duration::from_secs(10));
    // The status returns to `listening` just after that line (docs/behaviour.md §9, steps 4-5).
    let listening = eventually(Duration::from_secs(5), || {
        http(&status, "GET", "/_status")
            .body
            .contains("\"message\":\"listening\"")
    });
    assert!(listening, "{}", http(&status, "GET", "/_status").body);
    let m = http(&status, "GET", "/_metrics/prometheus").body;
    assert!(m.contains("\nghostunnel_reload_success_total 1\n"), "{m}");
}

/// A flood of idle status connections takes at most the status server's own threads: proxying
/// goes on at once, and the endpoint answers again as soon as the flood is gone.
#[test]
fn idle_status_flood_does_not_stall_proxying() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (status, status_addr) = free_addr();
    let (d, addr) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", &format!("--status=http://{status}")],
    );
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(status_addr).ok())
        .collect();
    assert!(idle.len() >= 100, "only {} connections", idle.len());
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let t = Instant::now();
    for i in 0..5 {
        try_echo(addr, cfg.clone(), format!("during flood {i}").as_bytes())
            .unwrap_or_else(|e| panic!("proxying stalled by the flood: {e}{}", d.describe()));
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "proxying slowed to {:?} by idle status clients",
        t.elapsed()
    );
    drop(idle);
    assert!(
        eventually(Duration::from_secs(5), || {
            TcpStream::connect(status_addr).is_ok_and(|s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                request(s, "GET", "/_status").code == 200
            })
        }),
        "the status endpoint did not recover after the flood{}",
        d.describe()
    );
}

/// A client that trickles its request head is cut at `--connect-timeout`.
#[test]
fn slow_status_client_is_cut_at_connect_timeout() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (status, status_addr) = free_addr();
    let (_d, _) = start_server(
        &pki,
        &backend.target(),
        &[
            "--allow-all",
            &format!("--status=http://{status}"),
            "--connect-timeout=1s",
        ],
    );
    let mut s = TcpStream::connect(status_addr).unwrap();
    let t = Instant::now();
    let mut cut = None;
    for b in b"GET /_status HTTP/1.1\r\nHost: a-very-slow-client\r\n".iter() {
        std::thread::sleep(Duration::from_millis(200));
        if s.write_all(&[*b]).is_err() {
            cut = Some(t.elapsed());
            break;
        }
        // The server closing shows up as EOF on a non-blocking read.
        s.set_nonblocking(true).unwrap();
        let mut one = [0u8; 1];
        if matches!(s.read(&mut one), Ok(0)) {
            cut = Some(t.elapsed());
            break;
        }
        s.set_nonblocking(false).unwrap();
    }
    let cut = cut.expect("a trickling client was never cut off");
    assert!(
        cut >= Duration::from_millis(800) && cut < Duration::from_secs(3),
        "cut after {cut:?}, want about 1 s"
    );
}

/// `--target-status` (docs/behaviour.md §8.4): the check is an HTTP GET through the backend dialer;
/// any status but 200 is critical with `target returned status: <code>`.
#[test]
fn target_status_url_decides_backend_health() {
    let pki = Pki::new();
    let health = HttpServer::start(503);
    let port = health.addr.port();
    let (status, _) = free_addr();
    let (_d, _) = start_server(
        &pki,
        &format!("127.0.0.1:{port}"),
        &[
            "--allow-all",
            &format!("--status=http://{status}"),
            &format!("--target-status=http://localhost:{port}/health?deep=1"),
        ],
    );
    let r = http(&status, "GET", "/_status");
    assert_eq!(r.code, 503, "{}", r.body);
    assert!(
        r.body
            .contains("\"backend_error\":\"target returned status: 503\""),
        "{}",
        r.body
    );
    let seen = health.seen();
    assert!(
        seen[0].head.starts_with(&format!(
            "GET /health?deep=1 HTTP/1.1\r\nHost: localhost:{port}\r\n"
        )),
        "{seen:?}"
    );
    health.code.store(200, std::sync::atomic::Ordering::SeqCst);
    let r = http(&status, "GET", "/_status");
    assert_eq!(r.code, 200, "{}", r.body);
}

/// A status port already taken fails startup with exit 1, and the main listener does not stay
/// behind (its UNIX socket file is removed).
#[test]
fn status_port_in_use_exits_1_and_leaves_no_listener() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let sock = pki.dir.join("listen.sock");
    let o = Cmd::new("server")
        .args(["--listen", &format!("unix:{}", sock.display())])
        .args(["--target", &backend.target()])
        .args(pki.server_cred_args())
        .args(["--allow-all", &format!("--status=http://127.0.0.1:{port}")])
        .run(Duration::from_secs(10));
    o.assert_code(1)
        .assert_stderr_contains("error: unable to bind on status port: listen tcp 127.0.0.1:");
    assert!(
        !sock.exists(),
        "the main listener's socket file stayed behind"
    );
    drop(taken);
}
