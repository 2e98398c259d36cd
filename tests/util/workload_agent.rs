//! A stand-in SPIFFE Workload API agent for tests: a real gRPC server (HTTP/2 cleartext on a
//! UNIX socket, h2 + tokio on a thread of its own) serving `SpiffeWorkloadAPI/FetchX509SVID`
//! with SVIDs and bundles minted at test time by rcgen. Like SPIRE it refuses calls without the
//! `workload.spiffe.io: true` header with `InvalidArgument`. Tests push rotations, end streams,
//! deny calls, fall silent, stop and restart it.
//!
//! Used by the module tests of `src/workload` and by the integration tests; it depends on
//! nothing of ghostunnel (its protobuf encoder is its own, so it cross-checks our decoder).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// What new calls get, and what open streams carry.
#[derive(Clone, Debug)]
pub enum Event {
    /// No update yet: streams are open but silent.
    Nothing,
    /// Send this `X509SVIDResponse` (already encoded) to every open stream and to new ones.
    Response(Bytes),
    /// End every open stream with this gRPC status; new calls are served the last response.
    End(u32, String),
}

/// How new calls are answered.
#[derive(Clone, Debug)]
pub enum Mode {
    Serve,
    /// Refuse every call at once with this status (e.g. 7 = PermissionDenied).
    Deny(u32, String),
}

struct Shared {
    mode: Mutex<Mode>,
    last: Mutex<Option<Bytes>>,
    calls: AtomicUsize,
    headerless: AtomicUsize,
}

pub struct Agent {
    /// The socket file; empty for a TCP agent.
    path: PathBuf,
    /// The TCP address of a TCP agent.
    tcp: Option<std::net::SocketAddr>,
    shared: Arc<Shared>,
    events: tokio::sync::watch::Sender<(u64, Event)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    generation: u64,
}

const METHOD: &str = "/SpiffeWorkloadAPI/FetchX509SVID";

impl Agent {
    /// Listens on `path` (replacing a stale socket file) and serves until dropped.
    pub fn start(path: &Path) -> Agent {
        Agent::start_with(path, None, Mode::Serve)
    }

    /// An agent on `127.0.0.1:<free port>` (`tcp://` addresses).
    pub fn start_tcp() -> Agent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind agent port");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().unwrap();
        let mut agent = Agent::spawn(Listener::Tcp(listener), PathBuf::new(), None, Mode::Serve);
        agent.tcp = Some(addr);
        agent
    }

    fn start_with(path: &Path, last: Option<Bytes>, mode: Mode) -> Agent {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind agent socket");
        listener.set_nonblocking(true).expect("nonblocking");
        Agent::spawn(Listener::Unix(listener), path.to_path_buf(), last, mode)
    }

    fn spawn(listener: Listener, path: PathBuf, last: Option<Bytes>, mode: Mode) -> Agent {
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            last: Mutex::new(last.clone()),
            calls: AtomicUsize::new(0),
            headerless: AtomicUsize::new(0),
        });
        let first = match last {
            Some(b) => Event::Response(b),
            None => Event::Nothing,
        };
        let (events, rx) = tokio::sync::watch::channel((0, first));
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("test-agent".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("agent runtime");
                rt.block_on(serve(listener, s, rx, stop_rx));
            })
            .expect("spawn agent");
        Agent {
            path,
            tcp: None,
            shared,
            events,
            stop: Some(stop),
            thread: Some(thread),
            generation: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The agent's address: `unix:///…` or `tcp://127.0.0.1:…`.
    pub fn addr(&self) -> String {
        match self.tcp {
            Some(addr) => format!("tcp://{addr}"),
            None => format!("unix://{}", self.path.display()),
        }
    }

    /// Publishes an update to every open stream and to later calls.
    pub fn push(&mut self, response: &Response) {
        let bytes = Bytes::from(response.encode());
        *self.shared.last.lock().unwrap() = Some(bytes.clone());
        self.send(Event::Response(bytes));
    }

    /// Publishes raw message bytes (e.g. garbage).
    pub fn push_raw(&mut self, bytes: Vec<u8>) {
        self.send(Event::Response(Bytes::from(bytes)));
    }

    /// Ends every open stream with a gRPC status (14 = Unavailable, as an agent going away).
    pub fn end_streams(&mut self, code: u32, message: &str) {
        // Later calls still start from the last response (read when they arrive).
        self.send(Event::End(code, message.to_string()));
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Calls received so far (each `FetchX509SVID` stream counts once).
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Calls that came without the security header.
    pub fn headerless_calls(&self) -> usize {
        self.shared.headerless.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` calls arrived, at most `limit`.
    pub fn wait_calls(&self, n: usize, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if self.calls() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn send(&mut self, event: Event) {
        self.generation += 1;
        let _ = self.events.send((self.generation, event));
    }

    /// Stops the agent abruptly: the listener and every connection are closed and the socket
    /// file removed, as when the agent process dies. Returns what it would serve on restart.
    pub fn kill(mut self) -> Option<Bytes> {
        self.shutdown();
        self.shared.last.lock().unwrap().clone()
    }

    /// Starts a new agent on the same path, serving `last` to new calls.
    pub fn restart(path: &Path, last: Option<Bytes>) -> Agent {
        Agent::start_with(path, last, Mode::Serve)
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.tcp.is_none() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Listener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

async fn serve(
    listener: Listener,
    shared: Arc<Shared>,
    events: tokio::sync::watch::Receiver<(u64, Event)>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    enum Tokio {
        Unix(tokio::net::UnixListener),
        Tcp(tokio::net::TcpListener),
    }
    let listener = match listener {
        Listener::Unix(l) => Tokio::Unix(tokio::net::UnixListener::from_std(l).unwrap()),
        Listener::Tcp(l) => Tokio::Tcp(tokio::net::TcpListener::from_std(l).unwrap()),
    };
    // Every connection task is aborted when the agent stops, closing its socket.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = async {
                match &listener {
                    Tokio::Unix(l) => l.accept().await.map(|(s, _)| {
                        tasks.spawn(connection(s, shared.clone(), events.clone()));
                    }),
                    Tokio::Tcp(l) => l.accept().await.map(|(s, _)| {
                        tasks.spawn(connection(s, shared.clone(), events.clone()));
                    }),
                }
            } => {
                let _ = accepted;
            }
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    socket: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    shared: Arc<Shared>,
    events: tokio::sync::watch::Receiver<(u64, Event)>,
) {
    let Ok(mut conn) = h2::server::handshake(socket).await else {
        return;
    };
    let mut streams = tokio::task::JoinSet::new();
    while let Some(Ok((request, respond))) = conn.accept().await {
        streams.spawn(call(request, respond, shared.clone(), events.clone()));
    }
}

fn status_headers(code: u32, message: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("grpc-status", code.to_string().parse().unwrap());
    let encoded: String = message
        .bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    h.insert("grpc-message", encoded.parse().unwrap());
    h
}

async fn call(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    shared: Arc<Shared>,
    mut events: tokio::sync::watch::Receiver<(u64, Event)>,
) {
    // Trailers-only answer: a status in the response headers, no body.
    let refuse = |respond: &mut h2::server::SendResponse<Bytes>, code: u32, message: &str| {
        let mut response = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        response.headers_mut().extend(status_headers(code, message));
        let _ = respond.send_response(response, true);
    };
    if request.uri().path() != METHOD {
        refuse(&mut respond, 12, "unknown method");
        return;
    }
    shared.calls.fetch_add(1, Ordering::SeqCst);
    if request
        .headers()
        .get("workload.spiffe.io")
        .map(|v| v.as_bytes())
        != Some(b"true")
    {
        shared.headerless.fetch_add(1, Ordering::SeqCst);
        refuse(&mut respond, 3, "security header missing from request");
        return;
    }
    let mode = shared.mode.lock().unwrap().clone();
    if let Mode::Deny(code, message) = mode {
        refuse(&mut respond, code, &message);
        return;
    }
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let Ok(mut send) = respond.send_response(response, false) else {
        return;
    };
    // New calls start from the latest response, not from an `End` aimed at older streams.
    let mut pending = shared.last.lock().unwrap().clone();
    events.borrow_and_update();
    loop {
        if let Some(bytes) = pending.take() {
            let mut frame = Vec::with_capacity(5 + bytes.len());
            frame.push(0);
            frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            frame.extend_from_slice(&bytes);
            if send.send_data(Bytes::from(frame), false).is_err() {
                return;
            }
        }
        if events.changed().await.is_err() {
            return;
        }
        let (_, event) = events.borrow_and_update().clone();
        match event {
            Event::Nothing => {}
            Event::Response(bytes) => pending = Some(bytes),
            Event::End(code, message) => {
                let _ = send.send_trailers(status_headers(code, &message));
                // Let the trailers reach the client before the task (and stream) ends.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        }
    }
}

/// An `X509SVIDResponse`, encoded here independently of the code under test.
#[derive(Clone, Default)]
pub struct Response {
    pub svids: Vec<Svid>,
    pub federated: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Default)]
pub struct Svid {
    pub spiffe_id: String,
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
    pub bundle: Vec<u8>,
    pub hint: String,
}

fn put_len(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    let mut n = bytes.len();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(bytes);
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.svids {
            let mut m = Vec::new();
            for (f, b) in [
                (1, s.spiffe_id.as_bytes()),
                (2, &s.chain[..]),
                (3, &s.key[..]),
                (4, &s.bundle[..]),
                (5, s.hint.as_bytes()),
            ] {
                if !b.is_empty() {
                    put_len(&mut m, f, b);
                }
            }
            put_len(&mut out, 1, &m);
        }
        for (k, v) in &self.federated {
            let mut e = Vec::new();
            put_len(&mut e, 1, k.as_bytes());
            put_len(&mut e, 2, v);
            put_len(&mut out, 3, &e);
        }
        out
    }
}

/// A trust domain with its own CA, minting SVIDs.
pub struct TrustDomain {
    pub name: String,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl TrustDomain {
    pub fn new(name: &str) -> TrustDomain {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names =
            vec![SanType::URI(format!("spiffe://{name}").try_into().unwrap())];
        let key = KeyPair::generate().unwrap();
        let ca = CertifiedIssuer::self_signed(params, key).unwrap();
        TrustDomain {
            name: name.to_string(),
            ca,
        }
    }

    /// The bundle: the CA certificate in DER.
    pub fn bundle(&self) -> Vec<u8> {
        self.ca.der().to_vec()
    }

    /// An SVID for `spiffe://<name><path>`, ECDSA P-256, both TLS usages.
    pub fn svid(&self, path: &str) -> Svid {
        self.svid_with(path, |_| {})
    }

    /// As [`svid`](Self::svid), with the leaf parameters adjusted by `tweak`.
    pub fn svid_with(&self, path: &str, tweak: impl FnOnce(&mut CertificateParams)) -> Svid {
        let id = format!("spiffe://{}{path}", self.name);
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, path.trim_start_matches('/'));
        params.subject_alt_names = vec![SanType::URI(id.clone().try_into().unwrap())];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Svid {
            spiffe_id: id,
            chain: cert.der().to_vec(),
            key: key.serialize_der(),
            bundle: self.bundle(),
            hint: String::new(),
        }
    }

    /// A response carrying one SVID of this domain and the given federated bundles.
    pub fn response(&self, svid: Svid, federated: &[&TrustDomain]) -> Response {
        Response {
            svids: vec![svid],
            federated: federated
                .iter()
                .map(|td| (format!("spiffe://{}", td.name), td.bundle()))
                .collect(),
        }
    }
}
