//! Client mode: plaintext listener, mutual TLS towards a remote server (docs/behaviour.md §4.3,
//! §5.2).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::util::*;

const UNAUTHORIZED: &str = "unauthorized: invalid principal, or principal not allowed";
const LOG_WAIT: Duration = Duration::from_secs(5);

/// The plain client is served end to end through the tunnel.
fn assert_served(d: &Daemon, addr: SocketAddr) {
    let mut s = tcp_connect(addr);
    s.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    if let Err(e) = std::io::Read::read_exact(&mut s, &mut back) {
        panic!("client not served: {e}{}", d.describe());
    }
    assert_eq!(&back, b"hello");
}

fn required(pki: &Pki) -> ClientAuth {
    ClientAuth::Required(pki.ca.cert_der.clone())
}

/// Plain TCP → ghostunnel client → rustls mTLS server: data flows, the client certificate
/// is presented, and the pipe line shows the server subject.
#[test]
fn client_end_to_end() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, required(&pki));
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &[]);
    let mut s = tcp_connect(addr);
    let port = s.local_addr().unwrap().port();
    assert_echo(&mut s, b"hello");
    assert_eq!(srv.peers(), vec![Some(pki.client.cert_der.clone())]);
    assert_eq!(srv.sni(), vec![Some("localhost".to_string())]);
    d.wait_log(
        &format!(
            "opening pipe: tcp:127.0.0.1:{port} [no tls] <-> tcp:{} [CN=server,OU=servers,O=Acme] ",
            srv.addr
        ),
        LOG_WAIT,
    );
}

/// `--cert`/`--key` work as the client identity.
#[test]
fn client_cert_and_key_files() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, required(&pki));
    let (listen, addr) = free_addr();
    let d = Cmd::new("client")
        .args(["--listen", &listen, "--target", &srv.target_localhost()])
        .args(pki.client.cert_key_args())
        .args(pki.cacert_args())
        .spawn();
    assert_served(&d, addr);
    assert_eq!(srv.peers(), vec![Some(pki.client.cert_der.clone())]);
}

/// A server certificate from an unrelated CA fails the dial.
#[test]
fn client_rejects_server_from_wrong_ca() {
    let pki = Pki::new();
    let fake = pki.issue_other("fake", &LeafSpec::server("server"));
    let srv = TlsServer::start(&fake, required(&pki));
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &[]);
    assert_dial_fails(&mut d, addr, "");
    assert!(srv.peers().is_empty(), "server saw a completed handshake");
}

/// Hostname verification: a server certificate without the dialed name fails; with
/// `--override-server-name` it is accepted and that name is sent as SNI.
#[test]
fn override_server_name() {
    let pki = Pki::new();
    let mut spec = LeafSpec::server("backend");
    spec.dns = vec!["backend.internal".into()];
    spec.ips.clear();
    let id = pki.issue("backend", &spec);
    let srv = TlsServer::start(&id, required(&pki));
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &[]);
    assert_dial_fails(&mut d, addr, "");
    drop(d);
    let (d, addr) = start_client(
        &pki,
        &srv.target_localhost(),
        &["--override-server-name=backend.internal"],
    );
    assert_served(&d, addr);
    assert_eq!(srv.sni(), vec![Some("backend.internal".to_string())]);
}

/// Dialing `127.0.0.1:PORT` verifies the IP SAN.
#[test]
fn ip_target_verifies_ip_san() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, required(&pki));
    let (d, addr) = start_client(&pki, &srv.target(), &[]);
    assert_served(&d, addr);
}

/// Runs the accept/reject pair for one `--verify-*` configuration.
fn verify_case(good_flags: &[&str], bad_flags: &[&str], server: &LeafSpec) {
    let pki = Pki::new();
    let id = pki.issue("srv", server);
    let srv = TlsServer::start(&id, required(&pki));
    let (d, addr) = start_client(&pki, &srv.target_localhost(), good_flags);
    assert_served(&d, addr);
    drop(d);
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), bad_flags);
    assert_dial_fails(&mut d, addr, UNAUTHORIZED);
}

fn server_spec() -> LeafSpec {
    LeafSpec::server("server")
        .ou("servers")
        .o("Acme")
        .uri("spiffe://example.com/server")
}

#[test]
fn verify_cn() {
    verify_case(
        &["--verify-cn=server"],
        &["--verify-cn=other"],
        &server_spec(),
    );
}

#[test]
fn verify_ou() {
    verify_case(
        &["--verify-ou=servers"],
        &["--verify-ou=clients"],
        &server_spec(),
    );
}

#[test]
fn verify_dns() {
    verify_case(
        &["--verify-dns=localhost"],
        &["--verify-dns=other.example.com"],
        &server_spec(),
    );
}

#[test]
fn verify_uri() {
    verify_case(
        &["--verify-uri=spiffe://example.com/*"],
        &["--verify-uri=spiffe://example.org/*"],
        &server_spec(),
    );
}

#[test]
fn verify_ip() {
    verify_case(
        &["--verify-ip=127.0.0.1"],
        &["--verify-ip=10.1.2.3"],
        &server_spec(),
    );
}

/// `--verify-spki-pin` accepts the pinned server key (standard verification skipped, so an
/// unrelated CA is fine) and rejects a server whose key is not pinned.
#[test]
fn verify_spki_pin() {
    let pki = Pki::new();
    let pinned = pki.issue_other("pinned", &LeafSpec::server("pinned"));
    let srv = TlsServer::start(&pinned, required(&pki));
    let pin = format!("--verify-spki-pin={}", pinned.spki_pin);
    let (d, addr) = start_client(&pki, &srv.target_localhost(), &[&pin]);
    assert_served(&d, addr);
    drop(d);
    let wrong = format!("--verify-spki-pin={}", pki.server.spki_pin);
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &[&wrong]);
    assert_dial_fails(&mut d, addr, "unauthorized");
}

/// Client `--disable-authentication` sends no certificate (a server that only requests one
/// serves it; a server that requires one refuses).
#[test]
fn client_disable_authentication() {
    let pki = Pki::new();
    let optional = TlsServer::start(&pki.server, ClientAuth::Optional(pki.ca.cert_der.clone()));
    let (listen, addr) = free_addr();
    let ca = pki.ca.cert_path.display().to_string();
    let d = Cmd::new("client")
        .args([
            "--listen",
            &listen,
            "--target",
            &optional.target_localhost(),
        ])
        .args(["--cacert", &ca, "--disable-authentication"])
        .spawn();
    assert_served(&d, addr);
    assert_eq!(optional.peers(), vec![None]);
    assert!(
        d.stdout()
            .contains("no cert source configured -- running without certificate"),
        "{}",
        d.describe()
    );
    drop(d);

    let strict = TlsServer::start(&pki.server, required(&pki));
    let (listen, addr) = free_addr();
    let d = Cmd::new("client")
        .args(["--listen", &listen, "--target", &strict.target_localhost()])
        .args(["--cacert", &ca, "--disable-authentication"])
        .spawn();
    let mut s = tcp_connect(addr);
    let _ = s.write_all(b"hello");
    let (data, _) = read_to_end_lossy(&mut s);
    assert!(
        data.is_empty(),
        "served without a certificate{}",
        d.describe()
    );
    // TLS 1.3: the client learns of the rejection after its side of the handshake, so the
    // failure may surface as a dial error or a copy error; either way nothing is served.
    assert!(strict.peers().is_empty());
}

/// `--listen unix:PATH`: the listener is a UNIX socket; the pipe line shows `unix:@`.
#[test]
fn unix_listen() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, required(&pki));
    let path = pki.dir.join("client.sock");
    let listen = format!("unix:{}", path.display());
    let mut d = Cmd::new("client")
        .args(["--listen", &listen, "--target", &srv.target_localhost()])
        .args(pki.client_cred_args())
        .spawn();
    let mut s = UnixStream::connect(&path).expect("connect unix listener");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_echo(&mut s, b"hello");
    d.wait_log(
        &format!(
            "opening pipe: unix:@ [no tls] <-> tcp:{} [CN=server,OU=servers,O=Acme] ",
            srv.addr
        ),
        LOG_WAIT,
    );
}

/// Backend (remote server) down: `error on dial:` and the client connection is closed.
#[test]
fn client_target_down() {
    let pki = Pki::new();
    let dead = format!("localhost:{}", free_port());
    let (mut d, addr) = start_client(&pki, &dead, &[]);
    assert_dial_fails(&mut d, addr, "");
}

/// A remote server that accepts TCP but never answers the ClientHello: the dial fails after
/// `--connect-timeout` and the plain client is disconnected.
#[test]
fn client_connect_timeout_on_silent_server() {
    let pki = Pki::new();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("localhost:{}", silent.local_addr().unwrap().port());
    let (mut d, addr) = start_client(&pki, &target, &["--connect-timeout=1s"]);
    let t = std::time::Instant::now();
    let mut s = tcp_connect(addr);
    let _ = s.write_all(b"hello");
    let (data, _) = read_to_end_lossy(&mut s);
    let took = t.elapsed();
    assert!(data.is_empty());
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(1900),
        "disconnected after {took:?}, expected about 1s{}",
        d.describe()
    );
    d.wait_log("error on dial: ", LOG_WAIT);
    drop(silent);
}

/// The client resumes its TLS session with the server: the second connection through the
/// tunnel is an abbreviated handshake. `GHOSTUNNEL_TLS_RESUMPTION=off` makes every one full,
/// as with the reference.
#[test]
fn client_resumes_sessions_unless_turned_off() {
    use rustls::HandshakeKind::{Full, Resumed};
    let pki = Pki::new();
    for (setting, expected) in [(None, [Full, Resumed]), (Some("off"), [Full, Full])] {
        let srv = TlsServer::start(&pki.server, required(&pki));
        let (listen, addr) = free_addr();
        let mut cmd = Cmd::new("client")
            .args(["--listen", &listen, "--target", &srv.target_localhost()])
            .args(pki.client_cred_args());
        if let Some(v) = setting {
            cmd = cmd.env("GHOSTUNNEL_TLS_RESUMPTION", v);
        }
        let d = cmd.spawn();
        // One at a time: the first connection's echo arrives after its session ticket.
        assert_served(&d, addr);
        assert_served(&d, addr);
        assert_eq!(
            srv.handshake_kinds(),
            expected,
            "GHOSTUNNEL_TLS_RESUMPTION={setting:?}{}",
            d.describe()
        );
    }
}
