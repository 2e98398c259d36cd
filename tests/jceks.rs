//! Java keystores for `--keystore`: JCEKS stores made by `keytool` at test time from the
//! generated PKI (RSA and ECDSA private-key entries with chains, trusted-certificate entries,
//! secret keys, JKS), in both modes, with the reference's entry rules and error texts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;

const PASS: &str = "changeit";
const RUN: Duration = Duration::from_secs(30);

/// Starts `cmd` and waits for readiness with room for the key decryption: a keytool store
/// takes 400,000 MD5 rounds per key, about a second of CPU in a debug build.
fn spawn(cmd: Cmd) -> Daemon {
    let mut d = cmd.start();
    d.wait_log(READY_LINE, Duration::from_secs(60));
    d
}

fn keytool(dir: &Path, args: &[&str]) {
    let out = Command::new("keytool")
        // A quicker JVM start: these runs are short.
        .args(["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("keytool must be installed (Debian package default-jre-headless)");
    assert!(
        out.status.success(),
        "keytool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Imports `id` (with its CA as chain) under `alias` into the store `name` (created if
/// missing) of type `kind` (`JCEKS` or `JKS`).
fn import(
    pki: &Pki,
    id: &Identity,
    alias: &str,
    name: &str,
    kind: &str,
    extra: &[&str],
) -> PathBuf {
    let p12 = id.p12(&pki.dir, P12Kind::Modern, PASS);
    let store = pki.dir.join(name);
    let mut args = vec![
        "-importkeystore",
        "-srckeystore",
        p12.to_str().unwrap(),
        "-srcstoretype",
        "pkcs12",
        "-srcstorepass",
        PASS,
        "-srcalias",
        "1",
        "-destalias",
        alias,
        "-destkeystore",
        store.to_str().unwrap(),
        "-deststoretype",
        kind,
        "-deststorepass",
        PASS,
        "-noprompt",
    ];
    args.extend_from_slice(extra);
    keytool(pki.dir.path(), &args);
    store
}

fn server(pki: &Pki, store: &Path, extra: &[&str]) -> (Daemon, std::net::SocketAddr, Backend) {
    let backend = Backend::echo();
    let (listen, addr) = free_addr();
    let d = Cmd::new("server")
        .args([
            "--listen",
            &listen,
            "--target",
            &backend.target(),
            "--allow-cn=client",
        ])
        .arg("--keystore")
        .arg(store)
        .arg(format!("--storepass={PASS}"))
        .args(pki.cacert_args())
        .args(extra);
    (spawn(d), addr, backend)
}

fn chain(addr: std::net::SocketAddr, pki: &Pki) -> Vec<Vec<u8>> {
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let s = try_echo(addr, cfg, b"ping").expect("handshake and echo");
    let certs = s.conn.peer_certificates().expect("certificates");
    certs.iter().map(|c| c.as_ref().to_vec()).collect()
}

fn start_error(store: &Path, pass: &str) -> String {
    let out = Cmd::new("server")
        .args([
            "--listen",
            "localhost:0",
            "--target",
            "localhost:1",
            "--allow-all",
        ])
        .arg("--keystore")
        .arg(store)
        .arg(format!("--storepass={pass}"))
        .run(RUN);
    out.assert_code(1);
    out.stderr.trim_end().to_string()
}

/// A server and a client whose identities come from JCEKS stores carry data through a
/// mutual-TLS pair; the server sends the stored chain.
#[test]
fn jceks_identities_in_both_modes() {
    let pki = Pki::new();
    let server_store = import(&pki, &pki.server, "srv", "server.jceks", "JCEKS", &[]);
    let client_store = import(&pki, &pki.client, "cli", "client.jceks", "JCEKS", &[]);
    let (d, server_addr, _backend) = server(&pki, &server_store, &[]);
    assert!(
        d.stdout()
            .contains("using keystore file on disk as certificate source")
    );
    assert_eq!(
        chain(server_addr, &pki),
        [pki.server.cert_der.clone(), pki.ca.cert_der.clone()]
    );

    let (listen, client_addr) = free_addr();
    let _client = spawn(
        Cmd::new("client")
            .args(["--listen", &listen, "--target", &server_addr.to_string()])
            .arg("--keystore")
            .arg(&client_store)
            .env("KEYSTORE_PASS", PASS)
            .args(pki.cacert_args()),
    );
    let mut s = tcp_connect(client_addr);
    assert_echo(&mut s, &pattern(7, 100_000));
}

/// Entry rules: two keys (the alphabetically first alias supplies key and leaf, the chain is
/// both chains), an RSA key, the format found by magic bytes, the password from a file, and
/// a reload onto another store.
#[test]
fn jceks_entry_order_detection_and_reload() {
    let pki = Pki::new();
    let rsa = pki.issue("rsa", &LeafSpec::server("server-rsa").alg(KeyAlg::Rsa));
    let two = import(&pki, &pki.server, "srv", "two.jceks", "JCEKS", &[]);
    import(&pki, &rsa, "rsa", "two.jceks", "JCEKS", &[]);
    // No extension: detected by the CECECECE magic.
    let served = pki.dir.join("served-store");
    std::fs::copy(&two, &served).unwrap();
    let pass_file = pki.dir.write("storepass", format!("{PASS}\n"));
    let backend = Backend::echo();
    let (listen, addr) = free_addr();
    let d = Cmd::new("server")
        .args([
            "--listen",
            &listen,
            "--target",
            &backend.target(),
            "--allow-cn=client",
        ])
        .arg("--keystore")
        .arg(&served)
        .arg(format!("--storepass-file={}", pass_file.display()))
        .args(pki.cacert_args());
    let mut d = spawn(d);
    assert_eq!(
        chain(addr, &pki),
        [
            rsa.cert_der.clone(),
            pki.ca.cert_der.clone(),
            pki.server.cert_der.clone(),
            pki.ca.cert_der.clone()
        ]
    );
    let single = import(&pki, &pki.server, "srv", "single.jceks", "JCEKS", &[]);
    std::fs::copy(&single, &served).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log(
        "loaded certificate: CN=server,OU=servers,O=Acme",
        Duration::from_secs(60),
    );
    assert_eq!(chain(addr, &pki)[0], pki.server.cert_der);
}

#[test]
fn jceks_refusals_use_the_reference_texts() {
    let pki = Pki::new();
    let ec = import(&pki, &pki.server, "srv", "ec.jceks", "JCEKS", &[]);
    let wrap = |store: &Path, e: &str| {
        format!(
            "error: reading certificate file \"{0}\": failed to parse '{0}': {e}",
            store.display()
        )
    };
    assert_eq!(
        start_error(&ec, "wrong"),
        wrap(
            &ec,
            "unable to parse keystore: integrity protection violation: keystore was tampered with or password was incorrect"
        )
    );
    assert_eq!(
        start_error(&ec, ""),
        wrap(
            &ec,
            "unable to parse keystore: encoding integrity password: password is unsupported by JCEKS format: empty passwords are not interoperable"
        )
    );

    // A trusted-certificate entry comes first and becomes the leaf, as in the reference.
    let with_ca = pki.dir.join("with-ca.jceks");
    std::fs::copy(&ec, &with_ca).unwrap();
    keytool(
        pki.dir.path(),
        &[
            "-importcert",
            "-keystore",
            with_ca.to_str().unwrap(),
            "-storetype",
            "JCEKS",
            "-storepass",
            PASS,
            "-alias",
            "ca",
            "-file",
            pki.ca.cert_path.to_str().unwrap(),
            "-noprompt",
        ],
    );
    assert_eq!(
        start_error(&with_ca, PASS),
        "error: parsing X509 key pair: tls: private key does not match public key"
    );

    let secret = pki.dir.join("secret.jceks");
    std::fs::copy(&ec, &secret).unwrap();
    keytool(
        pki.dir.path(),
        &[
            "-genseckey",
            "-keystore",
            secret.to_str().unwrap(),
            "-storetype",
            "JCEKS",
            "-storepass",
            PASS,
            "-alias",
            "sec",
            "-keyalg",
            "AES",
            "-keysize",
            "128",
        ],
    );
    assert_eq!(
        start_error(&secret, PASS),
        wrap(
            &secret,
            "unable to parse keystore: unsupported JCEKS data: file contains a secret key entry"
        )
    );

    let jks = import(&pki, &pki.server, "srv", "ec.jks", "JKS", &[]);
    assert_eq!(
        start_error(&jks, PASS),
        wrap(
            &jks,
            "unable to recover private key 'srv': recovering private key \"srv\": unsupported JCEKS data: JKS private-key protection (1.3.6.1.4.1.42.2.17.1.1) is not supported; convert the keystore to PKCS#12 with: keytool -importkeystore -srckeystore in.jks -destkeystore out.p12 -deststoretype pkcs12"
        )
    );

    let keypass = import(
        &pki,
        &pki.server,
        "srv",
        "keypass.jceks",
        "JCEKS",
        &["-destkeypass", "otherpw"],
    );
    assert_eq!(
        start_error(&keypass, PASS),
        wrap(
            &keypass,
            "unable to recover private key 'srv': recovering private key \"srv\": decryption failed with the given password"
        )
    );
}
