//! Drop-in parity with the reference implementation: what an operator's existing scripts,
//! dashboards and alerts read (log texts, alerts on the wire, status routes, metric names),
//! checked against the real binary with real peers (the `openssl` CLI for the TLS side).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

const LOG_WAIT: Duration = Duration::from_secs(10);

/// Runs `openssl s_client` against `addr` with `args`, sending nothing; returns its stdout and
/// stderr together. A missing `openssl` fails the test.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("openssl is required (apt-get install openssl)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn client_args(pki: &Pki, id: &Identity) -> Vec<String> {
    vec![
        "-CAfile".into(),
        pki.ca.cert_path.display().to_string(),
        "-cert".into(),
        id.cert_path.display().to_string(),
        "-key".into(),
        id.key_path.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A TLS 1.1 client gets a `protocol_version` alert and the reference's log line.
#[test]
fn tls11_client_gets_protocol_version_alert_and_reference_text() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-all"]);
    d.wait_log(READY_LINE, STARTUP_TIMEOUT);
    let out = s_client(addr, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(out.contains("alert protocol version"), "{out}");
    d.wait_log(
        "tls: client offered only unsupported versions: [302 301]",
        LOG_WAIT,
    );
}

/// An authenticated but unauthorized client gets a `bad_certificate` alert, as from the
/// reference, and the usual `unauthorized` line.
#[test]
fn unauthorized_client_gets_bad_certificate_alert() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-cn", "nobody"]);
    d.wait_log(READY_LINE, STARTUP_TIMEOUT);
    let args = client_args(&pki, &pki.client);
    let mut args = strs(&args);
    args.push("-tls1_2");
    let out = s_client(addr, &args);
    assert!(out.contains("alert bad certificate"), "{out}");
    d.wait_log(
        "unauthorized: invalid principal, or principal not allowed",
        LOG_WAIT,
    );
}

/// The server picks the suite by its own order (AES-128-GCM before ChaCha20), whatever the
/// client prefers, and accepts a client that offers only P-521.
#[test]
fn server_cipher_order_and_p521() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-all"]);
    d.wait_log(READY_LINE, STARTUP_TIMEOUT);
    let args = client_args(&pki, &pki.client);
    let mut tls12 = strs(&args);
    tls12.extend([
        "-tls1_2",
        "-cipher",
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
    ]);
    let out = s_client(addr, &tls12);
    assert!(
        out.contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{out}"
    );
    let mut p521 = strs(&args);
    p521.extend(["-groups", "P-521"]);
    let out = s_client(addr, &p521);
    assert!(out.contains("Server Temp Key: ECDH, secp521r1"), "{out}");
    assert!(!out.contains("alert"), "{out}");
}

/// The reference's texts for client-side verification failures.
#[test]
fn client_side_failure_texts() {
    let pki = Pki::new();
    let wrong_name = pki.issue(
        "elsewhere",
        &LeafSpec {
            dns: vec!["other.example".into()],
            ips: vec![],
            ..LeafSpec::server("elsewhere")
        },
    );
    let srv = TlsServer::start(&wrong_name, ClientAuth::Required(pki.ca.cert_der.clone()));
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &[]);
    assert_dial_fails(
        &mut d,
        addr,
        "tls: failed to verify certificate: x509: certificate is valid for other.example, not localhost",
    );
    let stranger = pki.issue_other("stranger", &LeafSpec::server("localhost").dns("localhost"));
    let srv = TlsServer::start(&stranger, ClientAuth::Required(pki.ca.cert_der.clone()));
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &[]);
    assert_dial_fails(
        &mut d,
        addr,
        "tls: failed to verify certificate: x509: certificate signed by unknown authority",
    );
}

/// A peer that never completes the handshake: `context deadline exceeded`, on both sides.
#[test]
fn handshake_timeouts_read_context_deadline_exceeded() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", "--connect-timeout", "500ms"],
    );
    d.wait_log(READY_LINE, STARTUP_TIMEOUT);
    let s = tcp_connect(addr);
    let port = s.local_addr().unwrap().port();
    d.wait_log(
        &format!("error on TLS handshake from 127.0.0.1:{port}: context deadline exceeded"),
        LOG_WAIT,
    );
    drop(s);

    // A "server" that accepts and says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("localhost:{}", silent.local_addr().unwrap().port());
    let (mut c, caddr) = start_client(&pki, &target, &["--connect-timeout", "500ms"]);
    let held = std::thread::spawn(move || {
        let conn = silent.accept().map(|(s, _)| s);
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    assert_dial_fails(&mut c, caddr, "context deadline exceeded");
    held.join().unwrap();
}

/// Accept errors read like Go's: `accept tcp ADDR: accept4: too many open files`.
#[test]
fn accept_error_text_at_the_fd_limit() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (listen, addr) = free_addr();
    let mut d = Cmd::new("server")
        .args(["--listen", &listen, "--target", &backend.target()])
        .args(pki.server_cred_args())
        .arg("--allow-all")
        .wrapped(["prlimit", "--nofile=16:16", "--"])
        .spawn();
    d.wait_log(READY_LINE, STARTUP_TIMEOUT);
    // Bounded: at most 40 connections, held until the line shows.
    let mut held = Vec::new();
    for _ in 0..40 {
        if d.count_log("error accepting connection") > 0 {
            break;
        }
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    d.wait_log(
        &format!("error accepting connection: accept tcp {addr}: accept4: too many open files"),
        LOG_WAIT,
    );
}

/// Plain HTTP on the HTTPS status port: the reference's (Go's) 400 answer and log line.
#[test]
fn plain_http_on_https_status_port_gets_400() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (status, status_addr) = free_addr();
    let (mut d, _) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", "--status", &status],
    );
    d.wait_log(READY_LINE, STARTUP_TIMEOUT);
    let mut s = tcp_connect(status_addr);
    s.write_all(b"GET /_status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("a clean close, not a reset");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    );
    d.wait_log("http: TLS handshake error from 127.0.0.1:", LOG_WAIT);
    assert!(
        d.stdout()
            .contains(": client sent an HTTP request to an HTTPS server"),
        "{}",
        d.describe()
    );
}

/// `--enable-pprof`: the goroutine text with the thread count and one line per thread, the
/// index, the redirect, and a one-line 404 for Go-only profiles; without the flag, none.
#[test]
fn pprof_routes_on_the_status_port() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (status, status_addr) = free_addr();
    let (mut d, _) = start_server(
        &pki,
        &backend.target(),
        &[
            "--allow-all",
            "--status",
            &format!("http://{status}"),
            "--enable-pprof",
        ],
    );
    d.wait_log(READY_LINE, STARTUP_TIMEOUT);
    let r = http_get(status_addr, "/debug/pprof/goroutine?debug=1");
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let first = r.body.lines().next().unwrap();
    let n: usize = first
        .strip_prefix("goroutine profile: total ")
        .unwrap_or_else(|| panic!("{}", r.body))
        .parse()
        .unwrap();
    assert!(n >= 2, "{}", r.body);
    assert_eq!(r.body.lines().count(), n + 1, "{}", r.body);
    let threads = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    assert!(threads.contains("Threads:"), "{threads}");
    let r = http_get(status_addr, "/debug/pprof/");
    assert_eq!(
        (r.code, r.header("content-type")),
        (200, Some("text/html; charset=utf-8"))
    );
    assert!(r.body.contains("goroutine?debug=1"), "{}", r.body);
    let r = http_get(status_addr, "/debug/pprof");
    assert_eq!((r.code, r.header("location")), (307, Some("/debug/pprof/")));
    for path in [
        "/debug/pprof/heap",
        "/debug/pprof/profile",
        "/debug/pprof/goroutine",
    ] {
        let r = http_get(status_addr, path);
        assert_eq!(r.code, 404, "{path}");
        assert_eq!(r.header("x-go-pprof"), Some("1"), "{path}");
        assert!(r.body.starts_with("Unknown profile"), "{path}: {}", r.body);
        assert_eq!(r.body.lines().count(), 1, "{path}: {}", r.body);
    }

    let (status, status_addr) = free_addr();
    let (mut d, _) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", "--status", &format!("http://{status}")],
    );
    d.wait_log(READY_LINE, STARTUP_TIMEOUT);
    let r = http_get(status_addr, "/debug/pprof/goroutine?debug=1");
    assert_eq!((r.code, r.body.as_str()), (404, "404 page not found\n"));
}

fn http_get(addr: SocketAddr, path: &str) -> Response {
    request(tcp_connect(addr), "GET", path)
}

/// The `process_*` series every Go exporter has, with the Go client's types, and values that
/// match what the kernel says about the process.
#[test]
fn process_series_in_prometheus_output() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (status, status_addr) = free_addr();
    let (mut d, _) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", "--status", &format!("http://{status}")],
    );
    d.wait_log(READY_LINE, STARTUP_TIMEOUT);
    let r = http_get(status_addr, "/_metrics/prometheus");
    let value = |name: &str| -> f64 {
        let line = r
            .body
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{}", r.body));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("go_threads", "gauge"),
        ("ghostunnel_runtime_goroutines", "gauge"),
    ] {
        assert!(
            r.body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}: {}",
            r.body
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let field = |k: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let rss = value("process_resident_memory_bytes");
    let kernel_rss = field("VmRSS:") * 1024.0;
    assert!(
        (rss - kernel_rss).abs() < kernel_rss * 0.5,
        "{rss} vs {kernel_rss}"
    );
    assert!(value("go_threads") >= 2.0);
    assert!(value("process_open_fds") >= 4.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value("process_start_time_seconds");
    assert!(start <= now + 1.0 && start > now - 120.0, "{start} {now}");
}

/// An X.509 v1 client certificate issued by the CA is accepted, as by the reference: by
/// `--allow-cn` (its subject is all it has), by `--allow-spki-pin`, over TLS 1.2 and 1.3; it
/// has no SANs, so `--allow-dns` refuses it; from another CA it is refused like any other.
#[test]
fn v1_client_certificates_as_the_reference_takes_them() {
    let pki = Pki::new();
    let dir = &pki.dir;
    let key = dir.join("v1.key");
    let csr = dir.join("v1.csr");
    let crt = dir.join("v1.crt");
    let ca_key = dir.join("v1-ca.key");
    std::fs::write(&ca_key, &pki.ca.key_pem).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
        "-subj",
        "/CN=client",
    ]);
    // `openssl x509 -req` without extensions makes a version 1 certificate.
    run(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        pki.ca.cert_path.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-set_serial",
        "7",
        "-days",
        "2",
        "-out",
        crt.to_str().unwrap(),
    ]);
    assert!(
        run(&["x509", "-in", crt.to_str().unwrap(), "-noout", "-text"])
            .contains("Version: 1 (0x0)")
    );
    let spki = {
        use base64ct::Encoding;
        use sha2::Digest;
        // The public key as openssl prints it: a PEM SubjectPublicKeyInfo.
        let pem = run(&["x509", "-in", crt.to_str().unwrap(), "-pubkey", "-noout"]);
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let spki = base64ct::Base64::decode_vec(&b64).unwrap();
        format!(
            "sha256:{}",
            base64ct::Base64::encode_string(&sha2::Sha256::digest(&spki))
        )
    };
    let backend = Backend::echo();
    let v1 = [
        "-CAfile".to_string(),
        pki.ca.cert_path.display().to_string(),
        "-cert".into(),
        crt.display().to_string(),
        "-key".into(),
        key.display().to_string(),
    ];
    for (flags, accepted) in [
        (vec!["--allow-cn", "client"], true),
        (vec!["--allow-spki-pin", spki.as_str()], true),
        (vec!["--allow-dns", "client"], false),
    ] {
        let (mut d, addr) = start_server(&pki, &backend.target(), &flags);
        d.wait_log(READY_LINE, STARTUP_TIMEOUT);
        for version in ["-tls1_2", "-tls1_3"] {
            let mut args = strs(&v1);
            args.push(version);
            s_client(addr, &args);
        }
        if accepted {
            d.wait_log_count("opening pipe: ", 2, LOG_WAIT);
            assert!(d.stdout().contains("[CN=client]"), "{}", d.describe());
        } else {
            d.wait_log_count(
                "unauthorized: invalid principal, or principal not allowed",
                2,
                LOG_WAIT,
            );
        }
    }
}

/// Command lines the reference accepts or refuses, with its texts: each is (arguments,
/// environment, exit code, a line stderr must hold).
#[test]
fn startup_texts_and_accepted_flags() {
    let pki = Pki::new();
    let ks = pki.server.combined_path.display().to_string();
    let ca = pki.ca.cert_path.display().to_string();
    let missing = pki.dir.join("missing.args").display().to_string();
    let server = |extra: &[&str]| {
        let mut a = vec![
            "server".to_string(),
            "--listen=127.0.0.1:0".into(),
            "--target=127.0.0.1:9".into(),
            format!("--keystore={ks}"),
            format!("--cacert={ca}"),
            "--check".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    /// Arguments, an environment variable, the exit code, a text stderr must hold.
    type Case<'a> = (Vec<String>, Option<(&'a str, &'a str)>, i32, String);
    let cases: Vec<Case> = vec![
        (
            vec!["help".into(), "frob".into()],
            None,
            1,
            "ghostunnel: error: expected command but got \"frob\"\n".into(),
        ),
        (
            vec![format!("@{missing}")],
            None,
            1,
            format!(
                "ghostunnel: error: failed to open arguments file \"{missing}\": open {missing}: no such file or directory, try --help"
            ),
        ),
        (
            server(&["--allow-all", "--connect-timeout=5"]),
            None,
            1,
            "ghostunnel: error: time: missing unit in duration \"5\", try --help".into(),
        ),
        (
            server(&["--allow-all", "--connect-timeout=1x"]),
            None,
            1,
            "ghostunnel: error: time: unknown unit \"x\" in duration \"1x\", try --help".into(),
        ),
        (
            server(&["--allow-all", "--quiet=bogus"]),
            None,
            1,
            "enum value must be one of ,all,conns,handshake-errs,conn-errs, got 'bogus'".into(),
        ),
        (
            server(&["--allow-all", "--metrics-graphite=no-port"]),
            None,
            1,
            "ghostunnel: error: 'no-port' is not a valid TCP address: address no-port: missing port in address, try --help".into(),
        ),
        (
            server(&["--allow-uri=spiffe://a/**b"]),
            None,
            1,
            "error: wildcard '*' can only appear between two separators\n".into(),
        ),
        (server(&["--allow-all", "--metrics-interval=0"]), None, 0, String::new()),
        (
            server(&["--allow-all", "--use-workload-api-timeout=5s"]),
            None,
            0,
            String::new(),
        ),
        (server(&["--allow-all"]), Some(("PKCS11_PIN", "1234")), 0, String::new()),
        (
            server(&["--allow-all"]),
            Some(("PKCS11_TOKEN_LABEL", "t")),
            0,
            String::new(),
        ),
        (
            server(&["--allow-all", "--status=127.0.0.1:0", "--enable-pprof"]),
            None,
            0,
            String::new(),
        ),
        (
            vec!["--no-version".into()],
            None,
            0,
            "rev ".into(),
        ),
        (
            vec!["--no-help".into()],
            None,
            0,
            "usage: ghostunnel [<flags>] <command> [<args> ...]".into(),
        ),
    ];
    for (args, env, code, stderr) in cases {
        let mut cmd = Cmd::bare().args(&args);
        if let Some((k, v)) = env {
            cmd = cmd.env(k, v);
        }
        let o = cmd.run(Duration::from_secs(20));
        o.assert_code(code);
        if !stderr.is_empty() {
            o.assert_stderr_contains(&stderr);
        }
    }
}

/// `--help` and `server --help` print the full usage, as the reference does: the global flags,
/// then every command with its own flags.
#[test]
fn help_is_the_full_usage() {
    for args in [
        &["--help"][..],
        &["server", "--help"],
        &["client", "--help"],
    ] {
        let o = Cmd::bare().args(args).run(Duration::from_secs(10));
        o.assert_code(0);
        let text = o.stderr.clone();
        assert!(
            text.starts_with("usage: ghostunnel [<flags>] <command> [<args> ...]\n"),
            "{text}"
        );
        for needle in [
            "\nFlags:\n  --[no-]help  ",
            "\nCommands:\nhelp [<command>...]\n    Show help.\n",
            "\nserver --listen=ADDR --target=ADDR [<flags>]\n",
            "\n    --allow-cn=CN ...  ",
            "\nclient --listen=ADDR --target=ADDR [<flags>]\n",
            "\n    --verify-cn=CN ...  ",
        ] {
            assert!(
                text.contains(needle),
                "{args:?}: {needle:?} missing:\n{text}"
            );
        }
    }
}
