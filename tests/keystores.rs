//! Server identities from PKCS#12 (modern, legacy, empty password) and combined PEM
//! keystores, for RSA, ECDSA P-256/P-384 and Ed25519 keys (docs/behaviour.md §3.3, §3.4).

use std::time::Duration;

use crate::util::*;

enum Store {
    P12(P12Kind, &'static str),
    Pem,
}

/// Starts a server whose identity comes from the given keystore and checks that a client
/// trusting the CA completes a handshake, sees exactly the generated server certificate and
/// gets its data echoed.
fn keystore_case(alg: KeyAlg, store: Store) {
    let pki = Pki::with_server_alg(alg);
    let backend = Backend::echo();
    let (path, pass) = match store {
        Store::P12(kind, pass) => (pki.server.p12(&pki.dir, kind, pass), pass),
        Store::Pem => (pki.server.combined_path.clone(), ""),
    };
    let (listen, addr) = free_addr();
    let mut cmd = Cmd::new("server")
        .args(["--listen", &listen, "--target", &backend.target()])
        .arg("--keystore")
        .arg(&path)
        .args(pki.cacert_args())
        .arg("--allow-cn=client");
    if !pass.is_empty() {
        cmd = cmd.arg(format!("--storepass={pass}"));
    }
    let d = cmd.spawn();
    assert!(
        d.stdout()
            .contains("using keystore file on disk as certificate source"),
        "{}",
        d.describe()
    );
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let s = try_echo(addr, cfg, b"hello")
        .unwrap_or_else(|e| panic!("{alg:?} keystore not usable: {e}{}", d.describe()));
    let presented = s.conn.peer_certificates().expect("server certificates");
    assert_eq!(
        presented[0].as_ref(),
        pki.server.cert_der.as_slice(),
        "server presented another leaf"
    );
}

macro_rules! keystore_tests {
    ($($name:ident: $alg:expr, $store:expr;)*) => {
        $(
            #[test]
            fn $name() {
                keystore_case($alg, $store);
            }
        )*
    };
}

keystore_tests! {
    p12_modern_rsa: KeyAlg::Rsa, Store::P12(P12Kind::Modern, "secret");
    p12_modern_p256: KeyAlg::P256, Store::P12(P12Kind::Modern, "secret");
    p12_modern_p384: KeyAlg::P384, Store::P12(P12Kind::Modern, "secret");
    p12_modern_ed25519: KeyAlg::Ed25519, Store::P12(P12Kind::Modern, "secret");
    p12_legacy_rsa: KeyAlg::Rsa, Store::P12(P12Kind::Legacy, "secret");
    p12_legacy_p256: KeyAlg::P256, Store::P12(P12Kind::Legacy, "secret");
    p12_legacy_p384: KeyAlg::P384, Store::P12(P12Kind::Legacy, "secret");
    p12_legacy_ed25519: KeyAlg::Ed25519, Store::P12(P12Kind::Legacy, "secret");
    p12_empty_password_rsa: KeyAlg::Rsa, Store::P12(P12Kind::Modern, "");
    p12_empty_password_p256: KeyAlg::P256, Store::P12(P12Kind::Modern, "");
    p12_empty_password_legacy_p384: KeyAlg::P384, Store::P12(P12Kind::Legacy, "");
    p12_empty_password_ed25519: KeyAlg::Ed25519, Store::P12(P12Kind::Modern, "");
    pem_keystore_rsa: KeyAlg::Rsa, Store::Pem;
    pem_keystore_p256: KeyAlg::P256, Store::Pem;
    pem_keystore_p384: KeyAlg::P384, Store::Pem;
    pem_keystore_ed25519: KeyAlg::Ed25519, Store::Pem;
}

/// `KEYSTORE_PASS` is the fallback for `--storepass`.
#[test]
fn p12_password_from_env() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let p12 = pki.server.p12(&pki.dir, P12Kind::Modern, "envpass");
    let (listen, addr) = free_addr();
    let d = Cmd::new("server")
        .args(["--listen", &listen, "--target", &backend.target()])
        .arg("--keystore")
        .arg(&p12)
        .args(pki.cacert_args())
        .arg("--allow-cn=client")
        .env("KEYSTORE_PASS", "envpass")
        .spawn();
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    try_echo(addr, cfg, b"hello").unwrap_or_else(|e| panic!("{e}{}", d.describe()));
}

/// A wrong `--storepass` fails startup with the docs/behaviour.md §3.4 text and exit 1.
#[test]
fn p12_wrong_password() {
    let pki = Pki::new();
    let p12 = pki.server.p12(&pki.dir, P12Kind::Modern, "right");
    let (listen, _) = free_addr();
    let p = p12.display().to_string();
    let o = Cmd::new("server")
        .args(["--listen", &listen, "--target", "localhost:9"])
        .args(["--keystore", &p, "--storepass", "wrong"])
        .args(pki.cacert_args())
        .arg("--allow-all")
        .run(Duration::from_secs(10));
    let e = format!(
        "reading certificate file \"{p}\": failed to parse '{p}': unable to read keystore: pkcs12: decryption password incorrect"
    );
    o.assert_code(1)
        .assert_stderr_contains(&format!("error: {e}"))
        .assert_stdout_contains(&format!("error: unable to load certificates: {e}"))
        .assert_stdout_lacks(READY_LINE);
}

/// A client identity from PKCS#12 works in client mode as well.
#[test]
fn client_p12_identity() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    let p12 = pki.client.p12(&pki.dir, P12Kind::Legacy, "pw");
    let (listen, addr) = free_addr();
    let d = Cmd::new("client")
        .args(["--listen", &listen, "--target", &srv.target_localhost()])
        .arg("--keystore")
        .arg(&p12)
        .arg("--storepass=pw")
        .args(pki.cacert_args())
        .spawn();
    let mut s = tcp_connect(addr);
    assert_echo(&mut s, b"hello");
    assert_eq!(
        srv.peers(),
        vec![Some(pki.client.cert_der.clone())],
        "{}",
        d.describe()
    );
}
