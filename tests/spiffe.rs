//! The SPIFFE Workload API as the credential source (`--use-workload-api-addr`): two real
//! ghostunnel processes get their SVIDs and bundles from test agents (real gRPC servers on
//! UNIX sockets, SVIDs minted at test time) and carry data over mutual TLS; rotations, agent
//! loss and restarts, the initial-fetch timeout, `--allow-uri`/`--verify-uri` on SPIFFE IDs,
//! and the flag validation texts.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::util::workload_agent::{Agent, TrustDomain};
use crate::util::*;

const LOG_WAIT: Duration = Duration::from_secs(10);

/// A trust domain and two agents: one for the server process, one for the client process.
struct Spire {
    dir: TempDir,
    td: TrustDomain,
    server_agent: Agent,
    client_agent: Agent,
}

impl Spire {
    fn new(server_path: &str, client_path: &str) -> Spire {
        let dir = TempDir::new();
        let td = TrustDomain::new("example.org");
        let mut server_agent = Agent::start(&dir.join("server-agent.sock"));
        server_agent.push(&td.response(td.svid(server_path), &[]));
        let mut client_agent = Agent::start(&dir.join("client-agent.sock"));
        client_agent.push(&td.response(td.svid(client_path), &[]));
        Spire {
            dir,
            td,
            server_agent,
            client_agent,
        }
    }
}

fn server(agent: &Agent, target: &str, extra: &[&str]) -> (Daemon, SocketAddr) {
    let (listen, addr) = free_addr();
    let d = Cmd::new("server")
        .args(["--listen", &listen, "--target", target])
        .args(["--use-workload-api-addr", &agent.addr()])
        .args(extra)
        .spawn();
    (d, addr)
}

fn client(agent: &Agent, target: SocketAddr, extra: &[&str]) -> (Daemon, SocketAddr) {
    let (listen, addr) = free_addr();
    let d = Cmd::new("client")
        .args(["--listen", &listen, "--target", &target.to_string()])
        .args(["--use-workload-api-addr", &agent.addr()])
        .args(extra)
        .spawn();
    (d, addr)
}

#[test]
fn spiffe_pair_carries_data_over_mutual_tls() {
    let spire = Spire::new("/ns/prod/server", "/ns/prod/client");
    let backend = Backend::echo();
    let (mut srv, saddr) = server(
        &spire.server_agent,
        &backend.target(),
        &["--allow-uri", "spiffe://example.org/ns/*/client"],
    );
    // The target is an IP the SVID does not name: SPIFFE peers are not checked by host name.
    let (mut cli, caddr) = client(
        &spire.client_agent,
        saddr,
        &["--verify-uri", "spiffe://example.org/ns/prod/server"],
    );
    for d in [&mut srv, &mut cli] {
        d.wait_log("using SPIFFE Workload API as certificate source", LOG_WAIT);
        d.wait_log("spiffe/debug: Watching X.509 contexts", LOG_WAIT);
    }
    let mut s = tcp_connect(caddr);
    assert_echo(&mut s, b"hello over SVIDs");
    assert_echo(&mut s, &pattern(7, 200_000));
    srv.wait_log("opening pipe", LOG_WAIT);
}

#[test]
fn spiffe_rotation_reaches_new_connections_while_old_ones_flow() {
    let mut spire = Spire::new("/server/v1", "/client");
    let backend = Backend::echo();
    let (mut srv, saddr) = server(
        &spire.server_agent,
        &backend.target(),
        &["--allow-uri", "spiffe://example.org/client"],
    );
    let pinned_to_v1 = ["--verify-uri", "spiffe://example.org/server/v1"];
    let (_old_client, old_addr) = client(&spire.client_agent, saddr, &pinned_to_v1);
    let mut old = tcp_connect(old_addr);
    assert_echo(&mut old, b"before rotation");

    let td = &spire.td;
    spire
        .server_agent
        .push(&td.response(td.svid("/server/v2"), &[]));
    srv.wait_log("loaded certificate: CN=server/v2", LOG_WAIT);
    // New handshakes get v2: a client pinned to v1 refuses it...
    let (mut pinned, pinned_addr) = client(&spire.client_agent, saddr, &pinned_to_v1);
    assert_dial_fails(&mut pinned, pinned_addr, "unauthorized");
    // ...one that accepts any version gets through...
    let (_any, any_addr) = client(
        &spire.client_agent,
        saddr,
        &["--verify-uri", "spiffe://example.org/server/*"],
    );
    let mut s = tcp_connect(any_addr);
    assert_echo(&mut s, b"after rotation");
    // ...and the connection made before the rotation keeps flowing.
    assert_echo(&mut old, &pattern(3, 100_000));
}

#[test]
fn spiffe_peer_outside_allow_uri_is_refused() {
    let spire = Spire::new("/server", "/intruder");
    let backend = Backend::echo();
    let (mut srv, saddr) = server(
        &spire.server_agent,
        &backend.target(),
        &["--allow-uri", "spiffe://example.org/client/*"],
    );
    let (cli, caddr) = client(&spire.client_agent, saddr, &[]);
    // With TLS 1.3 the client finishes its side first; the server's refusal ends the tunnel
    // before any byte reaches the backend.
    let mut s = tcp_connect(caddr);
    let _ = s.write_all(b"let me in");
    let (data, _) = read_to_end_lossy(&mut s);
    assert!(data.is_empty(), "{data:?}{}", cli.describe());
    srv.wait_log("error on TLS handshake from 127.0.0.1:", LOG_WAIT);
    srv.wait_log(
        ": unauthorized: invalid principal, or principal not allowed",
        LOG_WAIT,
    );
    assert_eq!(
        backend.stats.accepted(),
        0,
        "a refused peer reached the backend"
    );
}

#[test]
fn spiffe_initial_fetch_times_out() {
    let dir = TempDir::new();
    // An agent that accepts the call and never sends an update (no registration entry).
    let agent = Agent::start(&dir.join("agent.sock"));
    let (listen, _) = free_addr();
    let out = Cmd::new("client")
        .args(["--listen", &listen, "--target", "127.0.0.1:1"])
        .args(["--use-workload-api-addr", &agent.addr()])
        .args(["--use-workload-api-timeout", "1s"])
        .run(Duration::from_secs(20));
    out.assert_code(1).assert_stderr_contains(
        "timed out or failed waiting for initial SPIFFE Workload API update (is the agent reachable and is there a registration entry?): context deadline exceeded",
    );
    assert!(agent.calls() >= 1, "{}", out.describe());
    assert_eq!(agent.headerless_calls(), 0);
}

#[test]
fn spiffe_agent_restart_keeps_serving_then_resumes() {
    let spire = Spire::new("/unused", "/client");
    let td = &spire.td;
    let sock = spire.dir.join("restarting-agent.sock");
    let mut agent = Agent::start(&sock);
    agent.push(&td.response(td.svid("/server"), &[]));
    let backend = Backend::echo();
    let (status, _) = free_addr();
    let (mut srv, saddr) = server(
        &agent,
        &backend.target(),
        &[
            "--allow-uri",
            "spiffe://example.org/client",
            &format!("--status=http://{status}"),
        ],
    );
    let (_cli, caddr) = client(&spire.client_agent, saddr, &[]);
    let mut s = tcp_connect(caddr);
    assert_echo(&mut s, b"agent up");

    let last = agent.kill();
    srv.wait_log("spiffe/error: Failed to watch the Workload API: ", LOG_WAIT);
    srv.wait_log("spiffe/debug: Retrying watch in ", LOG_WAIT);
    // The last good SVID keeps serving new connections while the agent is away.
    let mut s = tcp_connect(caddr);
    assert_echo(&mut s, b"agent down");
    let r = http(&status, "GET", "/_status");
    assert!(
        r.body.contains("\"workload_api\":\"reconnecting\""),
        "{}",
        r.body
    );

    // The agent comes back (with a rotated SVID); the stream resumes.
    let mut agent = Agent::restart(&sock, last);
    agent.push(&td.response(td.svid("/server"), &[]));
    assert!(
        eventually(Duration::from_secs(20), || agent.calls() >= 1),
        "no reconnection{}",
        srv.describe()
    );
    assert!(eventually(LOG_WAIT, || http(&status, "GET", "/_status")
        .body
        .contains("\"workload_api\":\"connected\"")));
    let mut s = tcp_connect(caddr);
    assert_echo(&mut s, b"agent back");
}

#[test]
fn spiffe_flag_validation_texts() {
    let (listen, _) = free_addr();
    let base = |mode: &str| Cmd::new(mode).args(["--listen", &listen, "--target", "127.0.0.1:1"]);
    base("client")
        .arg("--use-workload-api")
        .run(Duration::from_secs(10))
        .assert_code(1)
        .assert_stderr_contains("error: workload endpoint socket address is not configured");
    base("client")
        .arg("--use-workload-api-addr=unix:relative/agent.sock")
        .run(Duration::from_secs(10))
        .assert_code(1)
        .assert_stderr_contains("workload endpoint unix socket URI must not be opaque");
    base("client")
        .arg("--use-workload-api-addr=tcp://localhost:8081")
        .run(Duration::from_secs(10))
        .assert_code(1)
        .assert_stderr_contains(
            "workload endpoint tcp socket URI host component must be an IP:port",
        );
    base("server")
        .args(["--allow-all", "--use-workload-api-addr=/run/agent.sock"])
        .run(Duration::from_secs(10))
        .assert_code(1)
        .assert_stderr_contains(
            "workload endpoint socket URI must have a \"tcp\" or \"unix\" scheme",
        );
    // The environment alone turns the source on, so it clashes with files.
    base("client")
        .args(["--cert", "/nonexistent", "--key", "/nonexistent"])
        .env("SPIFFE_ENDPOINT_SOCKET", "unix:///run/agent.sock")
        .run(Duration::from_secs(10))
        .assert_code(1)
        .assert_stderr_contains("mutually exclusive");
    base("server")
        .args([
            "--use-workload-api-addr=unix:///run/agent.sock",
            "--allow-spki-pin=sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ])
        .run(Duration::from_secs(10))
        .assert_code(1)
        .assert_stderr_contains("--allow-spki-pin is mutually exclusive with --use-workload-api");
    base("client")
        .arg("--use-workload-api-timeout=-1s")
        .arg("--use-workload-api-addr=unix:///run/agent.sock")
        .run(Duration::from_secs(10))
        .assert_code(1)
        .assert_stderr_contains("--use-workload-api-timeout");
}

#[test]
fn spiffe_check_reports_the_svid() {
    let spire = Spire::new("/ns/prod/server", "/client");
    let out = Cmd::bare()
        .args([
            "--check",
            "server",
            "--listen=127.0.0.1:0",
            "--target=127.0.0.1:1",
        ])
        .args(["--use-workload-api-addr", &spire.server_agent.addr()])
        .args(["--allow-uri", "spiffe://example.org/client"])
        .run(Duration::from_secs(20));
    out.assert_code(0)
        .assert_stdout_contains(&format!(
            "identity: {} (SPIFFE Workload API)",
            spire.server_agent.addr()
        ))
        .assert_stdout_contains("  SPIFFE ID: spiffe://example.org/ns/prod/server")
        .assert_stdout_contains("  trust domains: example.org");
}

/// A TCP agent: the sandbox grants a connect to its port, so the stream thread (started under
/// Landlock) reaches it and rotations arrive.
#[test]
fn spiffe_tcp_agent_inside_the_sandbox() {
    let td = TrustDomain::new("example.org");
    let mut agent = Agent::start_tcp();
    agent.push(&td.response(td.svid("/server/v1"), &[]));
    let backend = Backend::echo();
    let (mut srv, _) = server(&agent, &backend.target(), &["--allow-all"]);
    let port = agent.addr().rsplit_once(':').unwrap().1.to_string();
    let out = srv.wait_log("landlock: ", LOG_WAIT);
    let line = out.lines().find(|l| l.contains("landlock: ")).unwrap();
    let ports = line
        .split_once("connect to ports {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(ports, _)| ports.split(", ").collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(ports.contains(&port.as_str()), "{line}");
    // The first stream ran before the sandbox; the thread's own stream comes after it.
    assert!(agent.wait_calls(2, LOG_WAIT), "{}", srv.describe());
    agent.push(&td.response(td.svid("/server/v2"), &[]));
    srv.wait_log("loaded certificate: CN=server/v2", LOG_WAIT);
}

/// Client `--disable-authentication` with the Workload API: the SVID's bundles still verify the
/// server, but no client certificate is presented.
#[test]
fn spiffe_client_without_authentication_presents_no_svid() {
    let spire = Spire::new("/server", "/client");
    let backend = Backend::echo();
    let (_open, open_addr) = server(
        &spire.server_agent,
        &backend.target(),
        &["--disable-authentication"],
    );
    let (mut strict, strict_addr) = server(
        &spire.server_agent,
        &backend.target(),
        &["--allow-uri", "spiffe://example.org/client"],
    );
    let anonymous = [
        "--disable-authentication",
        "--verify-uri",
        "spiffe://example.org/server",
    ];
    let (_c1, to_open) = client(&spire.client_agent, open_addr, &anonymous);
    let mut s = tcp_connect(to_open);
    assert_echo(&mut s, b"no certificate needed");
    let (_c2, to_strict) = client(&spire.client_agent, strict_addr, &anonymous);
    let mut s = tcp_connect(to_strict);
    let _ = s.write_all(b"x");
    assert!(read_to_end_lossy(&mut s).0.is_empty());
    strict.wait_log("error on TLS handshake from 127.0.0.1:", LOG_WAIT);
}
