//! The TLS-ALPN-01 challenge (RFC 8737): the self-signed certificate that proves control of a
//! name, the set of challenges currently being validated, the TLS configuration that answers
//! `acme-tls/1` handshakes with them, and the temporary listener that serves them while the
//! proxy's own listener is not open yet (first issuance at startup).
//!
//! A handshake is a challenge handshake only if its ClientHello names a server (SNI) and offers
//! exactly one ALPN protocol, `acme-tls/1`: those get no client-certificate request, no session
//! ticket, and are never proxied. Everything else is left to the proxy's normal TLS context.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};

/// The ALPN protocol of the challenge.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Whether a ClientHello is an ACME validator's: a server name, and `acme-tls/1` as its only
/// ALPN protocol.
pub fn is_challenge_hello<'a>(
    server_name: Option<&str>,
    mut alpn: Option<impl Iterator<Item = &'a [u8]>>,
) -> bool {
    let Some(alpn) = alpn.as_mut() else {
        return false;
    };
    server_name.is_some_and(|n| !n.is_empty())
        && alpn.next() == Some(ACME_TLS_ALPN)
        && alpn.next().is_none()
}

/// Builds the challenge certificate for `name`: self-signed, P-256, the name as its only SAN,
/// and the critical acmeIdentifier extension holding the SHA-256 of the key authorization.
pub fn certificate(
    name: &str,
    key_auth_digest: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, String> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(CustomExtension::new_acme_identifier(key_auth_digest));
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signer,
    ))
}

/// The challenges being validated, by lower-case name. Shared between the issuing thread and
/// every listener that may receive the validator's handshake.
#[derive(Debug, Default)]
pub struct Challenges {
    certs: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    config: Mutex<Option<Arc<ServerConfig>>>,
}

impl Challenges {
    pub fn new() -> Arc<Challenges> {
        Arc::new(Challenges::default())
    }

    /// Serves `cert` to validators asking for `name` until [`Challenges::remove`].
    pub fn insert(&self, name: &str, cert: CertifiedKey) {
        let mut certs = self.certs.lock().unwrap_or_else(|p| p.into_inner());
        certs.insert(name.to_ascii_lowercase(), Arc::new(cert));
    }

    pub fn remove(&self, name: &str) {
        let mut certs = self.certs.lock().unwrap_or_else(|p| p.into_inner());
        certs.remove(&name.to_ascii_lowercase());
    }

    /// The challenge certificate for `name`, if one is being validated.
    pub fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.lock().unwrap_or_else(|p| p.into_inner());
        certs.get(&name.to_ascii_lowercase()).cloned()
    }

    /// The TLS configuration for challenge handshakes (see [`is_challenge_hello`]): no client
    /// certificate, ALPN `acme-tls/1`, no resumption, the certificate chosen by SNI. A name with
    /// no active challenge fails the handshake.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let mut slot = self.config.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = slot.as_ref() {
            return config.clone();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let config = Arc::new(config);
        *slot = Some(config.clone());
        config
    }
}

/// Picks the challenge certificate by SNI; `None` (a failed handshake) for a name with no
/// challenge under way.
#[derive(Debug)]
pub struct Resolver(pub Arc<Challenges>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        let cert = self.0.lookup(name);
        if cert.is_none() {
            log::error!("no information found to solve challenge for identifier: {name}");
        }
        cert
    }
}

/// Completes one challenge handshake on `stream` with `config` and closes it; the validator
/// needs nothing but the handshake. Bounded by `timeout` per read and write.
pub fn serve_handshake(
    mut stream: TcpStream,
    config: Arc<ServerConfig>,
    timeout: Duration,
) -> io::Result<()> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream)?;
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut stream);
    let _ = stream.read(&mut [0u8; 1]);
    Ok(())
}

/// A listener of our own answering validators while the proxy's listener is not open yet.
/// Stops (and frees the port) on drop.
#[derive(Debug)]
pub struct TempListener {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl TempListener {
    /// Binds `addr` and answers challenge handshakes there. If the port is taken and answers a
    /// connection, another listener (the proxy's own, during a renewal) is assumed to answer the
    /// validator: `Ok(None)`, after a warning on stderr as the reference prints it. Any other
    /// failure: `could not start listener for challenge server at <addr>: <e>`.
    pub fn start(addr: &str, challenges: &Arc<Challenges>) -> Result<Option<TempListener>, String> {
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && TcpStream::connect(addr).is_ok() => {
                eprintln!(
                    "{} [WARNING] listen tcp {addr}: bind: address already in use - assuming \
                     conflicting listener is correctly configured and continuing",
                    crate::acme::go_log_time()
                );
                return Ok(None);
            }
            Err(e) => {
                return Err(format!(
                    "could not start listener for challenge server at {addr}: listen tcp {addr}: \
                     bind: {}",
                    crate::net::strip_os_error(&e)
                ));
            }
        };
        let local = listener
            .local_addr()
            .map_err(|e| format!("could not start listener for challenge server at {addr}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("could not start listener for challenge server at {addr}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let config = challenges.server_config();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("acme-challenge".into())
                .spawn(move || accept_loop(&listener, &config, &stop))
                .map_err(|e| e.to_string())?
        };
        Ok(Some(TempListener {
            stop,
            addr: local,
            thread: Some(thread),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Accepts until stopped; each validator connection gets a thread, all joined before return
/// (so none outlives the listener, e.g. into the sandboxed part of startup).
fn accept_loop(listener: &TcpListener, config: &Arc<ServerConfig>, stop: &AtomicBool) {
    let mut served: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        served.retain(|t| !t.is_finished());
        match listener.accept() {
            Ok((stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let config = config.clone();
                let spawned = std::thread::Builder::new()
                    .name("acme-challenge-conn".into())
                    .spawn(move || {
                        match serve_handshake(stream, config, Duration::from_secs(10)) {
                            Ok(()) => log::info!(
                                "completed ACME TLS-ALPN-01 challenge from {peer}; not forwarding \
                                 to backend"
                            ),
                            Err(e) => log::debug!("ACME challenge handshake from {peer}: {e}"),
                        }
                    });
                served.extend(spawned);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    for t in served {
        let _ = t.join();
    }
}

impl Drop for TempListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
    use x509_cert::der::Decode;

    use super::*;

    #[test]
    fn only_sni_plus_exactly_acme_tls_is_a_challenge() {
        let one: &[&[u8]] = &[b"acme-tls/1"];
        let two: &[&[u8]] = &[b"acme-tls/1", b"h2"];
        assert!(is_challenge_hello(
            Some("a.example"),
            Some(one.iter().copied())
        ));
        assert!(!is_challenge_hello(
            Some("a.example"),
            Some(two.iter().copied())
        ));
        assert!(!is_challenge_hello(None, Some(one.iter().copied())));
        assert!(!is_challenge_hello(Some(""), Some(one.iter().copied())));
        assert!(!is_challenge_hello(
            Some("a.example"),
            None::<std::slice::Iter<'_, &[u8]>>.map(|i| i.copied())
        ));
    }

    #[test]
    fn the_certificate_carries_the_critical_acme_identifier() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let digest = [7u8; 32];
        let ck = certificate("a.example", &digest, &provider).unwrap();
        let cert = x509_cert::Certificate::from_der(&ck.cert[0]).unwrap();
        let exts = cert.tbs_certificate.extensions.unwrap();
        let acme = exts
            .iter()
            .find(|e| e.extn_id.to_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(acme.critical);
        // OCTET STRING (32 bytes) holding the digest.
        let mut want = vec![0x04, 0x20];
        want.extend_from_slice(&digest);
        assert_eq!(acme.extn_value.as_bytes(), want.as_slice());
    }

    /// A validator's view: any server certificate is fine (it checks the extension itself).
    #[derive(Debug)]
    pub(crate) struct AcceptAny;

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    fn validator_handshake(addr: SocketAddr, name: &str) -> Result<Vec<u8>, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth();
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        let mut conn = ClientConnection::new(
            Arc::new(config),
            ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(|e| match e.into_inner() {
                    Some(inner) => match inner.downcast::<rustls::Error>() {
                        Ok(tls) => *tls,
                        Err(other) => rustls::Error::General(other.to_string()),
                    },
                    None => rustls::Error::General("io".into()),
                })?;
        }
        assert_eq!(conn.alpn_protocol(), Some(ACME_TLS_ALPN));
        Ok(conn.peer_certificates().unwrap()[0].to_vec())
    }

    #[test]
    fn the_temporary_listener_answers_by_sni_and_frees_its_port() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let challenges = Challenges::new();
        let ck = certificate("a.example", &[1u8; 32], &provider).unwrap();
        let want = ck.cert[0].to_vec();
        challenges.insert("A.example", ck);
        let l = TempListener::start("127.0.0.1:0", &challenges)
            .unwrap()
            .unwrap();
        let addr = l.local_addr();
        assert_eq!(validator_handshake(addr, "a.example").unwrap(), want);
        assert!(validator_handshake(addr, "b.example").is_err());
        // Port in use by a live listener: assume it answers.
        assert!(
            TempListener::start(&addr.to_string(), &challenges)
                .unwrap()
                .is_none()
        );
        drop(l);
        TcpListener::bind(addr).expect("port freed");
    }
}
