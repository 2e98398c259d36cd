//! ACME (`--auto-acme-cert`) end to end: the real binary gets its certificate from the real
//! pebble test CA (Debian package `pebble`) on loopback, pebble's validator dialing the
//! proxy's own `--listen` port for the TLS-ALPN-01 challenge (no `PEBBLE_VA_ALWAYS_VALID`).
//! Pebble's HTTPS is trusted the reference's way, through `SSL_CERT_FILE`; clients still need a
//! certificate from `--cacert`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::util::*;

const NAME: &str = "ghostunnel.example.com";

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
}

fn wait_for_tcp(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing came up on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// pebble plus pebble-challtestsrv (its DNS, answering 127.0.0.1 for every name); both
/// killed on drop.
struct Pebble {
    ca: Option<Child>,
    dns: Child,
    pub url: String,
    /// CA of pebble's own HTTPS certificate (for `SSL_CERT_FILE`).
    pub https_ca: PathBuf,
    management: u16,
    https_ca_der: Vec<u8>,
    dir: TempDir,
    /// Holds pebble's certificate files (and `https_ca`) until the end of the test.
    _pki: Pki,
}

impl Pebble {
    /// Pebble whose validator dials `tls_port`, issuing certificates valid `validity` seconds.
    fn start(tls_port: u16, validity: u64) -> Pebble {
        let pki = Pki::new();
        let dir = TempDir::new();
        let leaf = pki.issue(
            "pebble",
            &LeafSpec::server("pebble").dns("localhost").ip("127.0.0.1"),
        );
        let port = free_port();
        let management = free_port();
        let config = format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{port}",
                "managementListenAddress": "127.0.0.1:{management}",
                "certificate": "{}", "privateKey": "{}",
                "httpPort": {}, "tlsPort": {tls_port}, "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": {validity}}}}}"#,
            leaf.cert_path.display(),
            leaf.key_path.display(),
            free_port()
        );
        let config_path = dir.write("pebble.json", config);
        let dns_port = free_udp_port();
        let dns_management = free_port();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv must be installed (apt-get install pebble)");
        wait_for_tcp(dns_management);
        let ca = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble must be installed (apt-get install pebble)");
        wait_for_tcp(port);
        wait_for_tcp(management);
        Pebble {
            ca: Some(ca),
            dns,
            url: format!("https://127.0.0.1:{port}/dir"),
            https_ca: pki.ca.cert_path.clone(),
            https_ca_der: pki.ca.cert_der.clone(),
            management,
            dir,
            _pki: pki,
        }
    }

    /// The root pebble issues under (random per run), from its management interface.
    fn issuing_root(&self) -> Vec<u8> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.https_ca_der.clone()))
            .unwrap();
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let sock = TcpStream::connect(("127.0.0.1", self.management)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let conn = ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
        let mut s = StreamOwned::new(conn, sock);
        s.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        let pem = &text[text.find("-----BEGIN").expect("root PEM")..];
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|c: CertificateDer<'_>| c.to_vec())
            .expect("root certificate")
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.ca.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
        let _ = &self.dir;
    }
}

/// `ghostunnel server` getting its certificate from `pebble`, storage under `data`.
fn acme_server(pebble: &Pebble, pki: &Pki, data: &TempDir, port: u16, extra: &[&str]) -> Cmd {
    Cmd::new("server")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--target", &Backend::echo().target()])
        .args(pki.cacert_args())
        .args(["--allow-cn", "client"])
        .args(["--auto-acme-cert", "GhostUnnel.Example.com"])
        .args([
            "--auto-acme-email",
            "admin@example.com",
            "--auto-acme-agree-to-tos",
        ])
        .args(["--auto-acme-ca", &pebble.url])
        .args(["--auto-acme-alt-tls-alpn-port", &port.to_string()])
        .args(extra)
        .env("XDG_DATA_HOME", &data.path().display().to_string())
        .env("SSL_CERT_FILE", &pebble.https_ca.display().to_string())
}

/// An mTLS client trusting pebble's issuing root, sending SNI = the ACME name.
fn client_cfg(pebble_root: &[u8], pki: &Pki, with_cert: bool) -> Arc<ClientConfig> {
    client_config(pebble_root, with_cert.then_some(&pki.client))
}

fn connect(addr: SocketAddr, cfg: Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let mut s = tls_connect(addr, cfg, NAME)?;
    assert_echo(&mut s, b"ping");
    Ok(s)
}

fn served_leaf(s: &TlsStream) -> Vec<u8> {
    s.conn.peer_certificates().expect("server certificate")[0].to_vec()
}

#[test]
fn acme_first_issuance_serves_the_cas_certificate_to_mtls_clients_only() {
    let port = free_port();
    let pebble = Pebble::start(port, 3600);
    let pki = Pki::new();
    let data = TempDir::new();
    let (_, status) = free_addr();
    let d = acme_server(
        &pebble,
        &pki,
        &data,
        port,
        &["--status", &format!("http://{status}")],
    )
    .spawn();
    let out = d.stdout();
    assert!(
        out.contains("using ACME server as certificate source"),
        "{}",
        d.describe()
    );
    let root = pebble.issuing_root();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let s = connect(addr, client_cfg(&root, &pki, true)).expect("verified against pebble's root");
    drop(s);
    // A client without a certificate is still refused.
    let refused = tls_connect(addr, client_cfg(&root, &pki, false), NAME).and_then(|mut s| {
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read(&mut b).map(|_| s)
    });
    assert!(
        refused.is_err(),
        "a client without a certificate got through"
    );
    // /_status shows the managed certificate.
    let resp = http(&status.to_string(), "GET", "/_status");
    let body = resp.body.clone();
    assert!(
        body.contains(&format!("\"acme_name\":\"{NAME}\"")),
        "{body}"
    );
    assert!(body.contains("\"acme_state\":\"valid\""), "{body}");
    // Stored where the reference keeps it.
    let issuer = format!(
        "127.0.0.1-{}-dir",
        pebble
            .url
            .split(':')
            .nth(2)
            .unwrap()
            .trim_end_matches("/dir")
    );
    assert!(
        data.join(&format!(
            "certmagic/certificates/{issuer}/{NAME}/{NAME}.crt"
        ))
        .exists(),
        "{}",
        d.describe()
    );
    d.signal(libc::SIGTERM);
}

#[test]
fn acme_renewal_reaches_new_connections_while_an_old_one_keeps_flowing() {
    let port = free_port();
    let pebble = Pebble::start(port, 20);
    let pki = Pki::new();
    let data = TempDir::new();
    let mut d = acme_server(
        &pebble,
        &pki,
        &data,
        port,
        &["--auto-acme-renew-check-interval", "1s"],
    )
    .spawn();
    let root = pebble.issuing_root();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut old = connect(addr, client_cfg(&root, &pki, true)).unwrap();
    let first = served_leaf(&old);
    // A third of 20 s is left after ~13 s; the validator then comes through our own listener.
    d.wait_log(
        "completed ACME TLS-ALPN-01 challenge from",
        Duration::from_secs(40),
    );
    let mut renewed = None;
    assert!(
        eventually(Duration::from_secs(30), || {
            let Ok(s) = connect(addr, client_cfg(&root, &pki, true)) else {
                return false;
            };
            let leaf = served_leaf(&s);
            let changed = leaf != first;
            if changed {
                renewed = Some(leaf);
            }
            changed
        }),
        "new connections never got the renewed certificate{}",
        d.describe()
    );
    assert_echo(&mut old, b"still flowing");
    assert_ne!(renewed.unwrap(), first);
}

#[test]
fn acme_restart_reuses_the_stored_certificate_without_the_ca() {
    let port = free_port();
    let mut pebble = Pebble::start(port, 3600);
    let pki = Pki::new();
    let data = TempDir::new();
    let root = pebble.issuing_root();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut d = acme_server(&pebble, &pki, &data, port, &[]).spawn();
    let first = served_leaf(&connect(addr, client_cfg(&root, &pki, true)).unwrap());
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(10));
    pebble.stop();
    // `--check` reports the stored certificate without the CA.
    let out = acme_server(&pebble, &pki, &data, port, &["--check"]).run(Duration::from_secs(20));
    out.assert_code(0);
    out.assert_stdout_contains(&format!("{NAME}.crt (ACME)"));
    out.assert_stdout_contains(&format!("  acme ca: {}", pebble.url));
    out.assert_stdout_contains("  acme renewal due: ");
    let started = Instant::now();
    let d = acme_server(&pebble, &pki, &data, port, &[]).spawn();
    // No attempt at the CA failed (a failing one would retry for over a minute).
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        !d.stderr().contains("ACME initial certificate load failed"),
        "{}",
        d.describe()
    );
    let again = served_leaf(&connect(addr, client_cfg(&root, &pki, true)).unwrap());
    assert_eq!(first, again);
}

#[test]
fn acme_a_refused_challenge_is_retried_with_the_reference_line() {
    // Pebble's validator dials a port where nobody listens.
    let pebble = Pebble::start(free_port(), 3600);
    let pki = Pki::new();
    let data = TempDir::new();
    let d = acme_server(&pebble, &pki, &data, free_port(), &[]).start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.stderr().contains("retrying in 5s") {
        assert!(Instant::now() < deadline, "no retry line{}", d.describe());
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = d.stderr();
    let line = err.lines().find(|l| l.contains("retrying in 5s")).unwrap();
    // `YYYY/MM/DD hh:mm:ss ACME initial certificate load failed (attempt 1/5): ...`
    assert_eq!(&line[4..5], "/", "{line}");
    let msg = &line[20..];
    assert!(
        msg.starts_with(&format!(
            "ACME initial certificate load failed (attempt 1/5): {NAME}: obtaining certificate: \
             [{NAME}] Obtain: [{NAME}] solving challenge: {NAME}: [{NAME}] authorization failed: \
             HTTP 403 urn:ietf:params:acme:error:"
        )),
        "{line}"
    );
    assert!(!d.stdout().contains("listening for connections on"));
}

#[test]
fn acme_an_unreachable_ca_ends_after_five_attempts() {
    let pki = Pki::new();
    let data = TempDir::new();
    let dead = free_port();
    let out = Cmd::new("server")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--target", "127.0.0.1:9"])
        .args(pki.cacert_args())
        .args(["--allow-cn", "client", "--auto-acme-cert", NAME])
        .args([
            "--auto-acme-email",
            "admin@example.com",
            "--auto-acme-agree-to-tos",
        ])
        .args(["--auto-acme-ca", &format!("https://127.0.0.1:{dead}/dir")])
        .env("XDG_DATA_HOME", &data.path().display().to_string())
        .run(Duration::from_secs(120));
    out.assert_code(1);
    assert_eq!(
        out.stderr
            .matches("ACME initial certificate load failed")
            .count(),
        4
    );
    for (n, wait) in [(1, "5s"), (2, "10s"), (3, "20s"), (4, "40s")] {
        out.assert_stderr_contains(&format!("(attempt {n}/5)"));
        out.assert_stderr_contains(&format!("; retrying in {wait}"));
    }
    let cause = format!(
        "{NAME}: obtaining certificate: [{NAME}] Obtain: registering account \
         [mailto:admin@example.com] with server: Get \"https://127.0.0.1:{dead}/dir\": dial tcp \
         127.0.0.1:{dead}: connect: connection refused"
    );
    out.assert_stdout_contains(&format!(
        "error: Unable to load or obtain ACME cert: {cause}"
    ));
    out.assert_stderr_contains(&format!("error: {cause}"));
}

#[test]
fn acme_flags_are_validated_with_the_reference_texts() {
    let pki = Pki::new();
    let base = |extra: &[&str]| {
        Cmd::new("server")
            .args(["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"])
            .args(pki.cacert_args())
            .args(["--allow-cn", "client"])
            .args(extra)
            .run(Duration::from_secs(10))
    };
    base(&["--auto-acme-cert", NAME, "--auto-acme-agree-to-tos"])
        .assert_code(1)
        .assert_stderr_contains(
            "--auto-acme-cert was specified but no email address was provided with --auto-acme-email",
        );
    base(&["--auto-acme-cert", NAME, "--auto-acme-email", "a@b"])
        .assert_code(1)
        .assert_stderr_contains(
            "--auto-acme-agree-to-tos was not specified and is required if --auto-acme-cert is specified",
        );
    let mut with_keystore = vec!["--auto-acme-cert", NAME, "--auto-acme-email", "a@b"];
    with_keystore.push("--auto-acme-agree-to-tos");
    let ks = pki.server.keystore_args();
    with_keystore.extend(ks.iter().map(String::as_str));
    base(&with_keystore).assert_code(1).assert_stderr_contains(
        "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive",
    );
    Cmd::new("client")
        .args(["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"])
        .args(pki.client_cred_args())
        .args(["--auto-acme-cert", NAME])
        .run(Duration::from_secs(10))
        .assert_code(1)
        .assert_stderr_contains("unknown long flag '--auto-acme-cert'");
}
