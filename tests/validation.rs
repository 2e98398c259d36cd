//! Startup errors: parse-stage (docs/behaviour.md §2.7.1), mode validation (2.7.2) and certificate
//! loading (3.6). Each asserts the exact message, the stream it goes to, exit 1 and that nothing
//! started listening.

use std::time::Duration;

use crate::util::*;

const RUN: Duration = Duration::from_secs(10);

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// Parse-stage failure: `ghostunnel: error: <msg>, try --help` on stderr, nothing logged,
/// exit 1.
fn parse_error(args: &[&str], msg: &str) {
    let o = Cmd::bare().args(args).run(RUN);
    o.assert_code(1);
    let want = format!("ghostunnel: error: {msg}, try --help");
    assert!(
        has_line(&o.stderr, &want),
        "stderr lacks the line {want:?}{}",
        o.describe()
    );
    assert!(
        o.stdout.is_empty(),
        "a parse error must log nothing{}",
        o.describe()
    );
}

/// Mode-validation failure: `error: <msg>` logged and printed, exit 1, nothing bound.
fn mode_error(args: &[&str], msg: &str) {
    let o = Cmd::bare().args(args).run(RUN);
    o.assert_code(1);
    let want = format!("error: {msg}");
    assert!(
        has_line(&o.stderr, &want),
        "stderr lacks the line {want:?}{}",
        o.describe()
    );
    assert!(
        o.stdout
            .lines()
            .any(|l| log_message(l, o.pid) == Some(want.as_str())),
        "log lacks {want:?}{}",
        o.describe()
    );
    o.assert_stdout_lacks(READY_LINE);
}

const KS: &str = "--keystore=/nonexistent/server.pem";
const L: &str = "--listen=127.0.0.1:1";
const T: &str = "--target=127.0.0.1:2";

// ---- parse stage (2.7.1) ----

#[test]
fn parse_enable_pprof_requires_status() {
    parse_error(
        &["server", L, T, KS, "--allow-all", "--enable-pprof"],
        "--enable-pprof requires --status to be set",
    );
}

#[test]
fn parse_enable_shutdown_requires_status() {
    parse_error(
        &["server", L, T, KS, "--allow-all", "--enable-shutdown"],
        "--enable-shutdown requires --status to be set",
    );
}

#[test]
fn parse_metrics_url_scheme() {
    parse_error(
        &["server", L, T, KS, "--allow-all", "--metrics-url=ftp://x"],
        "--metrics-url should start with http:// or https://",
    );
}

#[test]
fn parse_target_status_scheme() {
    parse_error(
        &["server", L, T, KS, "--allow-all", "--target-status=ftp://x"],
        "--target-status should start with http:// or https://",
    );
}

#[test]
fn parse_status_scheme_requires_tcp() {
    parse_error(
        &[
            "server",
            L,
            T,
            KS,
            "--allow-all",
            "--status=https://unix:/tmp/s.sock",
        ],
        "invalid --status network \"unix\": http(s):// scheme requires a HOST:PORT target",
    );
}

#[test]
fn parse_status_bad_address() {
    parse_error(
        &["server", L, T, KS, "--allow-all", "--status=nohost"],
        "invalid --status address: address nohost: missing port in address",
    );
}

#[test]
fn parse_connect_timeout_zero() {
    parse_error(
        &["server", L, T, KS, "--allow-all", "--connect-timeout=0s"],
        "--connect-timeout duration must not be zero",
    );
}

#[test]
fn parse_workload_api_timeout_negative() {
    parse_error(
        &["client", L, T, KS, "--use-workload-api-timeout=-1s"],
        "--use-workload-api-timeout duration must not be negative (use 0 to wait indefinitely)",
    );
}

#[test]
fn parse_check_order_pprof_before_connect_timeout() {
    parse_error(
        &[
            "server",
            L,
            T,
            KS,
            "--allow-all",
            "--connect-timeout=0",
            "--enable-pprof",
        ],
        "--enable-pprof requires --status to be set",
    );
}

#[test]
fn parse_unknown_flag() {
    parse_error(
        &["server", L, T, KS, "--allow-all", "--bogus"],
        "unknown long flag '--bogus'",
    );
}

#[test]
fn parse_short_flag() {
    parse_error(&["-h"], "unknown short flag '-h'");
}

#[test]
fn parse_unknown_command() {
    parse_error(&["bogus"], "expected command but got \"bogus\"");
}

#[test]
fn parse_bool_with_value() {
    parse_error(&["server", L, T, KS, "--allow-all=true"], "unexpected true");
}

#[test]
fn parse_repeated_scalar() {
    parse_error(
        &["server", L, "--listen=127.0.0.1:3", T, KS, "--allow-all"],
        "flag 'listen' cannot be repeated",
    );
}

#[test]
fn parse_missing_required() {
    parse_error(
        &["server", T, KS, "--allow-all"],
        "required flag(s) '--listen' not provided",
    );
}

#[test]
fn parse_server_flag_in_client_mode() {
    parse_error(
        &["client", L, T, KS, "--allow-all"],
        "unknown long flag '--allow-all'",
    );
}

#[test]
fn parse_bad_duration() {
    parse_error(
        &["server", L, T, KS, "--allow-all", "--close-timeout=5"],
        "time: invalid duration \"5\"",
    );
}

/// A negative uint32 fails at parse time (exact text belongs to the parser; check shape).
#[test]
fn parse_negative_max_conns() {
    let o = Cmd::bare()
        .args([
            "server",
            L,
            T,
            KS,
            "--allow-all",
            "--max-concurrent-conns=-1",
        ])
        .run(RUN);
    o.assert_code(1)
        .assert_stderr_contains("ghostunnel: error: ");
    assert!(o.stderr.contains(", try --help"), "{}", o.describe());
    assert!(o.stdout.is_empty(), "{}", o.describe());
}

// ---- server mode validation (2.7.2) ----

#[test]
fn server_no_credentials() {
    mode_error(
        &["server", L, T, "--allow-all"],
        "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required",
    );
}

#[test]
fn server_lone_cert_counts_as_no_credentials() {
    mode_error(
        &["server", L, T, "--cert=/x.crt", "--allow-all"],
        "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required",
    );
}

#[test]
fn server_credentials_mutually_exclusive() {
    mode_error(
        &[
            "server",
            L,
            T,
            KS,
            "--cert=/x.crt",
            "--key=/x.key",
            "--allow-all",
        ],
        "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive",
    );
}

#[test]
fn server_cert_key_pairing() {
    mode_error(
        &["server", L, T, KS, "--key=/x.key", "--allow-all"],
        "--cert/--key must be set together, unless using PKCS11 for private key",
    );
}

#[test]
fn server_no_access_control() {
    mode_error(
        &["server", L, T, KS],
        "at least one access control flag (--allow-{all,cn,ou,dns,uri,spki-pin}, or OPA flags, or --disable-authentication) is required",
    );
}

#[test]
fn server_credentials_checked_before_access_control() {
    mode_error(
        &["server", L, T],
        "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required",
    );
}

#[test]
fn server_allow_all_exclusive() {
    mode_error(
        &["server", L, T, KS, "--allow-all", "--allow-cn=x"],
        "--allow-all is mutually exclusive with other access control flags",
    );
}

#[test]
fn server_disable_auth_exclusive() {
    mode_error(
        &[
            "server",
            L,
            T,
            KS,
            "--disable-authentication",
            "--allow-ou=x",
        ],
        "--disable-authentication is mutually exclusive with other access control flags",
    );
}

#[test]
fn server_pin_exclusive() {
    mode_error(
        &[
            "server",
            L,
            T,
            KS,
            "--allow-spki-pin=sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "--allow-dns=x",
        ],
        "--allow-spki-pin is mutually exclusive with other access control flags",
    );
}

#[test]
fn server_pin_bad_format() {
    mode_error(
        &["server", L, T, KS, "--allow-spki-pin=bogus"],
        "--allow-spki-pin: invalid pin \"bogus\": expected format <algo>:<base64-digest>",
    );
}

#[test]
fn server_pin_bad_algorithm() {
    mode_error(
        &["server", L, T, KS, "--allow-spki-pin=md5:AAAA"],
        "--allow-spki-pin: invalid pin \"md5:AAAA\": unsupported hash algorithm \"md5\" (supported: sha256, sha384, sha512)",
    );
}

#[test]
fn server_pin_bad_length() {
    mode_error(
        &["server", L, T, KS, "--allow-spki-pin=sha256:AAAA"],
        "--allow-spki-pin: invalid pin \"sha256:AAAA\": expected 32 bytes for sha256, got 3",
    );
}

#[test]
fn server_unsafe_target() {
    mode_error(
        &["server", L, "--target=10.0.0.1:80", KS, "--allow-all"],
        "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)",
    );
}

#[test]
fn server_unsafe_target_prefix_is_literal() {
    mode_error(
        &["server", L, "--target=LOCALHOST:80", KS, "--allow-all"],
        "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)",
    );
}

#[test]
fn server_target_missing_port() {
    mode_error(
        &[
            "server",
            L,
            "--target=nohost",
            "--unsafe-target",
            KS,
            "--allow-all",
        ],
        "invalid --target address: address nohost: missing port in address",
    );
}

#[test]
fn server_target_systemd() {
    mode_error(
        &["server", L, "--target=systemd:foo", KS, "--allow-all"],
        "invalid --target network \"systemd\": only tcp and unix targets are supported (systemd:/launchd: cannot be dialed)",
    );
}

#[test]
fn server_proxy_protocol_exclusive() {
    mode_error(
        &[
            "server",
            L,
            T,
            KS,
            "--allow-all",
            "--proxy-protocol",
            "--proxy-protocol-mode=tls",
        ],
        "--proxy-protocol and --proxy-protocol-mode are mutually exclusive",
    );
}

#[test]
fn server_bad_cipher_suite() {
    mode_error(
        &[
            "server",
            L,
            T,
            KS,
            "--allow-all",
            "--cipher-suites=AES, BOGUS",
        ],
        "invalid cipher suite 'BOGUS' selected",
    );
}

// ---- client mode validation (2.7.2) ----

#[test]
fn client_no_credentials() {
    mode_error(
        &["client", L, T],
        "at least one of --keystore, --cert/--key, --keychain-identity/issuer (if supported), --use-workload-api or --disable-authentication flags is required",
    );
}

#[test]
fn client_credentials_mutually_exclusive() {
    mode_error(
        &["client", L, T, KS, "--disable-authentication"],
        "--keystore, --cert/--key, --keychain-identity/issuer, --use-workload-api and --disable-authentication flags are mutually exclusive",
    );
}

#[test]
fn client_unsafe_listen() {
    mode_error(
        &["client", "--listen=0.0.0.0:8080", T, KS],
        "--listen must be unix:PATH, localhost:PORT, systemd:NAME or launchd:NAME (unless --unsafe-listen is set)",
    );
}

#[test]
fn client_unsafe_listen_empty_host() {
    mode_error(
        &["client", "--listen=:8080", T, KS],
        "--listen must be unix:PATH, localhost:PORT, systemd:NAME or launchd:NAME (unless --unsafe-listen is set)",
    );
}

#[test]
fn client_unix_target() {
    mode_error(
        &["client", L, "--target=unix:/tmp/x.sock", KS],
        "invalid --target network \"unix\": client mode requires a HOST:PORT TCP target",
    );
}

#[test]
fn client_target_missing_port() {
    mode_error(
        &["client", L, "--target=nohost", KS],
        "invalid --target address: address nohost: missing port in address",
    );
}

#[test]
fn client_pin_exclusive() {
    mode_error(
        &[
            "client",
            L,
            T,
            KS,
            "--verify-spki-pin=sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "--verify-cn=x",
        ],
        "--verify-spki-pin is mutually exclusive with other verification flags",
    );
}

#[test]
fn client_pin_bad_format() {
    mode_error(
        &["client", L, T, KS, "--verify-spki-pin=sha512"],
        "--verify-spki-pin: invalid pin \"sha512\": expected format <algo>:<base64-digest>",
    );
}

// ---- certificate loading (3.6) ----

fn load_error(pki: &Pki, cred: &[String], msg: &str) {
    let (listen, _) = free_addr();
    let o = Cmd::new("server")
        .args(["--listen", &listen, "--target", "127.0.0.1:9"])
        .args(cred)
        .arg("--allow-all")
        .run(RUN);
    let _ = pki;
    o.assert_code(1)
        .assert_stderr_contains(&format!("error: {msg}"))
        .assert_stdout_contains(&format!("error: unable to load certificates: {msg}"))
        .assert_stdout_lacks(READY_LINE);
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn load_missing_keystore() {
    let pki = Pki::new();
    let p = pki.dir.join("missing.pem").display().to_string();
    load_error(
        &pki,
        &s(&["--keystore", &p]),
        &format!("reading certificate file \"{p}\": open {p}: no such file or directory"),
    );
}

#[test]
fn load_key_mismatch() {
    let pki = Pki::new();
    let c = pki.server.cert_path.display().to_string();
    let k = pki.client.key_path.display().to_string();
    let ca = pki.ca.cert_path.display().to_string();
    load_error(
        &pki,
        &s(&["--cert", &c, "--key", &k, "--cacert", &ca]),
        "parsing X509 key pair: tls: private key does not match public key",
    );
}

#[test]
fn load_certificate_instead_of_key() {
    let pki = Pki::new();
    let c = pki.server.cert_path.display().to_string();
    load_error(
        &pki,
        &s(&["--keystore", &c, "--cacert", &c]),
        "parsing X509 key pair: tls: found a certificate rather than a key in the PEM for the private key",
    );
}

#[test]
fn load_no_key_among_blocks() {
    let pki = Pki::new();
    let c = pki.server.cert_path.display().to_string();
    load_error(
        &pki,
        &s(&["--cert", &c, "--key", &c]),
        "parsing X509 key pair: tls: failed to find PEM block with type ending in \"PRIVATE KEY\" in key input after skipping PEM blocks of the following types: [CERTIFICATE CERTIFICATE]",
    );
}

#[test]
fn load_empty_file() {
    let pki = Pki::new();
    let p = pki.dir.write("empty.pem", "just a comment\n");
    let p = p.display().to_string();
    let (listen, _) = free_addr();
    let o = Cmd::new("server")
        .args(["--listen", &listen, "--target", "127.0.0.1:9"])
        .args(["--keystore", &p, "--allow-all"])
        .run(RUN);
    o.assert_code(1)
        .assert_stderr_contains(&format!("error reading file '{p}', no certificates found"))
        .assert_stdout_contains("error: unable to load certificates: ")
        .assert_stdout_lacks(READY_LINE);
}

#[test]
fn load_cacert_without_certificates() {
    let pki = Pki::new();
    let key = pki.client.key_path.display().to_string();
    let mut cred = pki.server.keystore_args();
    cred.extend(s(&["--cacert", &key]));
    load_error(
        &pki,
        &cred,
        "loading trust store: unable to read certificates from CA bundle",
    );
}

#[test]
fn load_cacert_missing() {
    let pki = Pki::new();
    let mut cred = pki.server.keystore_args();
    cred.extend(s(&["--cacert", "/nonexist"]));
    load_error(
        &pki,
        &cred,
        "loading trust store: open /nonexist: no such file or directory",
    );
}

#[test]
fn load_unknown_format() {
    let pki = Pki::new();
    let p = pki.dir.write("blob.bin", [0x01u8, 0x02, 0x03, 0x04, 0x05]);
    let p = p.display().to_string();
    let (listen, _) = free_addr();
    let o = Cmd::new("server")
        .args(["--listen", &listen, "--target", "127.0.0.1:9"])
        .args(["--keystore", &p, "--allow-all"])
        .run(RUN);
    o.assert_code(1)
        .assert_stderr_contains(&format!(
            "failed to detect format for '{p}': unable to guess file format"
        ))
        .assert_stdout_lacks(READY_LINE);
}

/// A listen address already taken by a non-SO_REUSEPORT socket fails with exit 1.
#[test]
fn listen_address_in_use() {
    let pki = Pki::new();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let o = Cmd::new("server")
        .args(["--listen", &listen, "--target", "127.0.0.1:9"])
        .args(pki.server_cred_args())
        .arg("--allow-all")
        .run(RUN);
    o.assert_code(1)
        .assert_stderr_contains("address already in use")
        .assert_stdout_lacks(READY_LINE);
}

/// A bad `--allow-uri` pattern fails startup with exit 1 and the docs/behaviour.md §2.7.3 text.
#[test]
fn bad_allow_uri_pattern() {
    let pki = Pki::new();
    let (listen, _) = free_addr();
    let o = Cmd::new("server")
        .args(["--listen", &listen, "--target", "127.0.0.1:9"])
        .args(pki.server_cred_args())
        .arg("--allow-uri=spiffe://foo/**/bar")
        .run(RUN);
    o.assert_code(1)
        .assert_stdout_contains(
            "invalid URI pattern in --allow-uri flag (wildcard '**' can only appear at end of pattern)",
        )
        .assert_stdout_lacks(READY_LINE);
}

/// A bad `--verify-uri` pattern fails startup with exit 1.
#[test]
fn bad_verify_uri_pattern() {
    let pki = Pki::new();
    let (listen, _) = free_addr();
    let o = Cmd::new("client")
        .args(["--listen", &listen, "--target", "localhost:9"])
        .args(pki.client_cred_args())
        .arg("--verify-uri=spiffe://foo/a*b")
        .run(RUN);
    o.assert_code(1)
        .assert_stdout_contains(
            "invalid URI pattern in --verify-uri flag (wildcard '*' can only appear between two separators)",
        )
        .assert_stdout_lacks(READY_LINE);
}
