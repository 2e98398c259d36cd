//! Server mode: TLS listener with client-certificate authorization in front of a plaintext
//! backend (docs/behaviour.md §4.2, §5.1, §7, §13.3).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, HandshakeKind};

use crate::util::*;

const UNAUTHORIZED: &str = "unauthorized: invalid principal, or principal not allowed";
const LOG_WAIT: Duration = Duration::from_secs(5);

/// Runs one TLS connection: handshake, write `msg`, read the echo. Returns the client's
/// local port and the outcome.
fn attempt(addr: SocketAddr, cfg: Arc<ClientConfig>, msg: &[u8]) -> (u16, Result<(), String>) {
    let (port, r) = attempt_kind(addr, cfg, msg);
    (port, r.map(drop))
}

/// [`attempt`], telling whether the handshake was full or resumed.
fn attempt_kind(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    msg: &[u8],
) -> (u16, Result<HandshakeKind, String>) {
    let sock = tcp_connect(addr);
    let port = sock.local_addr().unwrap().port();
    let server_name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(cfg, server_name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let r = (|| {
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        s.write_all(msg).map_err(|e| format!("write: {e}"))?;
        s.flush().map_err(|e| format!("flush: {e}"))?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
        if back != msg {
            return Err(format!("echo mismatch: {back:?}"));
        }
        s.conn
            .handshake_kind()
            .ok_or_else(|| "no handshake kind after the handshake".to_string())
    })();
    (port, r)
}

/// Asserts that `cfg` is accepted: the message is echoed by the backend.
fn assert_accepted(d: &Daemon, addr: SocketAddr, cfg: Arc<ClientConfig>) {
    let (_, r) = attempt(addr, cfg, b"hello");
    if let Err(e) = r {
        panic!("allowed client was not served: {e}{}", d.describe());
    }
}

/// Asserts that `cfg` is rejected: no data comes back, nothing reaches the backend and the
/// daemon logs `error on TLS handshake from 127.0.0.1:<port>: <reason>`.
fn assert_rejected(
    d: &mut Daemon,
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    backend: &Backend,
    reason: &str,
) {
    let before = backend.stats.accepted();
    let (port, r) = attempt(addr, cfg, b"hello");
    assert!(
        r.is_err(),
        "rejected client got its data echoed{}",
        d.describe()
    );
    d.wait_log(
        &format!("error on TLS handshake from 127.0.0.1:{port}: {reason}"),
        LOG_WAIT,
    );
    assert_eq!(
        backend.stats.accepted(),
        before,
        "a rejected client reached the backend{}",
        d.describe()
    );
}

fn cfg(pki: &Pki, id: &Identity) -> Arc<ClientConfig> {
    client_config(&pki.ca.cert_der, Some(id))
}

/// A client with a valid certificate reaches the backend through the TLS listener, and both
/// connection lines are logged in the docs/behaviour.md §13.3 format.
#[test]
fn server_end_to_end_with_pipe_log_lines() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-cn=client"]);
    let mut s = tls_connect(addr, cfg(&pki, &pki.client), "localhost").expect("handshake");
    let port = s.sock.local_addr().unwrap().port();
    assert_echo(&mut s, b"hello");
    s.conn.send_close_notify();
    let _ = s.flush();
    let _ = s.sock.shutdown(std::net::Shutdown::Write);
    let (_, _) = read_to_end_lossy(&mut s);
    drop(s);

    let pipe = format!(
        "tcp:127.0.0.1:{port} [CN=client,OU=clients,O=Acme] <-> tcp:{} [no tls]",
        backend.addr
    );
    let out = d.wait_log("closed pipe:", LOG_WAIT);
    let opening = log_messages(&out, d.pid(), "opening pipe:");
    assert_eq!(
        opening,
        vec![format!("opening pipe: {pipe} ")],
        "opening pipe line{}",
        d.describe()
    );
    let closed = log_messages(&out, d.pid(), "closed pipe:");
    assert_eq!(closed.len(), 1, "one closed pipe line{}", d.describe());
    let expect = format!("closed pipe: {pipe} [forwarded 5 bytes, returned 5 bytes, open ");
    assert!(
        closed[0].starts_with(&expect) && closed[0].ends_with(']'),
        "closed pipe line {:?} does not start with {expect:?}{}",
        closed[0],
        d.describe()
    );
    let dur = &closed[0][expect.len()..closed[0].len() - 1];
    assert!(
        dur.ends_with("ms") || dur.ends_with("µs") || dur.ends_with('s'),
        "duration {dur:?} is not in Go notation"
    );
    assert_eq!(backend.stats.accepted(), 1);
}

/// `--cert`/`--key` PEM files work as the server identity (docs/behaviour.md §3.1).
#[test]
fn server_cert_and_key_files() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (listen, addr) = free_addr();
    let d = Cmd::new("server")
        .args(["--listen", &listen, "--target", &backend.target()])
        .args(pki.server.cert_key_args())
        .args(pki.cacert_args())
        .arg("--allow-all")
        .spawn();
    assert_accepted(&d, addr, cfg(&pki, &pki.client));
    assert!(
        d.stdout()
            .contains("using cert/key files on disk as certificate source"),
        "{}",
        d.describe()
    );
}

/// Runs the accept/reject pair for one ACL configuration.
fn acl_case(flags: &[&str], good: &LeafSpec, bad: &LeafSpec) {
    let pki = Pki::new();
    let good = pki.issue("good", good);
    let bad = pki.issue("bad", bad);
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), flags);
    assert_accepted(&d, addr, cfg(&pki, &good));
    assert_rejected(&mut d, addr, cfg(&pki, &bad), &backend, UNAUTHORIZED);
    // The daemon keeps serving allowed clients after a rejection.
    assert_accepted(&d, addr, cfg(&pki, &good));
}

#[test]
fn allow_cn() {
    acl_case(
        &["--allow-cn=client"],
        &LeafSpec::client("client"),
        &LeafSpec::client("Client"),
    );
}

#[test]
fn allow_ou() {
    acl_case(
        &["--allow-ou=clients"],
        &LeafSpec::client("a").ou("other").ou("clients"),
        &LeafSpec::client("client").ou("others"),
    );
}

#[test]
fn allow_dns() {
    acl_case(
        &["--allow-dns=client.example.com"],
        &LeafSpec::client("x").dns("client.example.com"),
        &LeafSpec::client("client.example.com").dns("other.example.com"),
    );
}

#[test]
fn allow_uri_wildcard() {
    acl_case(
        &["--allow-uri=spiffe://example.com/*"],
        &LeafSpec::client("x").uri("spiffe://example.com/client1"),
        &LeafSpec::client("x").uri("spiffe://example.com/a/b"),
    );
}

#[test]
fn allow_uri_double_star() {
    acl_case(
        &["--allow-uri=spiffe://example.com/ns/**"],
        &LeafSpec::client("x").uri("spiffe://example.com/ns/a/b/c"),
        &LeafSpec::client("x").uri("spiffe://example.com/nsx/a"),
    );
}

#[test]
fn allow_ip() {
    acl_case(
        &["--allow-ip=127.0.0.1"],
        &LeafSpec::client("x").ip("127.0.0.1"),
        &LeafSpec::client("x").ip("10.0.0.1"),
    );
}

/// Several allow flags of different kinds are OR'd.
#[test]
fn allow_flags_are_ored() {
    acl_case(
        &["--allow-cn=nobody", "--allow-ou=clients"],
        &LeafSpec::client("someone").ou("clients"),
        &LeafSpec::client("someone").ou("servers"),
    );
}

/// `--allow-spki-pin` accepts the pinned key even from an unrelated CA and rejects others.
#[test]
fn allow_spki_pin() {
    let pki = Pki::new();
    let pinned = pki.issue_other("pinned", &LeafSpec::client("pinned"));
    let backend = Backend::echo();
    let pin = format!("--allow-spki-pin={}", pinned.spki_pin);
    let (mut d, addr) = start_server(&pki, &backend.target(), &[&pin]);
    assert_accepted(&d, addr, cfg(&pki, &pinned));
    // The main CA's client is valid for the CA but its key is not pinned.
    let (port, r) = attempt(addr, cfg(&pki, &pki.client), b"hello");
    assert!(r.is_err(), "unpinned client was served{}", d.describe());
    d.wait_log(
        &format!("error on TLS handshake from 127.0.0.1:{port}: unauthorized"),
        LOG_WAIT,
    );
    assert_eq!(backend.stats.accepted(), 1, "{}", d.describe());
}

/// `--allow-all` accepts any client certificate from the CA but still verifies the chain.
#[test]
fn allow_all_accepts_any_valid_client() {
    let pki = Pki::new();
    let anyone = pki.issue("anyone", &LeafSpec::client("anyone"));
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-all"]);
    assert_accepted(&d, addr, cfg(&pki, &anyone));
    assert_accepted(&d, addr, cfg(&pki, &pki.client));
    let stranger = pki.issue_other("stranger", &LeafSpec::client("client"));
    assert_rejected(&mut d, addr, cfg(&pki, &stranger), &backend, "");
}

/// A client certificate from an unrelated CA is rejected.
#[test]
fn reject_wrong_ca() {
    let pki = Pki::new();
    let stranger = pki.issue_other("stranger", &Pki::client_spec());
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-cn=client"]);
    assert_rejected(&mut d, addr, cfg(&pki, &stranger), &backend, "");
    assert_accepted(&d, addr, cfg(&pki, &pki.client));
}

/// A client without a certificate is rejected.
#[test]
fn reject_missing_client_cert() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-all"]);
    let anon = client_config(&pki.ca.cert_der, None);
    assert_rejected(&mut d, addr, anon, &backend, "");
    assert_accepted(&d, addr, cfg(&pki, &pki.client));
}

/// An expired client certificate is rejected even with `--allow-all`.
#[test]
fn reject_expired_client_cert() {
    let pki = Pki::new();
    let old = pki.issue("old", &Pki::client_spec().expired());
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-all"]);
    assert_rejected(&mut d, addr, cfg(&pki, &old), &backend, "");
}

/// `--disable-authentication` serves clients without a certificate; the pipe line shows
/// `[no cert]`.
#[test]
fn disable_authentication() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--disable-authentication"]);
    let anon = client_config(&pki.ca.cert_der, None);
    let (port, r) = attempt(addr, anon, b"hello");
    r.unwrap_or_else(|e| panic!("anonymous client not served: {e}{}", d.describe()));
    d.wait_log(
        &format!("opening pipe: tcp:127.0.0.1:{port} [no cert] <-> "),
        LOG_WAIT,
    );
}

/// TLS 1.2 clients with AEAD suites are served, and the ACL applies to them too.
#[test]
fn tls12_client_is_served_and_authorized() {
    let pki = Pki::new();
    let other = pki.issue("other", &LeafSpec::client("other"));
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-cn=client"]);
    let v12 = &[&rustls::version::TLS12];
    let good = client_config_versions(&pki.ca.cert_der, Some(&pki.client), v12);
    assert_accepted(&d, addr, good);
    let bad = client_config_versions(&pki.ca.cert_der, Some(&other), v12);
    assert_rejected(&mut d, addr, bad, &backend, UNAUTHORIZED);
}

/// Two successive connections from one rustls config, the second one resuming the first's
/// session, are both authorized and both logged with the client subject (docs/behaviour.md §4.1: a
/// resumed session must not lose or bypass authorization).
fn resumption_case(versions: &[&'static rustls::SupportedProtocolVersion]) {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-cn=client"]);
    let c = client_config_versions(&pki.ca.cert_der, Some(&pki.client), versions);
    for (i, expected) in [HandshakeKind::Full, HandshakeKind::Resumed]
        .into_iter()
        .enumerate()
    {
        let (port, r) = attempt_kind(addr, c.clone(), b"hello");
        let kind = r.unwrap_or_else(|e| panic!("connection {i} not served: {e}{}", d.describe()));
        assert_eq!(kind, expected, "connection {i}{}", d.describe());
        d.wait_log(
            &format!("opening pipe: tcp:127.0.0.1:{port} [CN=client,OU=clients,O=Acme] <-> "),
            LOG_WAIT,
        );
    }
    assert_eq!(backend.stats.accepted(), 2);
}

#[test]
fn resumed_sessions_keep_client_identity_tls13() {
    resumption_case(&[&rustls::version::TLS13]);
}

#[test]
fn resumed_sessions_keep_client_identity_tls12() {
    resumption_case(&[&rustls::version::TLS12]);
}

/// A session obtained by an allowed client must not let a client holding a rejected
/// certificate in: the rejected client's config shares the allowed client's session store,
/// so it offers the allowed client's ticket. Whatever the server does with the ticket, the
/// connection must not be attributed to a principal the ACL rejects.
#[test]
fn shared_ticket_does_not_authorize_other_principal() {
    let pki = Pki::new();
    let other = pki.issue("other", &LeafSpec::client("other"));
    let backend = Backend::echo();
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-cn=client"]);
    let good = client_config(&pki.ca.cert_der, Some(&pki.client));
    let mut bad = (*client_config(&pki.ca.cert_der, Some(&other))).clone();
    bad.resumption = good.resumption.clone();
    let (_, r) = attempt(addr, good, b"hello");
    r.unwrap_or_else(|e| panic!("allowed client not served: {e}{}", d.describe()));
    let (port, r) = attempt(addr, Arc::new(bad), b"hello");
    assert!(
        r.is_err(),
        "a rejected principal was served{}",
        d.describe()
    );
    // The daemon's verdict on that connection, whatever it is, names its source port.
    let needle = format!("127.0.0.1:{port}");
    let out = d.wait_log(&needle, LOG_WAIT);
    let line = out
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_default();
    assert!(
        !line.contains("opening pipe") && !d.stdout().contains("[CN=other"),
        "a rejected principal got a pipe: {line}{}",
        d.describe()
    );
}

/// Builds a ClientHello record by hand.
fn client_hello(record_version: u16, version: u16, suites: &[u16], tls12_exts: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&pattern(7, 32)); // random
    body.push(0); // session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut exts = Vec::new();
    let mut ext = |ty: u16, data: &[u8]| {
        exts.extend_from_slice(&ty.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(data);
    };
    // server_name: localhost
    let name = b"localhost";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    ext(0x0000, &sni);
    // supported_groups: x25519, secp256r1, secp384r1
    ext(0x000a, &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    // ec_point_formats: uncompressed
    ext(0x000b, &[1, 0]);
    if tls12_exts {
        // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256,
        // ecdsa_secp384r1_sha384, ed25519
        ext(
            0x000d,
            &[
                0, 10, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03, 0x08, 0x07,
            ],
        );
        // extended_master_secret, renegotiation_info
        ext(0x0017, &[]);
        ext(0xff01, &[0]);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16];
    rec.extend_from_slice(&record_version.to_be_bytes());
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Sends a raw ClientHello and reports whether the server answered with a ServerHello.
fn server_hello_returned(addr: SocketAddr, hello: &[u8]) -> bool {
    let mut s = tcp_connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(hello).unwrap();
    let mut head = [0u8; 6];
    match s.read_exact(&mut head) {
        // Handshake record whose first message is ServerHello (type 2).
        Ok(()) => head[0] == 0x16 && head[5] == 2,
        Err(_) => false,
    }
}

const ECDHE_ECDSA_AES128_GCM_SHA256: u16 = 0xc02b;
const ECDHE_ECDSA_AES128_CBC_SHA: u16 = 0xc009;
const ECDHE_RSA_AES128_CBC_SHA: u16 = 0xc013;
const RSA_AES128_CBC_SHA: u16 = 0x002f;
const RSA_AES256_CBC_SHA: u16 = 0x0035;

/// Old protocol versions and CBC-only TLS 1.2 clients get no ServerHello, and the daemon
/// keeps serving a good client afterwards (docs/behaviour.md §4.1). A control hello with an AEAD
/// suite proves the hand-made hello is otherwise acceptable.
#[test]
fn reject_tls11_and_cbc_only_clients() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (d, addr) = start_server(&pki, &backend.target(), &["--allow-all"]);
    let cbc = [
        ECDHE_ECDSA_AES128_CBC_SHA,
        ECDHE_RSA_AES128_CBC_SHA,
        RSA_AES128_CBC_SHA,
        RSA_AES256_CBC_SHA,
    ];
    let control = client_hello(0x0301, 0x0303, &[ECDHE_ECDSA_AES128_GCM_SHA256], true);
    assert!(
        server_hello_returned(addr, &control),
        "control TLS 1.2 AEAD hello got no ServerHello{}",
        d.describe()
    );
    let mut all = cbc.to_vec();
    all.push(ECDHE_ECDSA_AES128_GCM_SHA256);
    let tls11 = client_hello(0x0301, 0x0302, &all, false);
    assert!(
        !server_hello_returned(addr, &tls11),
        "TLS 1.1 client got a ServerHello{}",
        d.describe()
    );
    let tls10 = client_hello(0x0301, 0x0301, &all, false);
    assert!(
        !server_hello_returned(addr, &tls10),
        "TLS 1.0 client got a ServerHello{}",
        d.describe()
    );
    let cbc12 = client_hello(0x0301, 0x0303, &cbc, true);
    assert!(
        !server_hello_returned(addr, &cbc12),
        "CBC-only TLS 1.2 client got a ServerHello{}",
        d.describe()
    );
    assert_accepted(&d, addr, cfg(&pki, &pki.client));
    assert_eq!(backend.stats.accepted(), 1, "{}", d.describe());
}

/// `--target unix:PATH` forwards to a UNIX-socket backend; the pipe line names the path.
#[test]
fn unix_target() {
    let pki = Pki::new();
    let sock = pki.dir.join("backend.sock");
    let backend = UnixBackend::start(&sock, Behaviour::Echo);
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-cn=client"]);
    let (port, r) = attempt(addr, cfg(&pki, &pki.client), b"hello");
    r.unwrap_or_else(|e| panic!("not served: {e}{}", d.describe()));
    d.wait_log(
        &format!(
            "opening pipe: tcp:127.0.0.1:{port} [CN=client,OU=clients,O=Acme] <-> unix:{} [no tls] ",
            sock.display()
        ),
        LOG_WAIT,
    );
    assert_eq!(backend.stats.accepted(), 1);
}

/// Backend down: the client's connection is closed after the handshake and `error on dial:`
/// is logged; the daemon keeps running.
#[test]
fn backend_down_closes_client_and_logs_dial_error() {
    let pki = Pki::new();
    let dead = format!("127.0.0.1:{}", free_port());
    let (mut d, addr) = start_server(&pki, &dead, &["--allow-cn=client"]);
    let (_, r) = attempt(addr, cfg(&pki, &pki.client), b"hello");
    assert!(r.is_err(), "data echoed with no backend{}", d.describe());
    d.wait_log("error on dial: ", LOG_WAIT);
    assert!(d.try_status().is_none(), "daemon exited{}", d.describe());
}

/// A backend that closes right away: the client sees EOF, the pipe is closed and logged.
#[test]
fn backend_closing_early_closes_client() {
    let pki = Pki::new();
    let backend = Backend::start(Behaviour::CloseImmediately);
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--allow-cn=client"]);
    let mut s = tls_connect(addr, cfg(&pki, &pki.client), "localhost").expect("handshake");
    let _ = s.write_all(b"hello");
    let (data, _) = read_to_end_lossy(&mut s);
    assert!(data.is_empty(), "unexpected data {data:?}");
    // The client hangs up after the EOF, as a real one would; the pipe then ends at once
    // (without it, the open client->backend direction legitimately waits for --close-timeout).
    drop(s);
    d.wait_log("closed pipe:", LOG_WAIT);
}
