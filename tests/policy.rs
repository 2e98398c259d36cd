//! OPA policies through the real binary: `--allow-policy`/`--allow-query` (server) and
//! `--verify-policy`/`--verify-query` (client) with bundles built at test time (`tar`
//! archives, directories, single `.rego` files), their decisions, errors, time bound,
//! reload, metrics and flag rules.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use crate::util::*;

const UNAUTHORIZED: &str = "unauthorized: invalid principal, or principal not allowed";
const LOG_WAIT: Duration = Duration::from_secs(10);
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// `tar czf <dir>/<name> -C <dir>/<src> .`: a bundle as `opa build` lays it out. A missing
/// `tar` fails the test.
fn tar_bundle(dir: &TempDir, src: &str, name: &str) -> String {
    let out = dir.join(name);
    let status = Command::new("tar")
        .arg("czf")
        .arg(&out)
        .arg("-C")
        .arg(dir.join(src))
        .arg(".")
        .status()
        .expect("tar is needed to build policy bundles");
    assert!(status.success(), "tar failed");
    out.display().to_string()
}

/// Writes `rego` as `<src>/policy.rego` and returns the `.tar.gz` bundle made from it.
fn bundle(dir: &TempDir, src: &str, rego: &str) -> String {
    std::fs::create_dir_all(dir.join(src)).unwrap();
    dir.write(&format!("{src}/policy.rego"), rego);
    tar_bundle(dir, src, &format!("{src}.tar.gz"))
}

/// One TLS connection through the server: handshake, write, read the echo.
fn attempt(addr: SocketAddr, cfg: Arc<ClientConfig>) -> (u16, Result<(), String>) {
    let sock = tcp_connect(addr);
    let port = sock.local_addr().unwrap().port();
    let conn = rustls::ClientConnection::new(cfg, "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let r = (|| {
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        s.write_all(b"hello").map_err(|e| format!("write: {e}"))?;
        let mut back = [0u8; 5];
        s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
        (&back == b"hello")
            .then_some(())
            .ok_or_else(|| format!("echo mismatch: {back:?}"))
    })();
    (port, r)
}

/// One echo through the server; the handshake's kind (full or resumed) if it was served.
fn resumed(addr: SocketAddr, cfg: Arc<ClientConfig>) -> Option<rustls::HandshakeKind> {
    let sock = tcp_connect(addr);
    let conn = rustls::ClientConnection::new(cfg, "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    s.write_all(b"hello").ok()?;
    let mut back = [0u8; 5];
    s.read_exact(&mut back).ok()?;
    s.conn.handshake_kind()
}

fn assert_accepted(d: &Daemon, addr: SocketAddr, cfg: Arc<ClientConfig>) {
    if let Err(e) = attempt(addr, cfg).1 {
        panic!("allowed client was not served: {e}{}", d.describe());
    }
}

fn assert_rejected(d: &mut Daemon, addr: SocketAddr, cfg: Arc<ClientConfig>, reason: &str) {
    let (port, r) = attempt(addr, cfg);
    assert!(r.is_err(), "rejected client was served{}", d.describe());
    d.wait_log(
        &format!("error on TLS handshake from 127.0.0.1:{port}: {reason}"),
        LOG_WAIT,
    );
}

fn cfg(pki: &Pki, id: &Identity) -> Arc<ClientConfig> {
    client_config(&pki.ca.cert_der, Some(id))
}

/// A policy allowing exactly one value of one field, v1 syntax.
fn allow_if(expr: &str) -> String {
    format!("package ghostunnel\n\nallow if {{\n  {expr}\n}}\n")
}

/// Server mode: allow and deny by CN, OU, URI SAN and DNS SAN, each from a `.tar.gz` bundle.
#[test]
fn server_policy_allows_and_denies_by_each_field() {
    let pki = Pki::new();
    let cases = [
        (
            "cn",
            r#"input.certificate.Subject.CommonName == "client""#,
            LeafSpec::client("other").ou("clients"),
        ),
        (
            "ou",
            r#""clients" in input.certificate.Subject.OrganizationalUnit"#,
            LeafSpec::client("client").ou("others"),
        ),
        (
            "uri",
            r#"input.certificate.URIs[_].Path == "/client1""#,
            LeafSpec::client("client").uri("spiffe://example.com/client2"),
        ),
        (
            "dns",
            r#""client.example.com" in input.certificate.DNSNames"#,
            LeafSpec::client("client").dns("other.example.com"),
        ),
    ];
    let backend = Backend::echo();
    for (name, expr, bad) in cases {
        let b = bundle(&pki.dir, name, &allow_if(expr));
        let bad = pki.issue(&format!("bad-{name}"), &bad);
        let (mut d, addr) = start_server(
            &pki,
            &backend.target(),
            &[
                &format!("--allow-policy={b}"),
                "--allow-query=data.ghostunnel.allow",
            ],
        );
        assert_accepted(&d, addr, cfg(&pki, &pki.client));
        assert_rejected(&mut d, addr, cfg(&pki, &bad), UNAUTHORIZED);
        assert_accepted(&d, addr, cfg(&pki, &pki.client));
    }
}

fn server_spec() -> LeafSpec {
    LeafSpec::server("server")
        .ou("servers")
        .o("Acme")
        .dns("server.example.com")
        .uri("spiffe://example.com/server")
}

/// Client mode: the server's certificate is checked by the policy, by CN, OU, URI SAN and
/// DNS SAN; a denial closes the plain connection and logs `error on dial: …`.
#[test]
fn client_policy_allows_and_denies_by_each_field() {
    let pki = Pki::new();
    let id = pki.issue("srv", &server_spec());
    let srv = TlsServer::start(&id, ClientAuth::Required(pki.ca.cert_der.clone()));
    let cases = [
        (
            "cn",
            r#"input.certificate.Subject.CommonName == "server""#,
            r#"input.certificate.Subject.CommonName == "x""#,
        ),
        (
            "ou",
            r#""servers" in input.certificate.Subject.OrganizationalUnit"#,
            r#""x" in input.certificate.Subject.OrganizationalUnit"#,
        ),
        (
            "uri",
            r#"input.certificate.URIs[_].Host == "example.com""#,
            r#"input.certificate.URIs[_].Host == "x""#,
        ),
        (
            "dns",
            r#""server.example.com" in input.certificate.DNSNames"#,
            r#""x.example.com" in input.certificate.DNSNames"#,
        ),
    ];
    for (name, good, bad) in cases {
        for (which, expr, allowed) in [("good", good, true), ("bad", bad, false)] {
            // Directory bundles here (the server test covers archives).
            let src = format!("client-{name}-{which}");
            std::fs::create_dir_all(pki.dir.join(&src)).unwrap();
            pki.dir.write(&format!("{src}/policy.rego"), allow_if(expr));
            let (mut d, addr) = start_client(
                &pki,
                &srv.target_localhost(),
                &[
                    &format!("--verify-policy={}", pki.dir.join(&src).display()),
                    "--verify-query=data.ghostunnel.allow",
                ],
            );
            if allowed {
                let mut s = tcp_connect(addr);
                assert_echo(&mut s, b"hello");
            } else {
                assert_dial_fails(&mut d, addr, UNAUTHORIZED);
            }
        }
    }
}

/// A single `.rego` file is Rego v0, and the policy is ORed after the other allow flags.
#[test]
fn single_file_policy_is_ored_with_allow_flags() {
    let pki = Pki::new();
    let other = pki.issue("other", &LeafSpec::client("other"));
    let third = pki.issue("third", &LeafSpec::client("third"));
    let rego = pki.dir.write(
        "allow-other.rego",
        "package ghostunnel\nallow { input.certificate.Subject.CommonName == \"other\" }\n",
    );
    let backend = Backend::echo();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &[
            "--allow-cn=client",
            &format!("--allow-policy={}", rego.display()),
            "--allow-query=data.ghostunnel.allow",
        ],
    );
    assert_accepted(&d, addr, cfg(&pki, &pki.client));
    assert_accepted(&d, addr, cfg(&pki, &other));
    assert_rejected(&mut d, addr, cfg(&pki, &third), UNAUTHORIZED);
}

/// A policy whose evaluation fails denies with the engine's error; the allow flags before
/// it still accept their principals without consulting it.
#[test]
fn erroring_policy_denies_with_its_error() {
    let pki = Pki::new();
    let other = pki.issue("other", &LeafSpec::client("other"));
    let b = bundle(
        &pki.dir,
        "conflict",
        "package ghostunnel\nx := 1 if input.certificate\nx := 2 if input.certificate\nallow if x == 1\n",
    );
    let backend = Backend::echo();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &[
            "--allow-cn=client",
            &format!("--allow-policy={b}"),
            "--allow-query=data.ghostunnel.allow",
        ],
    );
    assert_accepted(&d, addr, cfg(&pki, &pki.client));
    assert_rejected(
        &mut d,
        addr,
        cfg(&pki, &other),
        "unauthorized: policy returned error: ",
    );
}

/// A policy slower than `--connect-timeout` fails that handshake with `context deadline
/// exceeded` at about the deadline, while other connections are served meanwhile.
#[test]
fn slow_policy_times_out_without_blocking_others() {
    let pki = Pki::new();
    let slow = pki.issue("slow", &LeafSpec::client("slow"));
    let b = bundle(
        &pki.dir,
        "slow",
        "package ghostunnel\n\
         allow if input.certificate.Subject.CommonName == \"client\"\n\
         allow if {\n  input.certificate.Subject.CommonName == \"slow\"\n  \
         xs := numbers.range(1, 20000)\n  \
         count([1 | some i in xs; some j in xs; i * j == -1]) == 0\n}\n",
    );
    let backend = Backend::echo();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &[
            "--connect-timeout=2s",
            &format!("--allow-policy={b}"),
            "--allow-query=data.ghostunnel.allow",
        ],
    );
    assert_accepted(&d, addr, cfg(&pki, &pki.client));
    let slow_cfg = cfg(&pki, &slow);
    let started = Instant::now();
    let waiter = std::thread::spawn(move || attempt(addr, slow_cfg));
    // While the slow evaluation runs, an allowed client is served promptly.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert_accepted(&d, addr, cfg(&pki, &pki.client));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let (port, r) = waiter.join().unwrap();
    assert!(r.is_err(), "slow client was served{}", d.describe());
    d.wait_log(
        &format!("error on TLS handshake from 127.0.0.1:{port}: context deadline exceeded"),
        LOG_WAIT,
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "the slow handshake ended after {took:?}{}",
        d.describe()
    );
}

/// SIGHUP re-reads the bundle: a new policy takes effect; a broken one is logged and the
/// last good policy stays; a resumed session is re-authorized by the current policy.
#[test]
fn reload_to_new_then_broken_bundle() {
    let pki = Pki::new();
    let src = "reload";
    std::fs::create_dir_all(pki.dir.join(src)).unwrap();
    let path = pki.dir.join("reload.tar.gz").display().to_string();
    let write = |rego: &str| {
        pki.dir.write(&format!("{src}/policy.rego"), rego);
        tar_bundle(&pki.dir, src, "reload.tar.gz");
    };
    write(&allow_if(
        r#"input.certificate.Subject.CommonName == "client""#,
    ));
    let backend = Backend::echo();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &[
            &format!("--allow-policy={path}"),
            "--allow-query=data.ghostunnel.allow",
        ],
    );
    d.wait_log("listening for connections", LOG_WAIT);
    // The same client config keeps its session store: later attempts offer a ticket.
    let client = cfg(&pki, &pki.client);
    assert_accepted(&d, addr, client.clone());
    assert_accepted(&d, addr, client.clone());
    write(&allow_if(
        r#"input.certificate.Subject.CommonName == "nobody""#,
    ));
    d.signal(libc::SIGHUP);
    d.wait_log("reloading configuration complete", LOG_WAIT);
    assert_rejected(&mut d, addr, client.clone(), UNAUTHORIZED);
    // Broken: the error is logged and the deny policy stays.
    std::fs::write(&path, b"not a gzip file").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log(
        &format!(
            "error reloading OPA policy: loading error: bundle {path}: bundle read failed: \
             archive read failed: gzip: invalid header"
        ),
        LOG_WAIT,
    );
    d.wait_log_count("reloading configuration complete", 2, LOG_WAIT);
    assert_rejected(&mut d, addr, cfg(&pki, &pki.client), UNAUTHORIZED);
    // Fixed again: allowed again.
    write(&allow_if(
        r#"input.certificate.Subject.CommonName == "client""#,
    ));
    d.signal(libc::SIGHUP);
    d.wait_log_count("reloading configuration complete", 3, LOG_WAIT);
    assert_accepted(&d, addr, cfg(&pki, &pki.client));
}

/// A broken bundle or query fails the start with the reference's texts and exit 1, before
/// anything listens.
#[test]
fn bad_bundle_or_query_fails_startup() {
    let pki = Pki::new();
    let missing = pki.dir.join("nope").display().to_string();
    let out = Cmd::new("server")
        .args(["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"])
        .args(pki.server_cred_args())
        .args([
            &format!("--allow-policy={missing}"),
            "--allow-query=data.t.allow",
        ])
        .run(EXIT_WAIT);
    let e = format!(
        "loading error: error reading \"{missing}\": stat {missing}: no such file or directory"
    );
    out.assert_code(1)
        .assert_stdout_contains(&format!("Invalid rego policy or query: {e}"))
        .assert_stderr_contains(&format!("error: {e}"))
        .assert_stdout_lacks("listening for connections");
    let empty = pki.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Cmd::new("client")
        .args(["--listen", "127.0.0.1:0", "--target", "localhost:9"])
        .args(pki.client_cred_args())
        .args([
            &format!("--verify-policy={}", empty.display()),
            "--verify-query=data.t.allow ==",
        ])
        .run(EXIT_WAIT);
    out.assert_code(1)
        .assert_stdout_contains("Invalid rego policy or query: 1 error occurred: ")
        .assert_stdout_contains("error: unable to build dialer: 1 error occurred: ")
        .assert_stderr_contains("error: 1 error occurred: ");
}

/// Pairing and exclusivity rules, with the reference's texts.
#[test]
fn flag_pairing_and_exclusivity() {
    let pki = Pki::new();
    let b = pki.dir.join("b").display().to_string();
    std::fs::create_dir_all(&b).unwrap();
    let policy = format!("--allow-policy={b}");
    let server_cases: [(&[&str], &str); 6] = [
        (
            &[&policy],
            "--allow-policy and --allow-query have to be used together",
        ),
        (
            &["--allow-query=true"],
            "--allow-policy and --allow-query have to be used together",
        ),
        (
            &[&policy, "--allow-query=true", "--allow-all"],
            "--allow-all is mutually exclusive with other access control flags",
        ),
        (
            &[&policy, "--allow-query=true", "--disable-authentication"],
            "--disable-authentication is mutually exclusive with other access control flags",
        ),
        (
            &[
                &policy,
                "--allow-query=true",
                "--allow-spki-pin=sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            ],
            "--allow-spki-pin is mutually exclusive with other access control flags",
        ),
        (
            &[],
            "at least one access control flag (--allow-{all,cn,ou,dns,uri,spki-pin}, or OPA flags, or --disable-authentication) is required",
        ),
    ];
    for (flags, msg) in server_cases {
        Cmd::new("server")
            .args(["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"])
            .args(pki.server_cred_args())
            .args(flags)
            .run(EXIT_WAIT)
            .assert_code(1)
            .assert_stderr_contains(&format!("error: {msg}"));
    }
    let vpolicy = format!("--verify-policy={b}");
    let client_cases: [(&[&str], &str); 3] = [
        (
            &[&vpolicy],
            "--verify-policy and --verify-query have to be used together",
        ),
        (
            &["--verify-query=true"],
            "--verify-policy and --verify-query have to be used together",
        ),
        (
            &[
                &vpolicy,
                "--verify-query=true",
                "--verify-spki-pin=sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            ],
            "--verify-spki-pin is mutually exclusive with other verification flags",
        ),
    ];
    for (flags, msg) in client_cases {
        Cmd::new("client")
            .args(["--listen", "127.0.0.1:0", "--target", "localhost:9"])
            .args(pki.client_cred_args())
            .args(flags)
            .run(EXIT_WAIT)
            .assert_code(1)
            .assert_stderr_contains(&format!("error: {msg}"));
    }
    // Client --disable-authentication combines with a policy.
    let srv = TlsServer::start(&pki.issue("srv", &server_spec()), ClientAuth::None);
    let (listen, addr) = free_addr();
    let d = Cmd::new("client")
        .args(["--listen", &listen, "--target", &srv.target_localhost()])
        .arg("--disable-authentication")
        .args(pki.cacert_args())
        .args([
            &vpolicy,
            "--verify-query=input.certificate.Subject.CommonName == \"server\"",
        ])
        .spawn();
    let mut s = tcp_connect(addr);
    assert_echo(&mut s, b"hello");
    drop(d);
}

/// Evaluations, denials, errors and the evaluation timer are in every metrics format, and
/// `/_status` names the policy.
#[test]
fn policy_metrics_and_status() {
    let pki = Pki::new();
    let other = pki.issue("other", &LeafSpec::client("other"));
    let b = bundle(
        &pki.dir,
        "metrics",
        &allow_if(r#"input.certificate.Subject.CommonName == "client""#),
    );
    let backend = Backend::echo();
    let (status, _) = free_addr();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &[
            &format!("--allow-policy={b}"),
            "--allow-query=data.ghostunnel.allow",
            &format!("--status=http://{status}"),
        ],
    );
    d.wait_log("listening for connections", LOG_WAIT);
    // The second connection resumes the first one's session, and is evaluated too.
    let client = cfg(&pki, &pki.client);
    assert_accepted(&d, addr, client.clone());
    assert_eq!(
        resumed(addr, client),
        Some(rustls::HandshakeKind::Resumed),
        "{}",
        d.describe()
    );
    assert_rejected(&mut d, addr, cfg(&pki, &other), UNAUTHORIZED);
    let json = http(&status, "GET", "/_metrics/json").body;
    for (metric, value) in [
        ("ghostunnel.policy.evaluations", "3"),
        ("ghostunnel.policy.denials", "1"),
        ("ghostunnel.policy.errors", "0"),
        ("ghostunnel.policy.eval.count", "3"),
    ] {
        assert!(
            json.contains(&format!("\"metric\":\"{metric}\",\"timestamp\":"))
                && json.contains(&format!("\"metric\":\"{metric}\"")),
            "{metric} missing in {json}"
        );
        let at = json.find(&format!("\"metric\":\"{metric}\"")).unwrap();
        let rest = &json[at..];
        let value_at = rest.find("\"value\":").unwrap() + 8;
        assert!(
            rest[value_at..].starts_with(value),
            "{metric} != {value}: {rest:.120}"
        );
    }
    let prom = http(&status, "GET", "/_metrics/prometheus").body;
    for line in [
        "ghostunnel_policy_evaluations_total 3",
        "ghostunnel_policy_denials_total 1",
        "ghostunnel_policy_eval_count 3",
    ] {
        assert!(prom.lines().any(|l| l == line), "{line} missing in\n{prom}");
    }
    let st = http(&status, "GET", "/_status").body;
    assert!(st.contains(&format!("\"policy\":\"{b}\"")), "{st}");
}
