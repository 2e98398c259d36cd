//! `--check`: parse, mode validation and certificate loading exactly as a start does, a report
//! on stdout and exit 0, or a start's own error line and exit 1; never binds, notifies or logs.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::util::*;

const RUN: Duration = Duration::from_secs(10);

fn server_args(pki: &Pki, listen: &str) -> Vec<String> {
    let mut a = vec![
        "server".to_string(),
        format!("--listen={listen}"),
        "--target=localhost:8080".to_string(),
        "--allow-cn=client".to_string(),
    ];
    a.extend(pki.server_cred_args());
    a
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// Runs `args` as a start and with `--check`: both fail with the same `error:` line on
/// stderr; the check prints nothing on stdout (no report, no log lines).
fn same_error_as_a_start(args: &[String], want: &str) {
    let start = Cmd::bare().args(args).run(RUN);
    start.assert_code(1);
    let check = Cmd::bare().arg("--check").args(args).run(RUN);
    check.assert_code(1);
    assert_eq!(
        lines(&check.stderr),
        [format!("error: {want}")],
        "{}",
        check.describe()
    );
    assert_eq!(
        start.stderr.lines().last(),
        Some(format!("error: {want}").as_str()),
        "{}",
        start.describe()
    );
    assert!(check.stdout.is_empty(), "{}", check.describe());
}

#[test]
fn server_check_reports_the_identity_and_binds_nothing() {
    let pki = Pki::new();
    let port = free_port();
    let o = Cmd::bare()
        .args(server_args(&pki, &format!("127.0.0.1:{port}")))
        .arg("--check")
        .run(RUN);
    o.assert_code(0);
    let ks = pki.server.combined_path.display().to_string();
    let ca = pki.ca.cert_path.display().to_string();
    assert_eq!(
        lines(&o.stdout),
        [
            "mode: server".to_string(),
            format!("listen: 127.0.0.1:{port}"),
            "target: localhost:8080".to_string(),
            format!("identity: {ks} (keystore)"),
            "  subject: CN=server,OU=servers,O=Acme".to_string(),
            "  issuer: CN=root,O=Acme".to_string(),
            "  sans: DNS:localhost, IP:127.0.0.1, IP:::1".to_string(),
            "  not before: 2020-01-01T00:00:00Z".to_string(),
            o.stdout
                .lines()
                .find(|l| l.starts_with("  not after: 2090-01-01T00:00:00Z (in "))
                .unwrap_or("  not after: missing")
                .to_string(),
            "  key: ECDSA P-256".to_string(),
            "  chain: 2 certificate(s)".to_string(),
            format!("ca: {ca} (1 certificate(s))"),
            "ok".to_string(),
        ],
        "{}",
        o.describe()
    );
    assert!(o.stderr.is_empty(), "{}", o.describe());
    // The port was never bound: it is still free.
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the checked port stays free");
}

#[test]
fn client_check_with_cert_and_key_and_with_no_identity() {
    let pki = Pki::new();
    for check_first in [true, false] {
        let mut cmd = Cmd::bare();
        if check_first {
            cmd = cmd.arg("--check");
        }
        cmd = cmd
            .args(["client", "--listen=localhost:1", "--target=localhost:2"])
            .args(pki.client.cert_key_args())
            .args(pki.cacert_args());
        if !check_first {
            cmd = cmd.arg("--check");
        }
        let o = cmd.run(RUN);
        o.assert_code(0)
            .assert_stdout_contains("mode: client\n")
            .assert_stdout_contains(&format!(
                "identity: {} + {} (cert/key)\n",
                pki.client.cert_path.display(),
                pki.client.key_path.display()
            ))
            .assert_stdout_contains("  subject: CN=client,OU=clients,O=Acme\n")
            .assert_stdout_contains(
                "  sans: DNS:client.example.com, URI:spiffe://example.com/client1, IP:127.0.0.1\n",
            )
            .assert_stdout_contains("  chain: 1 certificate(s)\n");
        assert!(o.stdout.ends_with("\nok\n"), "{}", o.describe());
    }
    let o = Cmd::new("client")
        .args([
            "--listen=localhost:1",
            "--target=localhost:2",
            "--disable-authentication",
            "--check",
        ])
        .run(RUN);
    o.assert_code(0)
        .assert_stdout_contains("identity: none (--disable-authentication)\n")
        .assert_stdout_contains("ca: system trust store (");
}

#[test]
fn rsa_and_ed25519_key_types() {
    let pki = Pki::new();
    for (alg, want) in [
        (KeyAlg::Rsa, "  key: RSA 2048\n"),
        (KeyAlg::Ed25519, "  key: Ed25519\n"),
    ] {
        let id = pki.issue(&format!("{alg:?}"), &LeafSpec::server("s").alg(alg));
        let o = Cmd::new("server")
            .args([
                "--listen=localhost:1",
                "--target=localhost:2",
                "--allow-all",
                "--check",
            ])
            .args(id.cert_key_args())
            .run(RUN);
        o.assert_code(0).assert_stdout_contains(want);
    }
}

#[test]
fn missing_key_fails_like_a_start() {
    let pki = Pki::new();
    let mut args = vec![
        "server".to_string(),
        "--listen=127.0.0.1:1".to_string(),
        "--target=localhost:2".to_string(),
        "--allow-all".to_string(),
        "--cert".to_string(),
        pki.server.cert_path.display().to_string(),
        "--key=/nonexistent/server.key".to_string(),
    ];
    same_error_as_a_start(
        &args,
        "reading certificate file \"/nonexistent/server.key\": open /nonexistent/server.key: no such file or directory",
    );
    // A key that is no key.
    args[6] = format!("--key={}", pki.server.cert_path.display());
    same_error_as_a_start(
        &args,
        "parsing X509 key pair: tls: failed to find PEM block with type ending in \"PRIVATE KEY\" in key input after skipping PEM blocks of the following types: [CERTIFICATE CERTIFICATE]",
    );
}

#[test]
fn mismatched_key_fails_like_a_start() {
    let pki = Pki::new();
    let args: Vec<String> = [
        "server",
        "--listen=127.0.0.1:1",
        "--target=localhost:2",
        "--allow-all",
        "--cert",
        &pki.server.cert_path.display().to_string(),
        "--key",
        &pki.client.key_path.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    same_error_as_a_start(
        &args,
        "parsing X509 key pair: tls: private key does not match public key",
    );
}

#[test]
fn bad_ca_fails_like_a_start() {
    let pki = Pki::new();
    let empty = pki.dir.write("empty-ca.pem", "no certificates here\n");
    let mut args = server_args(&pki, "127.0.0.1:1");
    args.push(format!("--cacert={}", empty.display()));
    // `--cacert` given twice is a parse error; replace the one from server_cred_args.
    let i = args.iter().position(|a| a == "--cacert").unwrap();
    args.drain(i..i + 2);
    same_error_as_a_start(
        &args,
        "loading trust store: unable to read certificates from CA bundle",
    );
    let last = args.len() - 1;
    args[last] = "--cacert=/nonexistent/ca.pem".to_string();
    same_error_as_a_start(
        &args,
        "loading trust store: open /nonexistent/ca.pem: no such file or directory",
    );
}

#[test]
fn expired_leaf_fails_like_a_start() {
    let pki = Pki::new();
    let id = pki.issue("old", &LeafSpec::server("old").expired());
    let args: Vec<String> = [
        "server",
        "--listen=127.0.0.1:1",
        "--target=localhost:2",
        "--allow-all",
    ]
    .map(String::from)
    .into_iter()
    .chain(id.keystore_args())
    .collect();
    same_error_as_a_start(
        &args,
        &format!(
            "certificate \"{}\" has expired (not after 2001-01-01T00:00:00Z)",
            id.combined_path.display()
        ),
    );
}

#[test]
fn mode_validation_fails_like_a_start() {
    let args: Vec<String> = [
        "server",
        "--listen=127.0.0.1:1",
        "--target=localhost:2",
        "--allow-all",
    ]
    .map(String::from)
    .to_vec();
    same_error_as_a_start(
        &args,
        "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required",
    );
}

#[test]
fn parse_errors_are_parse_errors() {
    let o = Cmd::new("server").args(["--check", "--check"]).run(RUN);
    o.assert_code(1)
        .assert_stderr_contains("ghostunnel: error: flag 'check' cannot be repeated, try --help");
}

#[test]
fn warns_when_the_leaf_expires_within_30_days() {
    let pki = Pki::new();
    let soon = pki.issue("soon", &LeafSpec::server("soon").expires_in_days(10));
    let o = Cmd::new("server")
        .args([
            "--listen=127.0.0.1:1",
            "--target=localhost:2",
            "--allow-all",
            "--check",
        ])
        .args(soon.cert_key_args())
        .run(RUN);
    o.assert_code(0).assert_stdout_contains("\nok\n");
    let warnings = lines(&o.stderr);
    assert_eq!(warnings.len(), 1, "{}", o.describe());
    let prefix = format!(
        "warning: certificate \"{} + {}\" expires in ",
        soon.cert_path.display(),
        soon.key_path.display()
    );
    assert!(
        warnings[0].starts_with(&prefix)
            && (warnings[0].contains(" 9 days") || warnings[0].contains(" 10 days")),
        "{}",
        o.describe()
    );
    // 60 days is no reason to warn.
    let later = pki.issue("later", &LeafSpec::server("later").expires_in_days(60));
    let o = Cmd::new("server")
        .args([
            "--listen=127.0.0.1:1",
            "--target=localhost:2",
            "--allow-all",
            "--check",
        ])
        .args(later.cert_key_args())
        .run(RUN);
    o.assert_code(0);
    assert!(o.stderr.is_empty(), "{}", o.describe());
}

#[test]
fn warns_when_a_ca_expires_within_30_days() {
    let pki = Pki::new();
    // A self-signed certificate as the whole bundle: a CA that expires soon.
    let soon = pki.issue("soon-ca", &LeafSpec::server("soon-ca").expires_in_days(5));
    let mut args = server_args(&pki, "127.0.0.1:1");
    let i = args.iter().position(|a| a == "--cacert").unwrap();
    args[i + 1] = soon.cert_path.display().to_string();
    let o = Cmd::bare().args(&args).arg("--check").run(RUN);
    o.assert_code(0).assert_stderr_contains(&format!(
        "warning: CA certificate \"CN=soon-ca\" in \"{}\" expires in ",
        soon.cert_path.display()
    ));
}

#[test]
fn unix_listen_checks_the_directory_and_creates_nothing() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let sock = dir.join("gt.sock");
    let o = Cmd::bare()
        .args(server_args(&pki, &format!("unix:{}", sock.display())))
        .arg("--check")
        .run(RUN);
    o.assert_code(0)
        .assert_stdout_contains(&format!("listen: unix:{}\n", sock.display()));
    assert!(!sock.exists(), "--check created {}", sock.display());

    // A missing directory fails as the bind of a start would.
    let missing = dir.join("missing/gt.sock");
    same_error_as_a_start(
        &server_args(&pki, &format!("unix:{}", missing.display())),
        &format!(
            "listen unix {}: bind: no such file or directory",
            missing.display()
        ),
    );

    // An existing socket file is only a warning (the running instance may own it).
    std::fs::write(&sock, "").unwrap();
    let o = Cmd::bare()
        .args(server_args(&pki, &format!("unix:{}", sock.display())))
        .arg("--check")
        .run(RUN);
    o.assert_code(0)
        .assert_stderr_contains(&format!("warning: {} exists: ", sock.display()));
}

#[test]
fn status_address_is_checked_not_bound() {
    let pki = Pki::new();
    let port = free_port();
    let o = Cmd::bare()
        .args(server_args(&pki, "127.0.0.1:1"))
        .arg(format!("--status=127.0.0.1:{port}"))
        .arg("--check")
        .run(RUN);
    o.assert_code(0)
        .assert_stdout_contains(&format!("status: 127.0.0.1:{port}\n"));
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the status port stays free");
    let o = Cmd::bare()
        .args(server_args(&pki, "127.0.0.1:1"))
        .arg("--status=unix:/nonexistent/status.sock")
        .arg("--check")
        .run(RUN);
    o.assert_code(1);
    assert_eq!(
        lines(&o.stderr),
        ["error: listen unix /nonexistent/status.sock: bind: no such file or directory"],
        "{}",
        o.describe()
    );
}

#[test]
fn sends_no_notification_and_ignores_socket_activation() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let path = dir.join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_nonblocking(true).unwrap();
    let o = Cmd::bare()
        .args(server_args(&pki, "systemd:web"))
        .arg("--check")
        .env("NOTIFY_SOCKET", &path.display().to_string())
        .run(RUN);
    o.assert_code(0)
        .assert_stdout_contains("listen: systemd:web (passed by systemd at start; not checked)\n");
    let mut buf = [0u8; 256];
    assert!(sock.recv(&mut buf).is_err(), "--check sent a notification");
}

/// The unit's `ExecStartPre=` line works with the same argument file as `ExecStart=`.
#[test]
fn check_with_an_argument_file() {
    let pki = Pki::new();
    let args = server_args(&pki, "127.0.0.1:1").join("\n");
    let file = pki.dir.write("web.args", format!("# web tunnel\n{args}\n"));
    let o = Cmd::bare()
        .arg("--check")
        .arg(format!("@{}", file.display()))
        .run(RUN);
    o.assert_code(0).assert_stdout_contains("mode: server\n");
}
