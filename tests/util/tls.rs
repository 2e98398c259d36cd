//! rustls peers: an mTLS client for testing server mode and a TLS echo server for testing
//! client mode.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
    SupportedProtocolVersion,
};

use super::backend::IO_TIMEOUT;
use super::pki::Identity;

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(ca_der: &[u8]) -> RootCertStore {
    let mut r = RootCertStore::empty();
    r.add(CertificateDer::from(ca_der.to_vec()))
        .expect("add root");
    r
}

fn chain_and_key(id: &Identity) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        vec![CertificateDer::from(id.cert_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
    )
}

/// A client config trusting `ca_der`, presenting `id` if given, for the given versions.
pub fn client_config_versions(
    ca_der: &[u8],
    id: Option<&Identity>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots(ca_der));
    let cfg = match id {
        Some(id) => {
            let (chain, key) = chain_and_key(id);
            b.with_client_auth_cert(chain, key).expect("client cert")
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// A server config presenting `id`, asking for no client certificate.
pub fn server_config(id: &Identity) -> Arc<ServerConfig> {
    let (chain, key) = chain_and_key(id);
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server cert");
    Arc::new(cfg)
}

/// A client config (TLS 1.2 and 1.3) trusting `ca_der`, presenting `id` if given.
pub fn client_config(ca_der: &[u8], id: Option<&Identity>) -> Arc<ClientConfig> {
    client_config_versions(ca_der, id, rustls::DEFAULT_VERSIONS)
}

/// Connects and completes the handshake (from the client's point of view).
pub fn tls_connect(addr: SocketAddr, cfg: Arc<ClientConfig>, name: &str) -> io::Result<TlsStream> {
    let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    let server_name = ServerName::try_from(name.to_string()).expect("server name");
    let conn = ClientConnection::new(cfg, server_name).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// Connects, sends `msg` and reads the same number of bytes back.
///
/// Errors describe where it failed; an early EOF is an error.
pub fn try_echo(addr: SocketAddr, cfg: Arc<ClientConfig>, msg: &[u8]) -> Result<TlsStream, String> {
    let mut s = tls_connect(addr, cfg, "localhost").map_err(|e| format!("handshake: {e}"))?;
    s.write_all(msg).map_err(|e| format!("write: {e}"))?;
    s.flush().map_err(|e| format!("flush: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
    if back != msg {
        return Err(format!("echo mismatch: {back:?}"));
    }
    Ok(s)
}

/// Client-certificate policy of the test TLS server.
pub enum ClientAuth {
    /// Require a client certificate chaining to this CA.
    Required(Vec<u8>),
    /// Request but do not require one.
    Optional(Vec<u8>),
    /// Do not request a client certificate.
    None,
}

/// What the test TLS server observed per successful handshake.
#[derive(Default)]
pub struct ServerLog {
    /// The peer leaf DER (None when the client sent no certificate), per connection.
    pub peers: Mutex<Vec<Option<Vec<u8>>>>,
    /// SNI sent by the client, per connection.
    pub sni: Mutex<Vec<Option<String>>>,
    /// Handshake errors.
    pub errors: Mutex<Vec<String>>,
    /// Full or resumed, per connection.
    pub kinds: Mutex<Vec<rustls::HandshakeKind>>,
}

/// A rustls echo server on 127.0.0.1 (the remote end for client-mode tests).
pub struct TlsServer {
    pub addr: SocketAddr,
    pub log: Arc<ServerLog>,
}

impl TlsServer {
    pub fn start(id: &Identity, auth: ClientAuth) -> TlsServer {
        let b = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let b = match auth {
            ClientAuth::Required(ca) => b.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&ca)), provider())
                    .build()
                    .expect("verifier"),
            ),
            ClientAuth::Optional(ca) => b.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&ca)), provider())
                    .allow_unauthenticated()
                    .build()
                    .expect("verifier"),
            ),
            ClientAuth::None => b.with_no_client_auth(),
        };
        let (chain, key) = chain_and_key(id);
        let cfg = Arc::new(b.with_single_cert(chain, key).expect("server cert"));
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind tls server");
        let addr = l.local_addr().unwrap();
        let log = Arc::new(ServerLog::default());
        let lg = log.clone();
        thread::spawn(move || {
            for sock in l.incoming() {
                let Ok(sock) = sock else { continue };
                let cfg = cfg.clone();
                let lg = lg.clone();
                thread::spawn(move || serve_one(sock, cfg, &lg));
            }
        });
        TlsServer { addr, log }
    }

    /// `127.0.0.1:<port>`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// `localhost:<port>`.
    pub fn target_localhost(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    pub fn peers(&self) -> Vec<Option<Vec<u8>>> {
        self.log.peers.lock().unwrap().clone()
    }

    pub fn sni(&self) -> Vec<Option<String>> {
        self.log.sni.lock().unwrap().clone()
    }

    pub fn handshake_kinds(&self) -> Vec<rustls::HandshakeKind> {
        self.log.kinds.lock().unwrap().clone()
    }
}

fn serve_one(mut sock: TcpStream, cfg: Arc<ServerConfig>, log: &ServerLog) {
    let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
    let Ok(mut conn) = ServerConnection::new(cfg) else {
        return;
    };
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            log.errors.lock().unwrap().push(e.to_string());
            return;
        }
    }
    log.peers.lock().unwrap().push(
        conn.peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec()),
    );
    log.sni
        .lock()
        .unwrap()
        .push(conn.server_name().map(str::to_string));
    if let Some(kind) = conn.handshake_kind() {
        log.kinds.lock().unwrap().push(kind);
    }
    let mut s = StreamOwned::new(conn, sock);
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() || s.flush().is_err() {
                    break;
                }
            }
        }
    }
    s.conn.send_close_notify();
    let _ = s.conn.complete_io(&mut s.sock);
}
