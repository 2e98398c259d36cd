//! The Workload API client against a real gRPC agent on a UNIX socket (the test agent shared
//! with the integration tests), and the rustls glue over real handshakes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

use super::verify::{SvidClientVerifier, SvidResolver, SvidServerVerifier, rejection_text};
use super::*;

#[path = "../../tests/util/workload_agent.rs"]
mod agent;

use agent::{Agent, Mode, Response, TrustDomain};

fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let p = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let p = rustls::crypto::ring::default_provider();
    Arc::new(p)
}

/// A private directory for the agent socket, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("gt-wl-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn sock(&self) -> PathBuf {
        self.0.join("agent.sock")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(path: &std::path::Path) -> Source {
    let source = Source::new(Endpoint::Unix(path.to_path_buf()), provider()).unwrap();
    source.start().unwrap();
    source
}

/// Polls `cond` every 20 ms for at most `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn leaf_id(source: &Source) -> String {
    source.current().unwrap().spiffe_id.to_string()
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

#[test]
fn endpoint_syntax_and_texts() {
    let unix = |p: &str| Ok(Endpoint::Unix(p.into()));
    assert_eq!(
        parse_endpoint("unix:///run/spire/agent.sock"),
        unix("/run/spire/agent.sock")
    );
    assert_eq!(
        parse_endpoint("unix:/run/spire/agent.sock"),
        unix("/run/spire/agent.sock")
    );
    assert_eq!(
        parse_endpoint("tcp://127.0.0.1:8081"),
        Ok(Endpoint::Tcp("127.0.0.1:8081".parse().unwrap()))
    );
    assert_eq!(
        parse_endpoint("tcp://[::1]:8081"),
        Ok(Endpoint::Tcp("[::1]:8081".parse().unwrap()))
    );
    let unix_err = |what: &str| Err(format!("workload endpoint unix socket URI {what}"));
    let tcp_err = |what: &str| Err(format!("workload endpoint tcp socket URI {what}"));
    assert_eq!(
        parse_endpoint("unix:relative/path"),
        unix_err("must not be opaque")
    );
    assert_eq!(
        parse_endpoint("unix://u@/x"),
        unix_err("must not include user info")
    );
    assert_eq!(parse_endpoint("unix://"), unix_err("must include a path"));
    assert_eq!(
        parse_endpoint("unix:///x?a=b"),
        unix_err("must not include query values")
    );
    assert_eq!(
        parse_endpoint("unix:///x#f"),
        unix_err("must not include a fragment")
    );
    assert_eq!(
        parse_endpoint("tcp:1.2.3.4:5"),
        tcp_err("must not be opaque")
    );
    assert_eq!(
        parse_endpoint("tcp://u@1.2.3.4:5"),
        tcp_err("must not include user info")
    );
    assert_eq!(parse_endpoint("tcp:///x"), tcp_err("must include a host"));
    assert_eq!(
        parse_endpoint("tcp://1.2.3.4:5/x"),
        tcp_err("must not include a path")
    );
    assert_eq!(
        parse_endpoint("tcp://1.2.3.4:5?q"),
        tcp_err("must not include query values")
    );
    assert_eq!(
        parse_endpoint("tcp://1.2.3.4:5#f"),
        tcp_err("must not include a fragment")
    );
    assert_eq!(
        parse_endpoint("tcp://localhost:5"),
        tcp_err("host component must be an IP:port")
    );
    assert_eq!(
        parse_endpoint("tcp://127.0.0.1"),
        tcp_err("host component must include a port")
    );
    let scheme = Err("workload endpoint socket URI must have a \"tcp\" or \"unix\" scheme".into());
    assert_eq!(parse_endpoint("/run/spire/agent.sock"), scheme);
    assert_eq!(parse_endpoint("http://127.0.0.1:5"), scheme);
    assert_eq!(
        parse_endpoint("://x"),
        Err(
            "workload endpoint socket is not a valid URI: parse \"://x\": missing protocol scheme"
                .into()
        )
    );
    assert_eq!(
        parse_endpoint("tcp://1.2.3.4:ab"),
        Err("workload endpoint socket is not a valid URI: parse \"tcp://1.2.3.4:ab\": invalid port \":ab\" after host".into())
    );
}

#[test]
fn backoff_is_linear_and_capped() {
    let secs: Vec<u64> = [1, 2, 3, 29, 30, 31, 1000]
        .iter()
        .map(|&n| backoff(n).as_secs())
        .collect();
    assert_eq!(secs, [1, 2, 3, 29, 30, 30, 30]);
}

/// Threads of this process named `workload-api` (nextest runs each test in its own process).
/// The Workload API threads of this process, or `None` when other tests share the process
/// (plain `cargo test` runs them on threads side by side, whose sources start threads of the
/// same name); nextest runs each test in a process of its own.
fn client_threads() -> Option<usize> {
    let alone = std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test");
    alone.then(count_client_threads)
}

fn count_client_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "workload-api")
        .count()
}

#[test]
fn fetch_first_runs_on_the_calling_thread_then_start_takes_over() {
    let dir = Dir::new();
    let td = TrustDomain::new("example.org");
    let sock = dir.sock();
    // The agent appears only after the first attempts failed: the wait retries.
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut agent = Agent::start(&sock);
        agent.push(&td.response(td.svid("/early"), &[]));
        agent
    });
    let source = Source::new(Endpoint::Unix(dir.sock()), provider()).unwrap();
    let ctx = source.fetch_first(WAIT).unwrap();
    assert_eq!(ctx.spiffe_id.as_str(), "spiffe://example.org/early");
    assert!(
        client_threads().is_none_or(|n| n == 0),
        "no thread before start()"
    );
    let agent = late.join().unwrap();
    source.start().unwrap();
    assert!(eventually(Duration::from_secs(5), || client_threads()
        .is_none_or(|n| n == 1)));
    // The background thread opens its own stream; the state it repeats is not a new update.
    assert!(agent.wait_calls(2, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(source.health().updates, 1);
}

#[test]
fn fetch_first_errors() {
    let dir = Dir::new();
    let silent = Agent::start(&dir.sock());
    let source = Source::new(Endpoint::Unix(dir.sock()), provider()).unwrap();
    let err = source
        .fetch_first(Some(Duration::from_millis(300)))
        .unwrap_err();
    assert!(err.ends_with("): context deadline exceeded"), "{err}");
    silent.set_mode(Mode::Deny(3, "security header missing from request".into()));
    let source = Source::new(Endpoint::Unix(dir.sock()), provider()).unwrap();
    let err = source.fetch_first(None).unwrap_err();
    assert!(
        err.ends_with(
            "): rpc error: code = InvalidArgument desc = security header missing from request"
        ),
        "{err}"
    );
    assert!(client_threads().is_none_or(|n| n == 0));
}

#[test]
fn first_update_brings_identity_bundles_and_federation() {
    let dir = Dir::new();
    let td = TrustDomain::new("example.org");
    let other = TrustDomain::new("other.org");
    let mut agent = Agent::start(&dir.sock());
    agent.push(&td.response(td.svid("/server"), &[&other]));
    let source = start(&dir.sock());
    let ctx = source.wait_first(WAIT).unwrap();
    assert_eq!(ctx.spiffe_id.as_str(), "spiffe://example.org/server");
    assert_eq!(
        ctx.bundles.domains().collect::<Vec<_>>(),
        ["example.org", "other.org"]
    );
    assert_eq!(ctx.identity.cert.len(), 1);
    assert_eq!(agent.headerless_calls(), 0, "the security header is sent");
    let health = source.health();
    assert!(health.connected && health.updates == 1 && health.last_error.is_none());
}

#[test]
fn the_first_svid_is_served_and_repeated_hints_are_skipped() {
    let dir = Dir::new();
    let td = TrustDomain::new("example.org");
    let mut agent = Agent::start(&dir.sock());
    let mut a = td.svid("/a");
    a.hint = "internal".into();
    let mut b = td.svid("/b");
    b.hint = "internal".into();
    // The repeated hint is skipped before its (broken) contents are looked at.
    b.key = vec![1, 2, 3];
    agent.push(&Response {
        svids: vec![a, b, td.svid("/c")],
        federated: vec![],
    });
    let source = start(&dir.sock());
    source.wait_first(WAIT).unwrap();
    assert_eq!(leaf_id(&source), "spiffe://example.org/a");
}

#[test]
fn rotation_replaces_identity_and_runs_the_hooks() {
    let dir = Dir::new();
    let td = TrustDomain::new("example.org");
    let mut agent = Agent::start(&dir.sock());
    agent.push(&td.response(td.svid("/v1"), &[]));
    let source = start(&dir.sock());
    let hooks = Arc::new(AtomicUsize::new(0));
    let h = hooks.clone();
    source.on_update(Box::new(move || {
        h.fetch_add(1, Ordering::SeqCst);
    }));
    source.wait_first(WAIT).unwrap();
    assert!(eventually(Duration::from_secs(2), || hooks
        .load(Ordering::SeqCst)
        == 1));
    agent.push(&td.response(td.svid("/v2"), &[]));
    assert!(eventually(Duration::from_secs(10), || leaf_id(&source)
        == "spiffe://example.org/v2"));
    assert!(eventually(Duration::from_secs(2), || hooks
        .load(Ordering::SeqCst)
        == 2));
    assert_eq!(agent.calls(), 1, "one stream carries every update");
}

#[test]
fn garbage_and_invalid_svids_are_refused_and_the_last_good_identity_stays() {
    let dir = Dir::new();
    let td = TrustDomain::new("example.org");
    let mut agent = Agent::start(&dir.sock());
    agent.push(&td.response(td.svid("/good"), &[]));
    let source = start(&dir.sock());
    source.wait_first(WAIT).unwrap();

    agent.push_raw(vec![0x0a, 0x50, 0x01]);
    assert!(eventually(Duration::from_secs(10), || source
        .health()
        .rejected
        == 1));
    // No digitalSignature: not an SVID a workload may serve.
    let bad = td.svid_with("/bad", |p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyEncipherment];
    });
    agent.push(&td.response(bad, &[]));
    assert!(eventually(Duration::from_secs(10), || source
        .health()
        .rejected
        == 2));
    let (error, _) = source.health().last_error.unwrap();
    assert_eq!(
        error,
        "update refused: x509svid: certificate validation failed: leaf certificate must have 'digitalSignature' set as key usage"
    );
    // Key of another SVID.
    let mut mismatched = td.svid("/mismatch");
    mismatched.key = td.svid("/other").key;
    agent.push(&td.response(mismatched, &[]));
    assert!(eventually(Duration::from_secs(10), || source
        .health()
        .rejected
        == 3));
    assert!(source.health().last_error.unwrap().0.ends_with(
        "x509svid: private key validation failed: leaf certificate does not match private key"
    ));
    agent.push(&Response::default());
    assert!(eventually(Duration::from_secs(10), || source
        .health()
        .rejected
        == 4));
    assert!(
        source
            .health()
            .last_error
            .unwrap()
            .0
            .ends_with("no SVIDs in response")
    );

    assert_eq!(leaf_id(&source), "spiffe://example.org/good");
    assert_eq!(source.health().updates, 1);
    assert!(
        source.health().connected,
        "a refused update does not end the stream"
    );
    agent.push(&td.response(td.svid("/after"), &[]));
    assert!(eventually(Duration::from_secs(10), || leaf_id(&source)
        == "spiffe://example.org/after"));
}

#[test]
fn initial_wait_times_out_when_the_agent_is_silent_or_absent() {
    let dir = Dir::new();
    let _agent = Agent::start(&dir.sock());
    let source = start(&dir.sock());
    let started = Instant::now();
    let err = source
        .wait_first(Some(Duration::from_millis(300)))
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        err,
        "timed out or failed waiting for initial SPIFFE Workload API update (is the agent reachable and is there a registration entry?): context deadline exceeded"
    );

    let absent = start(&dir.0.join("nobody.sock"));
    let err = absent
        .wait_first(Some(Duration::from_millis(300)))
        .unwrap_err();
    assert!(err.ends_with("context deadline exceeded"), "{err}");
    assert!(eventually(Duration::from_secs(5), || absent
        .health()
        .last_error
        .is_some()));
    let (last, _) = absent.health().last_error.unwrap();
    assert!(
        last.starts_with("rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial unix ")
            && last.ends_with(": connect: no such file or directory\""),
        "{last}"
    );
}

#[test]
fn permission_denied_is_retried_until_the_entry_exists() {
    let dir = Dir::new();
    let td = TrustDomain::new("example.org");
    let mut agent = Agent::start(&dir.sock());
    agent.set_mode(Mode::Deny(7, "no identity issued".into()));
    let source = start(&dir.sock());
    assert!(source.wait_first(Some(Duration::from_millis(200))).is_err());
    assert!(eventually(Duration::from_secs(5), || source
        .health()
        .last_error
        .is_some()));
    assert_eq!(
        source.health().last_error.unwrap().0,
        "rpc error: code = PermissionDenied desc = no identity issued"
    );
    assert!(source.health().retry_at.is_some());
    agent.set_mode(Mode::Serve);
    agent.push(&td.response(td.svid("/late"), &[]));
    // The first retry comes after 1 s.
    source.wait_first(WAIT).unwrap();
    assert!(agent.calls() >= 2);
}

#[test]
fn invalid_argument_fails_the_wait_at_once_and_stops_watching() {
    let dir = Dir::new();
    let agent = Agent::start(&dir.sock());
    agent.set_mode(Mode::Deny(3, "security header missing from request".into()));
    let source = start(&dir.sock());
    let started = Instant::now();
    let err = source.wait_first(None).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        err,
        "timed out or failed waiting for initial SPIFFE Workload API update (is the agent reachable and is there a registration entry?): rpc error: code = InvalidArgument desc = security header missing from request"
    );
    assert!(source.health().stopped);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(agent.calls(), 1, "no retry after InvalidArgument");
}

#[test]
fn agent_restart_keeps_the_identity_then_resumes_updates() {
    let dir = Dir::new();
    let td = TrustDomain::new("example.org");
    let mut agent = Agent::start(&dir.sock());
    agent.push(&td.response(td.svid("/before"), &[]));
    let source = start(&dir.sock());
    source.wait_first(WAIT).unwrap();

    // Going away (stream ended with Unavailable), then dead.
    agent.end_streams(14, "agent going away");
    assert!(eventually(Duration::from_secs(5), || source
        .health()
        .last_error
        .is_some_and(
            |e| e.0 == "rpc error: code = Unavailable desc = agent going away"
        )));
    let last = agent.kill();
    assert!(eventually(Duration::from_secs(5), || !source
        .health()
        .connected));
    assert_eq!(leaf_id(&source), "spiffe://example.org/before");

    // Back, with a rotated SVID (retries come at 1 s, 2 s, 3 s...).
    std::thread::sleep(Duration::from_millis(1500));
    let mut agent = Agent::restart(&dir.sock(), last);
    agent.push(&td.response(td.svid("/after"), &[]));
    assert!(eventually(Duration::from_secs(15), || leaf_id(&source)
        == "spiffe://example.org/after"));
    assert!(source.health().connected);
}

// ---- rustls glue over real handshakes ----

struct Peer {
    source: Source,
    _dir: Dir,
}

/// An agent serving `svid` of `td` (plus federated bundles), and a source reading it.
fn peer(td: &TrustDomain, path: &str, federated: &[&TrustDomain]) -> (Peer, Agent) {
    let dir = Dir::new();
    let mut agent = Agent::start(&dir.sock());
    agent.push(&td.response(td.svid(path), federated));
    let source = start(&dir.sock());
    source.wait_first(WAIT).unwrap();
    // The agent is handed back for rotations; the Peer keeps the directory alive.
    (Peer { source, _dir: dir }, agent)
}

fn server_config(peer: &Peer, authorize: Option<Arc<dyn verify::Authorize>>) -> Arc<ServerConfig> {
    let verifier = SvidClientVerifier::new(peer.source.clone(), provider(), true, authorize);
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(SvidResolver::new(peer.source.clone()))),
    )
}

fn client_config(peer: &Peer, authorize: Option<Arc<dyn verify::Authorize>>) -> Arc<ClientConfig> {
    let verifier = SvidServerVerifier::new(peer.source.clone(), provider(), authorize);
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(SvidResolver::new(peer.source.clone()))),
    )
}

/// Runs a handshake in memory (the host name is not an SVID name: it must not matter) and
/// returns the server's view of the client chain, or the first side's error.
fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
) -> Result<Vec<CertificateDer<'static>>, rustls::Error> {
    let name = ServerName::try_from("not-a-name-in-the-svid.invalid").unwrap();
    let mut c = ClientConnection::new(client.clone(), name)?;
    let mut s = ServerConnection::new(server.clone())?;
    for _ in 0..20 {
        let mut to_server = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut to_server).unwrap();
        }
        if !to_server.is_empty() {
            s.read_tls(&mut &to_server[..]).unwrap();
            s.process_new_packets()?;
        }
        let mut to_client = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut to_client).unwrap();
        }
        if !to_client.is_empty() {
            c.read_tls(&mut &to_client[..]).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking()
            && !s.is_handshaking()
            && to_server.is_empty()
            && to_client.is_empty()
        {
            return Ok(s.peer_certificates().unwrap_or_default().to_vec());
        }
    }
    panic!("handshake did not finish");
}

fn uri_acl(pattern: &str) -> Arc<dyn verify::Authorize> {
    let pattern = crate::auth::UriPattern::compile(pattern).unwrap();
    Arc::new(move |leaf: &CertificateDer<'_>| {
        let cert = <x509_cert::Certificate as der::Decode>::from_der(leaf).unwrap();
        let ok = crate::auth::subject_alt_names(&cert).iter().any(|n| {
            matches!(n, x509_cert::ext::pkix::name::GeneralName::UniformResourceIdentifier(u)
                if pattern.matches(u.as_str()))
        });
        if ok {
            Ok(())
        } else {
            Err(rustls::Error::General("unauthorized".into()))
        }
    })
}

#[test]
fn mutual_tls_between_two_svids_with_uri_wildcards() {
    let td = TrustDomain::new("example.org");
    let (server, _sa) = peer(&td, "/ns/prod/server", &[]);
    let (client, _ca) = peer(&td, "/ns/prod/client", &[]);
    let chain = handshake(
        &client_config(&client, Some(uri_acl("spiffe://example.org/ns/*/server"))),
        &server_config(&server, Some(uri_acl("spiffe://example.org/ns/**"))),
    )
    .unwrap();
    assert_eq!(chain.len(), 1);

    let refused = handshake(
        &client_config(&client, None),
        &server_config(&server, Some(uri_acl("spiffe://example.org/ns/*/other"))),
    )
    .unwrap_err();
    assert_eq!(refused, rustls::Error::General("unauthorized".into()));
}

#[test]
fn peers_of_unknown_or_unfederated_trust_domains_are_refused() {
    let td = TrustDomain::new("example.org");
    let other = TrustDomain::new("other.org");
    let (server, _sa) = peer(&td, "/server", &[]);
    let (client, _ca) = peer(&other, "/client", &[&td]);
    // The client trusts example.org (federated); the server does not trust other.org.
    let err = handshake(&client_config(&client, None), &server_config(&server, None)).unwrap_err();
    assert_eq!(
        rejection_text(&err),
        Some(
            "x509svid: could not get X509 bundle: x509bundle: no X.509 bundle for trust domain \"other.org\""
        )
    );
    // Once the server federates with other.org, the same client gets in.
    let (server, _sa) = peer(&td, "/server", &[&other]);
    handshake(&client_config(&client, None), &server_config(&server, None)).unwrap();

    // A trust domain impostor: right name, other CA.
    let impostor = TrustDomain::new("example.org");
    let (evil, _ea) = peer(&impostor, "/client", &[]);
    let err = handshake(&client_config(&evil, None), &server_config(&server, None)).unwrap_err();
    assert!(
        matches!(&err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

#[test]
fn rotated_bundle_applies_to_the_next_handshake() {
    let td = TrustDomain::new("example.org");
    let (server, mut server_agent) = peer(&td, "/server", &[]);
    let (client, _ca) = peer(&td, "/client", &[]);
    let (s, c) = (server_config(&server, None), client_config(&client, None));
    let mut fresh = (*c).clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    let fresh = Arc::new(fresh);
    handshake(&c, &s).unwrap();
    // The server's trust domain moves to a new CA; the client still holds the old one.
    let next = TrustDomain::new("example.org");
    server_agent.push(&next.response(next.svid("/server"), &[]));
    assert!(eventually(Duration::from_secs(10), || server
        .source
        .health()
        .updates
        == 2));
    // Same configurations: the server now serves the new SVID, which the client cannot
    // verify (and it no longer trusts the old client).
    let err = handshake(&fresh, &s).unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
    // A resumption skips certificate verification inside rustls; re-running the verifier on
    // the resumed session's client chain (as the proxy does) refuses it against the new
    // bundle.
    let chain = handshake(&c, &s).expect("resumed");
    let verifier = SvidClientVerifier::new(server.source.clone(), provider(), true, None);
    let err = rustls::server::danger::ClientCertVerifier::verify_client_cert(
        &verifier,
        &chain[0],
        &chain[1..],
        rustls::pki_types::UnixTime::now(),
    )
    .unwrap_err();
    assert_eq!(
        rejection_text(&err),
        Some(
            "x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority"
        )
    );
}

#[test]
fn peer_verification_texts() {
    let td = TrustDomain::new("example.org");
    let ctx = {
        let svid = td.svid("/x");
        let msg = proto::X509SvidResponse {
            svids: vec![proto::X509Svid {
                spiffe_id: svid.spiffe_id,
                x509_svid: svid.chain,
                x509_svid_key: svid.key,
                bundle: svid.bundle,
                hint: String::new(),
            }],
            federated_bundles: vec![],
        };
        svid::parse_response(&msg, &provider()).unwrap()
    };
    let verify = |leaf: &[u8]| {
        svid::verify_peer(
            &ctx.bundles,
            &CertificateDer::from(leaf.to_vec()),
            &[],
            rustls::pki_types::UnixTime::now(),
            &provider(),
        )
    };
    assert_eq!(
        verify(&td.svid("/peer").chain).unwrap().as_str(),
        "spiffe://example.org/peer"
    );
    let no_uri = td.svid_with("/n", |p| p.subject_alt_names.clear());
    assert_eq!(
        verify(&no_uri.chain).unwrap_err(),
        "x509svid: could not get leaf SPIFFE ID: certificate contains no URI SAN"
    );
    let two = td.svid_with("/t", |p| {
        p.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/u".try_into().unwrap(),
        ))
    });
    assert_eq!(
        verify(&two.chain).unwrap_err(),
        "x509svid: could not get leaf SPIFFE ID: certificate contains more than one URI SAN"
    );
    let ca = td.svid_with("/ca", |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    });
    assert_eq!(
        verify(&ca.chain).unwrap_err(),
        "x509svid: leaf certificate with CA flag set to true"
    );
    let signer = td.svid_with("/s", |p| {
        p.key_usages.push(rcgen::KeyUsagePurpose::KeyCertSign)
    });
    assert_eq!(
        verify(&signer.chain).unwrap_err(),
        "x509svid: leaf certificate with KeyCertSign key usage"
    );
    let expired = td.svid_with("/e", |p| {
        p.not_before = rcgen::date_time_ymd(2001, 1, 1);
        p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    });
    assert_eq!(
        verify(&expired.chain).unwrap_err(),
        "x509svid: could not verify leaf certificate: x509: certificate has expired or is not yet valid"
    );
    let stranger = TrustDomain::new("example.org").svid("/s");
    assert_eq!(
        verify(&stranger.chain).unwrap_err(),
        "x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority"
    );
    // Any extended key usage is accepted.
    let code_signing = td.svid_with("/c", |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning]
    });
    verify(&code_signing.chain).unwrap();
}

#[test]
fn agent_dying_mid_stream_reads_as_unavailable() {
    let dir = Dir::new();
    let td = TrustDomain::new("example.org");
    let mut agent = Agent::start(&dir.sock());
    agent.push(&td.response(td.svid("/x"), &[]));
    let source = start(&dir.sock());
    source.wait_first(WAIT).unwrap();
    drop(agent.kill());
    assert!(eventually(Duration::from_secs(5), || source
        .health()
        .last_error
        .is_some()));
    let (error, _) = source.health().last_error.unwrap();
    // A close or a reset, depending on what the agent had not read yet.
    assert!(
        [
            "rpc error: code = Unavailable desc = error reading from server: EOF",
            "rpc error: code = Unavailable desc = error reading from server: read: connection reset by peer",
        ]
        .contains(&error.as_str()),
        "{error}"
    );
    assert_eq!(leaf_id(&source), "spiffe://example.org/x");
}
