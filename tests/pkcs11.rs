//! Identities whose private key lives in a PKCS#11 token: SoftHSM tokens made at test time
//! (`softhsm2-util`, Debian package softhsm2), the certificate from `--cert`, the key found
//! and used through the module. Server and client mode, a real mutual-TLS pair, reloads,
//! wrong PINs and labels, a token that disappears while the proxy runs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const RUN: Duration = Duration::from_secs(20);

/// A SoftHSM token directory of its own, reached through `SOFTHSM2_CONF` in the child's
/// environment only.
struct Hsm {
    dir: TempDir,
}

impl Hsm {
    fn new() -> Hsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: install the softhsm2 package"
        );
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.join("tokens")).expect("token dir");
        dir.write(
            "softhsm2.conf",
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        );
        Hsm { dir }
    }

    fn conf(&self) -> String {
        self.dir.join("softhsm2.conf").display().to_string()
    }

    fn util(&self, args: &[&str]) {
        let out = Command::new("softhsm2-util")
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .expect("softhsm2-util must be installed (Debian package softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A token labelled `label` holding `id`'s key (public and private objects, one CKA_ID).
    fn token(&self, label: &str, pin: &str, id: &Identity) -> &Hsm {
        self.util(&[
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            "0000",
            "--pin",
            pin,
        ]);
        self.util(&[
            "--import",
            &id.key_path.display().to_string(),
            "--token",
            label,
            "--label",
            "tls-key",
            "--id",
            "01",
            "--pin",
            pin,
        ]);
        self
    }

    /// Removes every token, as if the device had been unplugged.
    fn unplug(&self) {
        std::fs::remove_dir_all(self.dir.join("tokens")).expect("remove tokens");
        std::fs::create_dir_all(self.dir.join("tokens")).expect("token dir");
    }

    /// A command whose module sees this token directory.
    fn cmd(&self, mode: &str) -> Cmd {
        Cmd::new(mode).env("SOFTHSM2_CONF", &self.conf())
    }
}

fn module_args(label: &str, pin: &str) -> Vec<String> {
    vec![
        "--pkcs11-module".into(),
        MODULE.into(),
        "--pkcs11-token-label".into(),
        label.into(),
        "--pkcs11-pin".into(),
        pin.into(),
    ]
}

/// `ghostunnel server` with the certificate in `cert` and the key in token `label`.
fn hsm_server(
    hsm: &Hsm,
    pki: &Pki,
    cert: &Path,
    label: &str,
    pin: &str,
    extra: &[&str],
) -> (Daemon, SocketAddr, Backend) {
    let backend = Backend::echo();
    let (listen, addr) = free_addr();
    let d = hsm
        .cmd("server")
        .args(["--listen", &listen, "--target", &backend.target()])
        .arg("--cert")
        .arg(cert)
        .args(module_args(label, pin))
        .args(pki.cacert_args())
        .arg("--allow-cn=client")
        .args(extra)
        .spawn();
    (d, addr, backend)
}

fn presented(addr: SocketAddr, pki: &Pki) -> Vec<Vec<u8>> {
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let s = try_echo(addr, cfg, b"ping").expect("handshake and echo");
    s.conn
        .peer_certificates()
        .expect("server certificates")
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect()
}

#[test]
fn server_ec_key_in_token_serves_tls13_and_tls12() {
    let pki = Pki::new();
    let hsm = Hsm::new();
    hsm.token("gt-ec", "1234", &pki.server);
    let (d, addr, _backend) = hsm_server(&hsm, &pki, &pki.server.cert_path, "gt-ec", "1234", &[]);
    let log = log_messages(&d.stdout(), d.pid(), "");
    let expected = [
        "note: using pkcs11, skipping landlock setup (landlock is not compatible with pkcs11)",
        "using PKCS#11 module as certificate source",
        "pkcs11: loading private key for given certificate from module",
    ];
    assert!(
        !log.iter().any(|l| l.contains("setting up landlock rules")),
        "Landlock is skipped, not set up{}",
        d.describe()
    );
    for line in expected {
        assert!(
            log.iter().any(|l| l == line),
            "missing {line:?}{}",
            d.describe()
        );
    }
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let cfg = client_config_versions(&pki.ca.cert_der, Some(&pki.client), versions);
        let s = try_echo(addr, cfg, b"hello through the token")
            .unwrap_or_else(|e| panic!("{versions:?}: {e}{}", d.describe()));
        let chain = s.conn.peer_certificates().expect("certificates");
        assert_eq!(chain[0].as_ref(), pki.server.cert_der.as_slice());
    }
}

#[test]
fn server_rsa_key_in_token_signs_pss_and_pkcs1() {
    let pki = Pki::with_server_alg(KeyAlg::Rsa);
    let hsm = Hsm::new();
    hsm.token("gt-rsa", "5678", &pki.server);
    let (d, addr, _backend) = hsm_server(&hsm, &pki, &pki.server.cert_path, "gt-rsa", "5678", &[]);
    // TLS 1.3 signs with RSA-PSS; TLS 1.2 with PKCS#1 v1.5 first.
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let cfg = client_config_versions(&pki.ca.cert_der, Some(&pki.client), versions);
        try_echo(addr, cfg, b"rsa").unwrap_or_else(|e| panic!("{versions:?}: {e}{}", d.describe()));
    }
}

/// Both ends keep their keys in tokens: a client-mode proxy (client key in SoftHSM) dials a
/// server-mode proxy (server key in SoftHSM), and bytes go through both.
#[test]
fn mutual_tls_pair_with_both_keys_in_tokens() {
    let pki = Pki::new();
    let hsm = Hsm::new();
    hsm.token("server", "1111", &pki.server)
        .token("client", "2222", &pki.client);
    let (mut server, server_addr, _backend) =
        hsm_server(&hsm, &pki, &pki.server.cert_path, "server", "1111", &[]);
    let (listen, client_addr) = free_addr();
    let client = hsm
        .cmd("client")
        .args(["--listen", &listen, "--target", &server_addr.to_string()])
        .arg("--cert")
        .arg(&pki.client.cert_path)
        .args(module_args("client", "2222"))
        .args(pki.cacert_args())
        .spawn();
    for i in 0..3 {
        let mut s = tcp_connect(client_addr);
        let msg = pattern(i, 64 * 1024);
        assert_echo(&mut s, &msg);
    }
    assert!(server.try_status().is_none(), "{}", server.describe());
    assert!(
        client
            .stdout()
            .contains("using PKCS#11 module as certificate source"),
        "{}",
        client.describe()
    );
}

/// A reload re-reads the certificate file: a new chain for the same key is served, a
/// certificate for another key is refused and the old pair stays.
#[test]
fn reload_accepts_same_key_and_refuses_another() {
    let pki = Pki::new();
    let hsm = Hsm::new();
    hsm.token("gt", "1234", &pki.server);
    let cert = pki
        .dir
        .write("served.pem", std::fs::read(&pki.server.cert_path).unwrap());
    let (mut d, addr, _backend) = hsm_server(&hsm, &pki, &cert, "gt", "1234", &[]);
    assert_eq!(presented(addr, &pki).len(), 1);

    // Same leaf, now with the CA appended: accepted.
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(&pki.server.cert_path).unwrap(),
        pki.ca.cert_pem
    );
    std::fs::write(&cert, chain).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log(
        "pkcs11: re-using previously cached private key handle from module",
        RUN,
    );
    d.wait_log("loaded certificate: CN=server,OU=servers,O=Acme", RUN);
    assert_eq!(
        presented(addr, &pki),
        [pki.server.cert_der.clone(), pki.ca.cert_der.clone()]
    );

    // Another key's certificate: refused, the two-certificate chain stays.
    let other = pki.issue("other", &LeafSpec::server("other"));
    std::fs::copy(&other.cert_path, &cert).unwrap();
    d.signal(libc::SIGHUP);
    let refusal = format!(
        "error reloading TLS configuration: pkcs11: refusing to reload certificate \"{}\": its \
         public key does not match the cached HSM private key",
        cert.display()
    );
    d.wait_log(&refusal, RUN);
    assert_eq!(presented(addr, &pki).len(), 2, "{}", d.describe());

    // A file without certificates.
    std::fs::write(&cert, "nothing here\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log(
        &format!(
            "error reloading TLS configuration: failed to load certificate from \"{0}\": error \
             reading file '{0}', no certificates found",
            cert.display()
        ),
        RUN,
    );
    assert_eq!(presented(addr, &pki).len(), 2);
}

fn start_error(hsm: &Hsm, pki: &Pki, label: &str, pin: &str) -> String {
    let (listen, _) = free_addr();
    let out = hsm
        .cmd("server")
        .args(["--listen", &listen, "--target", "localhost:1"])
        .arg("--cert")
        .arg(&pki.server.cert_path)
        .args(module_args(label, pin))
        .arg("--allow-all")
        .run(RUN);
    out.assert_code(1);
    out.stderr.trim_end().to_string()
}

#[test]
fn wrong_pin_label_or_key_fail_the_start() {
    let pki = Pki::new();
    let hsm = Hsm::new();
    hsm.token("gt-ec", "1234", &pki.server);
    let prefix = |label: &str| {
        format!(
            "error: pkcs11: failed to load private key from module \"{MODULE}\" (token \
             \"{label}\"): pkcs11key: "
        )
    };
    assert_eq!(
        start_error(&hsm, &pki, "gt-ec", "9999"),
        format!(
            "{}pkcs11key: opening session: pkcs11: 0xA0: CKR_PIN_INCORRECT",
            prefix("gt-ec")
        )
    );
    assert_eq!(
        start_error(&hsm, &pki, "nosuch", "1234"),
        format!(
            "{}pkcs11key: opening session: no slot found matching token label \"nosuch\"",
            prefix("nosuch")
        )
    );
    assert_eq!(
        start_error(&hsm, &pki, "GT-EC", "1234"),
        format!(
            "{}pkcs11key: opening session: no slot found matching token label \"GT-EC\"",
            prefix("GT-EC")
        ),
        "labels are case-sensitive"
    );
    // The token holds another key than the certificate's.
    let hsm2 = Hsm::new();
    hsm2.token("gt-ec", "1234", &pki.client);
    assert_eq!(
        start_error(&hsm2, &pki, "gt-ec", "1234"),
        format!("{}looking up public key: no objects found", prefix("gt-ec"))
    );
}

#[test]
fn module_flag_is_checked_at_parse_time() {
    let out = Cmd::new("server")
        .args([
            "--listen",
            "localhost:0",
            "--target",
            "localhost:1",
            "--allow-all",
        ])
        .args([
            "--cert",
            "/x.pem",
            "--pkcs11-module",
            "/nonexistent/module.so",
        ])
        .run(RUN);
    out.assert_code(1);
    assert_eq!(
        out.stderr.trim_end(),
        "ghostunnel: error: path '/nonexistent/module.so' does not exist, try --help"
    );
    let out = Cmd::new("server")
        .args([
            "--listen",
            "localhost:0",
            "--target",
            "localhost:1",
            "--allow-all",
        ])
        .args(["--cert", "/x.pem", "--pkcs11-module", "/tmp"])
        .run(RUN);
    assert_eq!(
        out.stderr.trim_end(),
        "ghostunnel: error: 'tmp' is a directory, try --help"
    );
    // Even from the environment, and even when PKCS#11 is not otherwise used.
    let pki = Pki::new();
    let out = Cmd::new("server")
        .args([
            "--listen",
            "localhost:0",
            "--target",
            "localhost:1",
            "--allow-all",
        ])
        .args(pki.server_cred_args())
        .env("PKCS11_MODULE", "/nonexistent/module.so")
        .run(RUN);
    out.assert_code(1);
    out.assert_stderr_contains("path '/nonexistent/module.so' does not exist");
}

#[test]
fn credential_counting_with_a_module() {
    let pki = Pki::new();
    let base = || {
        Cmd::new("server")
            .args([
                "--listen",
                "localhost:0",
                "--target",
                "localhost:1",
                "--allow-all",
            ])
            .args(["--pkcs11-module", MODULE])
    };
    // A module alone is no credential; --key without --cert neither.
    let out = base().run(RUN);
    out.assert_code(1);
    out.assert_stderr_contains("at least one of");
    let out = base().arg("--key").arg(&pki.server.key_path).run(RUN);
    out.assert_stderr_contains("at least one of");
    // --cert and --key with a module count twice.
    let out = base().args(pki.server.cert_key_args()).run(RUN);
    out.assert_stderr_contains(
        "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive",
    );
}

/// The PIN from the environment or from a file, never on the command line.
#[test]
fn pin_from_environment_or_file() {
    let pki = Pki::new();
    let hsm = Hsm::new();
    hsm.token("gt", "4321", &pki.server);
    let backend = Backend::echo();
    let (listen, addr) = free_addr();
    let d = hsm
        .cmd("server")
        .args([
            "--listen",
            &listen,
            "--target",
            &backend.target(),
            "--allow-cn=client",
        ])
        .arg("--cert")
        .arg(&pki.server.cert_path)
        .args(pki.cacert_args())
        .env("PKCS11_MODULE", MODULE)
        .env("PKCS11_TOKEN_LABEL", "gt")
        .env("PKCS11_PIN", "4321")
        .spawn();
    presented(addr, &pki);
    drop(d);

    let pin_file = pki.dir.write("pin", "4321\n");
    let (listen, addr) = free_addr();
    let d = hsm
        .cmd("server")
        .args([
            "--listen",
            &listen,
            "--target",
            &backend.target(),
            "--allow-cn=client",
        ])
        .arg("--cert")
        .arg(&pki.server.cert_path)
        .args(pki.cacert_args())
        .args(["--pkcs11-module", MODULE, "--pkcs11-token-label", "gt"])
        .arg(format!("--pkcs11-pin-file={}", pin_file.display()))
        .spawn();
    presented(addr, &pki);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", d.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("4321"));

    let out = hsm
        .cmd("server")
        .args([
            "--listen",
            "localhost:0",
            "--target",
            "localhost:1",
            "--allow-all",
        ])
        .arg("--cert")
        .arg(&pki.server.cert_path)
        .args(module_args("gt", "4321"))
        .arg(format!("--pkcs11-pin-file={}", pin_file.display()))
        .run(RUN);
    out.assert_code(1);
    out.assert_stderr_contains("--pkcs11-pin and --pkcs11-pin-file are mutually exclusive");
}

/// Handshakes that need the token after it is gone fail one by one with a log line naming
/// the PKCS#11 error; the process keeps running.
#[test]
fn token_removed_while_running_fails_handshakes_not_the_process() {
    let pki = Pki::new();
    let hsm = Hsm::new();
    hsm.token("gt", "1234", &pki.server);
    let (mut d, addr, _backend) = hsm_server(&hsm, &pki, &pki.server.cert_path, "gt", "1234", &[]);
    presented(addr, &pki);
    hsm.unplug();
    for _ in 0..3 {
        let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
        assert!(
            try_echo(addr, cfg, b"x").is_err(),
            "a handshake without the token succeeded"
        );
    }
    d.wait_log(
        "pkcs11key: sign init: pkcs11: 0x82: CKR_OBJECT_HANDLE_INVALID",
        RUN,
    );
    assert!(d.try_status().is_none(), "the process died{}", d.describe());
    // Still accepting (and failing cleanly).
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    assert!(try_echo(addr, cfg, b"x").is_err());
    assert!(d.try_status().is_none(), "{}", d.describe());
}

/// Many handshakes at once all complete: signatures go through the session pool.
#[test]
fn concurrent_handshakes_share_the_token() {
    let pki = Pki::new();
    let hsm = Hsm::new();
    hsm.token("gt", "1234", &pki.server);
    let (d, addr, _backend) = hsm_server(&hsm, &pki, &pki.server.cert_path, "gt", "1234", &[]);
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
            std::thread::spawn(move || {
                try_echo(addr, cfg, format!("conn {i}").as_bytes()).map(|_| ())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("{e}{}", d.describe()));
    }
}

#[test]
fn check_reports_token_key_and_match() {
    let pki = Pki::with_server_alg(KeyAlg::P384);
    let hsm = Hsm::new();
    hsm.token("gt", "1234", &pki.server);
    let out = hsm
        .cmd("server")
        .arg("--check")
        .args([
            "--listen",
            "localhost:8443",
            "--target",
            "localhost:8080",
            "--allow-cn=client",
        ])
        .arg("--cert")
        .arg(&pki.server.cert_path)
        .args(module_args("gt", "1234"))
        .args(pki.cacert_args())
        .run(RUN);
    out.assert_code(0);
    out.assert_stdout_contains(&format!(
        "identity: {} (PKCS#11)",
        pki.server.cert_path.display()
    ));
    out.assert_stdout_contains(&format!("  token: \"gt\" via {MODULE}"));
    out.assert_stdout_contains("  token key: ECDSA P-384");
    out.assert_stdout_contains(
        "  key matches certificate: yes (test signature ecdsa_secp384r1_sha384 verified)",
    );
}

#[test]
fn version_says_pkcs11_true() {
    let out = Cmd::bare().arg("--version").run(RUN);
    out.assert_code(0);
    // On stderr, as the reference prints it.
    assert!(
        out.stderr.contains("(pkcs11: true, keychain: false)"),
        "{}",
        out.describe()
    );
}
