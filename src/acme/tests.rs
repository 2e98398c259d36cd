//! The ACME source against the real pebble test CA (Debian package `pebble`), on loopback:
//! first issuance through our own challenge listener, reuse of the stored certificate with the
//! CA gone, renewal of a short-lived certificate by the maintenance thread, and a CA that
//! refuses the challenge. Pebble validates for real (no `PEBBLE_VA_ALWAYS_VALID`); its DNS is
//! pebble-challtestsrv answering 127.0.0.1 for every name.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;

use super::*;
use crate::certs::test_support::{Spec, ca_and_leaf, scratch_dir};

const NAME: &str = "ghostunnel.example.com";

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits (at most 20 s) until something accepts on 127.0.0.1:`port`.
fn wait_for_tcp(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing came up on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running pebble and its DNS; both killed on drop.
struct Pebble {
    ca: Child,
    dns: Child,
    url: String,
    roots: Vec<CertificateDer<'static>>,
    dir: PathBuf,
}

impl Pebble {
    /// Starts pebble, whose validator dials `tls_port` for TLS-ALPN-01, issuing certificates
    /// valid for `validity` seconds.
    fn start(tls_port: u16, validity: u64) -> Pebble {
        let dir = scratch_dir("pebble");
        let (ca, leaf) = ca_and_leaf(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &Spec {
                cn: Some("pebble"),
                dns: &["localhost"],
                ips: &["127.0.0.1"],
                ..Spec::default()
            },
        );
        let (cert, key) = leaf.write(&dir, "pebble");
        let port = free_tcp_port();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{}", free_tcp_port()),
            "certificate": cert,
            "privateKey": key,
            "httpPort": free_tcp_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let dns_port = free_udp_port();
        let dns_management = free_tcp_port();
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
        let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
        let ca_child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble must be installed (apt-get install pebble)");
        let roots = vec![CertificateDer::from(ca.der.clone())];
        let pebble = Pebble {
            ca: ca_child,
            dns,
            url: format!("https://127.0.0.1:{port}/dir"),
            roots,
            dir,
        };
        pebble.wait_ready();
        pebble
    }

    fn http(&self) -> http::Client {
        http::Client::with_roots(self.roots.clone(), Duration::from_secs(10)).unwrap()
    }

    fn wait_ready(&self) {
        let client = self.http();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = client
                .send(
                    &::http::Method::GET,
                    &self.url,
                    &::http::HeaderMap::new(),
                    b"",
                )
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("pebble did not come up: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.ca.kill();
        let _ = self.ca.wait();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn settings(pebble: &Pebble, root: &Path, challenge_port: u16, check: Duration) -> Settings {
    let mut s = Settings::from_flags(
        "GhostUnnel.Example.com",
        "admin@example.com",
        "",
        &pebble.url,
        Some(check),
        challenge_port,
        &format!("127.0.0.1:{challenge_port}"),
    );
    s.storage_root = root.join("certmagic");
    s
}

fn leaf_of(acme: &Acme) -> x509_cert::Certificate {
    let key = acme.current().expect("a certificate is installed");
    x509_cert::Certificate::from_der(&key.cert[0]).unwrap()
}

#[test]
fn first_issuance_then_a_restart_reuses_the_stored_certificate_without_the_ca() {
    let port = free_tcp_port();
    let mut pebble = Pebble::start(port, 3600);
    let data = scratch_dir("acme-data");
    let s = settings(&pebble, &data, port, Duration::from_secs(600));
    assert_eq!(s.name, NAME);
    assert_eq!(s.challenge_bind, format!("127.0.0.1:{port}"));

    let acme = Acme::with_http(s.clone(), pebble.http());
    acme.start()
        .unwrap_or_else(|e| panic!("issuance failed: {e}\npebble: {}", pebble.log()));
    let leaf = leaf_of(&acme);
    let issuer = crate::certs::render_name(&leaf.tbs_certificate.issuer);
    assert!(issuer.contains("Pebble"), "issuer {issuer}");
    assert_eq!(acme.status()[2], ("acme_state", "valid".to_string()));

    // The reference's layout, private modes.
    let issuer_dir = storage::issuer_key(&pebble.url);
    let certs = data
        .join("certmagic/certificates")
        .join(&issuer_dir)
        .join(NAME);
    for ext in ["crt", "key", "json"] {
        let p = certs.join(format!("{NAME}.{ext}"));
        let mode = std::fs::metadata(&p)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert_eq!(mode.unwrap() & 0o777, 0o600, "{}", p.display());
    }
    let users = data
        .join("certmagic/acme")
        .join(&issuer_dir)
        .join("users/admin@example.com");
    let account: serde_json::Value =
        serde_json::from_slice(&std::fs::read(users.join("admin.json")).unwrap()).unwrap();
    assert_eq!(account["contact"][0], "mailto:admin@example.com");
    assert!(
        account["location"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    assert!(users.join("admin.key").exists());
    assert!(
        !data
            .join(format!("certmagic/locks/issue_cert_{NAME}.lock"))
            .exists()
    );

    // A restart with the CA gone serves the stored certificate.
    pebble.stop();
    let again = Acme::with_http(s, pebble.http());
    let started = Instant::now();
    again.start().expect("stored certificate reused");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(again.current().unwrap().cert, acme.current().unwrap().cert);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_short_lived_certificate_is_renewed_in_the_background() {
    let port = free_tcp_port();
    let pebble = Pebble::start(port, 15);
    let data = scratch_dir("acme-renew");
    let acme = Acme::with_http(
        settings(&pebble, &data, port, Duration::from_millis(500)),
        pebble.http(),
    );
    acme.start()
        .unwrap_or_else(|e| panic!("issuance failed: {e}\npebble: {}", pebble.log()));
    let first = leaf_of(&acme);
    let account_before = std::fs::read(
        data.join("certmagic/acme")
            .join(storage::issuer_key(&pebble.url))
            .join("users/admin@example.com/admin.json"),
    )
    .unwrap();
    // Stands in for the proxy's listener, which answers the validator once it is open.
    let s = acme.settings();
    assert!(s.challenge_on_listener());
    let _proxy = TempListener::start(&s.challenge_bind, acme.challenges())
        .unwrap()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    acme.spawn_maintenance(Box::new(move || {
        let _ = tx.lock().unwrap().send(());
    }))
    .unwrap();
    // A third of 15 s is left after 10 s: renewal comes then, well before expiry.
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "no renewal; status {:?}\npebble: {}",
                acme.status(),
                pebble.log()
            )
        });
    acme.stop();
    let second = leaf_of(&acme);
    assert_ne!(
        first.tbs_certificate.serial_number,
        second.tbs_certificate.serial_number
    );
    assert!(
        second.tbs_certificate.validity.not_after.to_system_time()
            > first.tbs_certificate.validity.not_after.to_system_time()
    );
    assert!(acme.status().iter().any(|(k, _)| *k == "acme_last_renewal"));
    // The account was reused, not registered again.
    let account_after = std::fs::read(
        data.join("certmagic/acme")
            .join(storage::issuer_key(&pebble.url))
            .join("users/admin@example.com/admin.json"),
    )
    .unwrap();
    assert_eq!(account_before, account_after);
    // The stored certificate is the renewed one.
    let stored = acme.storage.load_cert().unwrap().unwrap();
    let m = managed(&stored, &acme.provider).unwrap();
    assert_eq!(m.key.cert, acme.current().unwrap().cert);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_refused_challenge_fails_the_attempt_with_the_cas_reason() {
    // Pebble's validator dials a port where nobody answers; we listen elsewhere.
    let dead = free_tcp_port();
    let pebble = Pebble::start(dead, 3600);
    let data = scratch_dir("acme-refused");
    let ours = free_tcp_port();
    let acme = Acme::with_http(
        settings(&pebble, &data, ours, Duration::from_secs(600)),
        pebble.http(),
    );
    let e = acme.initial_attempt().unwrap_err();
    let want_prefix = format!(
        "{NAME}: obtaining certificate: [{NAME}] Obtain: [{NAME}] solving challenge: {NAME}: \
         [{NAME}] authorization failed: HTTP 403 urn:ietf:params:acme:error:"
    );
    assert!(e.starts_with(&want_prefix), "{e}");
    assert!(e.ends_with(&format!("(ca={})", pebble.url)), "{e}");
    assert!(acme.current().is_none());
    // Nothing half-written: no certificate, no lock, no challenge left behind.
    assert_eq!(acme.storage.load_cert().unwrap(), None);
    assert!(acme.challenges.lookup(NAME).is_none());
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn an_unreachable_ca_reads_like_the_reference() {
    let port = free_tcp_port();
    let data = scratch_dir("acme-down");
    let mut s = Settings::from_flags(
        NAME,
        "admin@example.com",
        &format!("https://127.0.0.1:{port}/dir"),
        "",
        None,
        free_tcp_port(),
        "127.0.0.1:1",
    );
    s.storage_root = data.join("certmagic");
    let acme = Acme::with_http(
        s,
        http::Client::with_roots(vec![], Duration::from_secs(2)).unwrap(),
    );
    let e = acme.initial_attempt().unwrap_err();
    assert_eq!(
        e,
        format!(
            "{NAME}: obtaining certificate: [{NAME}] Obtain: registering account \
             [mailto:admin@example.com] with server: Get \"https://127.0.0.1:{port}/dir\": dial tcp \
             127.0.0.1:{port}: connect: connection refused"
        )
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn settings_follow_the_reference_flags() {
    let s = Settings::from_flags("A.Example", "e@x", "", "", None, 0, "0.0.0.0:8443");
    assert_eq!(s.ca, LETS_ENCRYPT);
    assert_eq!(s.connect_ports(), [443]);
    assert_eq!(s.check_interval, Duration::from_secs(600));
    assert_eq!(s.challenge_bind, "[::]:443");
    let s = Settings::from_flags(
        "a",
        "e",
        "ca.example:14000/dir",
        "",
        None,
        8443,
        "[::1]:8443",
    );
    assert_eq!(s.ca, "https://ca.example:14000/dir");
    assert_eq!(s.challenge_bind, "[::1]:8443");
    assert_eq!(s.challenge_port(), Some(8443));
    let s = Settings::from_flags(
        "a",
        "e",
        "https://ca/dir",
        "http://127.0.0.1:9/t",
        None,
        0,
        "x",
    );
    assert_eq!(s.ca, "http://127.0.0.1:9/t");
    assert_eq!(s.connect_ports(), [9, 443]);
}

#[test]
fn ca_urls_and_names_are_checked_as_the_reference_does() {
    assert!(check_ca_url("http://127.0.0.1:14000/dir").is_ok());
    assert_eq!(
        check_ca_url("http://ca.example/dir").unwrap_err(),
        "http://ca.example/dir: insecure CA URL (HTTPS required for non-internal CA)"
    );
    assert!(check_name("a.example.com", LETS_ENCRYPT).is_ok());
    assert!(check_name("localhost", "https://127.0.0.1/dir").is_ok());
    assert_eq!(
        check_name("localhost", LETS_ENCRYPT).unwrap_err(),
        "subject 'localhost' does not qualify for a public certificate"
    );
    assert!(check_name("x.internal", LETS_ENCRYPT).is_err());
    assert!(check_name(".a.example", "https://ca/dir").is_err());
    assert!(check_name("a*.example", "https://ca/dir").is_err());
    assert!(check_name("*.example", "https://ca/dir").is_ok());
}

/// The challenge listener only answers while it lives; keep the port test honest.
#[test]
fn nothing_listens_on_the_challenge_port_after_issuance_fails() {
    let port = free_tcp_port();
    let data = scratch_dir("acme-port");
    let mut s = Settings::from_flags(
        NAME,
        "a@b",
        "https://127.0.0.1:1/dir",
        "",
        None,
        port,
        &format!("127.0.0.1:{port}"),
    );
    s.storage_root = data.join("certmagic");
    let acme = Acme::with_http(
        s,
        http::Client::with_roots(vec![], Duration::from_secs(1)).unwrap(),
    );
    assert!(acme.initial_attempt().is_err());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    let _ = std::fs::remove_dir_all(&data);
}
