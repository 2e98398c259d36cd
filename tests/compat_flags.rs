//! Hidden compatibility flags that existing command lines carry (docs/behaviour.md §2.3, §2.4,
//! §2.5, §2.6): each one has the reference's effect, or fails with a clear error; none is silently
//! ignored.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::util::*;

const LOG_WAIT: Duration = Duration::from_secs(5);

/// A TLS 1.2 client offering only the cipher suites whose names contain `family`.
fn client_with_suites(pki: &Pki, family: &str) -> Arc<ClientConfig> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites
        .retain(|s| format!("{:?}", s.suite()).contains(family));
    assert!(!p.cipher_suites.is_empty());
    let chain = vec![pki.client.cert_der.clone().into()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pki.client.key_der.clone().into());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert_der.clone().into()).unwrap();
    let cfg = ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(cfg)
}

/// `--max-tls-version=TLS1.2` (any case) caps the server at TLS 1.2: a TLS 1.3-only client
/// is refused, a TLS 1.2 client is served. Another version fails startup.
#[test]
fn max_tls_version_caps_the_server() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", "--max-tls-version=tls1.2"],
    );
    let tls13 = client_config_versions(
        &pki.ca.cert_der,
        Some(&pki.client),
        &[&rustls::version::TLS13],
    );
    assert!(try_echo(addr, tls13, b"x").is_err(), "TLS 1.3 got through");
    d.wait_log("error on TLS handshake from", LOG_WAIT);
    let tls12 = client_config_versions(
        &pki.ca.cert_der,
        Some(&pki.client),
        &[&rustls::version::TLS12],
    );
    try_echo(addr, tls12, b"x").unwrap_or_else(|e| panic!("{e}{}", d.describe()));

    for mode in ["server", "client"] {
        let o = Cmd::new(mode)
            .args(["--listen", "127.0.0.1:0", "--target", "127.0.0.1:1"])
            .args(if mode == "server" {
                pki.server_cred_args()
            } else {
                pki.client_cred_args()
            })
            .args(
                ["--allow-all", "--max-tls-version=TLS1.1"]
                    .iter()
                    .filter(|a| mode == "server" || !a.starts_with("--allow")),
            )
            .run(Duration::from_secs(10));
        o.assert_code(1);
        o.assert_stderr_contains("error: invalid max TLS version: unsupported TLS version: TLS1.1");
    }
}

/// `--cipher-suites=CHACHA` offers only ChaCha20-Poly1305: an AES-only client is refused,
/// a ChaCha client served. Names are trimmed; unknown names and `UNSAFE-AZURE` are errors.
#[test]
fn cipher_suites_select_the_offered_suites() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", "--cipher-suites= CHACHA "],
    );
    assert!(try_echo(addr, client_with_suites(&pki, "AES"), b"x").is_err());
    d.wait_log("error on TLS handshake from", LOG_WAIT);
    try_echo(addr, client_with_suites(&pki, "CHACHA"), b"x")
        .unwrap_or_else(|e| panic!("{e}{}", d.describe()));

    let run = |extra: &[&str]| {
        Cmd::new("server")
            .args(["--listen", "127.0.0.1:0", "--target", "127.0.0.1:1"])
            .args(pki.server_cred_args())
            .arg("--allow-all")
            .args(extra)
            .run(Duration::from_secs(10))
    };
    run(&["--cipher-suites=UNSAFE-AZURE"])
        .assert_code(1)
        .assert_stderr_contains("error: invalid cipher suite 'UNSAFE-AZURE' selected");
    run(&[
        "--cipher-suites=AES,UNSAFE-AZURE",
        "--allow-unsafe-cipher-suites",
    ])
    .assert_code(1)
    .assert_stderr_contains("cipher suite group 'UNSAFE-AZURE' is not supported by this build");
}

/// `--use-landlock` (and its negation) is accepted and changes nothing: the sandbox is on.
#[test]
fn use_landlock_is_accepted() {
    let pki = Pki::new();
    let backend = Backend::echo();
    for flag in ["--use-landlock", "--no-use-landlock"] {
        let (d, addr) = start_server(&pki, &backend.target(), &["--allow-all", flag]);
        try_echo(
            addr,
            client_config(&pki.ca.cert_der, Some(&pki.client)),
            b"x",
        )
        .unwrap();
        assert!(
            d.stdout().contains("setting up landlock rules"),
            "{}",
            d.describe()
        );
    }
}

/// The `-san` spellings of the server's `--allow-*` flags and the hidden `--allow-ip`
/// authorize exactly like the documented names.
#[test]
fn allow_san_aliases_authorize() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let client = client_config(&pki.ca.cert_der, Some(&pki.client));
    for flag in [
        "--allow-dns-san=client.example.com",
        "--allow-uri-san=spiffe://example.com/client1",
        "--allow-ip-san=127.0.0.1",
        "--allow-ip=127.0.0.1",
    ] {
        let (d, addr) = start_server(&pki, &backend.target(), &[flag]);
        try_echo(addr, client.clone(), b"x").unwrap_or_else(|e| panic!("{e}{}", d.describe()));
    }
    for flag in [
        "--allow-dns-san=other.example.com",
        "--allow-ip-san=10.1.2.3",
    ] {
        let (mut d, addr) = start_server(&pki, &backend.target(), &[flag]);
        assert!(
            try_echo(addr, client.clone(), b"x").is_err(),
            "{flag} let it in"
        );
        d.wait_log("error on TLS handshake from", LOG_WAIT);
    }
}

/// The client's `--verify-*-san` spellings check the server like the documented names.
#[test]
fn verify_san_aliases_verify() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    for flag in [
        "--verify-dns-san=localhost",
        "--verify-ip-san=127.0.0.1",
        "--verify-ip=::1",
    ] {
        let (d, addr) = start_client(&pki, &srv.target_localhost(), &[flag]);
        let mut s = tcp_connect(addr);
        std::io::Write::write_all(&mut s, b"hi").unwrap();
        let mut back = [0u8; 2];
        std::io::Read::read_exact(&mut s, &mut back)
            .unwrap_or_else(|e| panic!("{flag}: {e}{}", d.describe()));
    }
    let (mut d, addr) = start_client(
        &pki,
        &srv.target_localhost(),
        &["--verify-uri-san=spiffe://example.com/other"],
    );
    let mut s = tcp_connect(addr);
    let _ = std::io::Write::write_all(&mut s, b"hi");
    let (data, _) = read_to_end_lossy(&mut s);
    assert!(data.is_empty());
    d.wait_log("error on dial: ", LOG_WAIT);
}

/// Hidden ACME test hooks fail with a clear error rather than being dropped; macOS/Windows
/// flags are unknown on Linux.
#[test]
fn unsupported_hidden_flags_are_errors() {
    let pki = Pki::new();
    for (flag, msg) in [
        (
            "--auto-acme-renew-check-interval=1h",
            "error: --auto-acme-renew-check-interval is not supported by this build",
        ),
        (
            "--auto-acme-alt-tls-alpn-port=5001",
            "error: --auto-acme-alt-tls-alpn-port is not supported by this build",
        ),
        (
            "--keychain-identity=x",
            "ghostunnel: error: unknown long flag '--keychain-identity', try --help",
        ),
        (
            "--eventlog",
            "ghostunnel: error: unknown long flag '--eventlog', try --help",
        ),
    ] {
        Cmd::new("server")
            .args(["--listen", "127.0.0.1:0", "--target", "127.0.0.1:1"])
            .args(pki.server_cred_args())
            .args(["--allow-all", flag])
            .run(Duration::from_secs(10))
            .assert_code(1)
            .assert_stderr_contains(msg);
    }
}
