//! Routing an incoming handshake on the proxy's listener: an ACME validator's ClientHello (a
//! server name and exactly the `acme-tls/1` ALPN protocol) gets the challenge configuration
//! (challenge certificate, no client certificate requested); every other one the proxy's own
//! configuration, unchanged. Reads only the ClientHello; the handshake itself is then driven by
//! the caller as for any connection.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use rustls::ServerConnection;
use rustls::server::Acceptor;

use super::challenge::{Challenges, is_challenge_hello};
use crate::net::Stream;
use crate::relay::HandshakeError;

/// How often a wait for the ClientHello checks the deadline and the shutdown flag.
const CHECK: Duration = Duration::from_millis(250);

/// A connection whose ClientHello has been read, and which configuration it got.
pub struct Routed {
    pub conn: ServerConnection,
    /// An ACME validator's handshake: complete it, then close without dialing the backend.
    pub challenge: bool,
}

/// Reads the ClientHello from `sock` (before `deadline`, abandoned when `cancel` is set) and
/// starts the server side with `normal` or with the challenge configuration.
pub fn route(
    sock: &mut Stream,
    normal: &Arc<ServerConfig>,
    challenges: &Arc<Challenges>,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<Routed, HandshakeError> {
    sock.set_nonblocking(false).map_err(HandshakeError::Io)?;
    let mut acceptor = Acceptor::default();
    let accepted = loop {
        let now = Instant::now();
        if now >= deadline || cancel.load(Ordering::Relaxed) {
            return Err(HandshakeError::Timeout);
        }
        sock.set_read_timeout(Some(
            (deadline - now).clamp(Duration::from_millis(1), CHECK),
        ))
        .map_err(HandshakeError::Io)?;
        match acceptor.read_tls(sock) {
            Ok(0) => return Err(HandshakeError::Eof),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(HandshakeError::Io(e)),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => {}
            Err((e, mut alert)) => {
                let _ = alert.write_all(sock);
                return Err(HandshakeError::Tls(e));
            }
        }
    };
    sock.set_read_timeout(None).map_err(HandshakeError::Io)?;
    let hello = accepted.client_hello();
    let challenge = is_challenge_hello(hello.server_name(), hello.alpn());
    let config = match challenge {
        true => challenges.server_config(),
        false => normal.clone(),
    };
    let conn = accepted.into_connection(config).map_err(|(e, mut alert)| {
        let _ = alert.write_all(sock);
        HandshakeError::Tls(e)
    })?;
    Ok(Routed { conn, challenge })
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore};

    use super::*;
    use crate::acme::challenge::tests::AcceptAny;
    use crate::acme::challenge::{self, ACME_TLS_ALPN};
    use crate::certs::test_support::{Cert, Spec, ca_and_leaf};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn roots(der: &[u8]) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(der.to_vec())).unwrap();
        roots
    }

    fn key(c: &Cert) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap()
    }

    /// The proxy's configuration in miniature: its certificate, and a client certificate from
    /// `client_ca` required.
    fn proxy_config(server: &Cert, client_ca: &Cert) -> Arc<ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(&client_ca.der)),
            provider(),
        )
        .build()
        .unwrap();
        Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![CertificateDer::from(server.der.clone())], key(server))
                .unwrap(),
        )
    }

    /// What the server side saw: a challenge or not, and how its handshake ended.
    #[derive(Debug, PartialEq)]
    struct Seen {
        challenge: bool,
        result: Result<(), String>,
    }

    /// Accepts one connection on a fresh port, routes and completes it.
    fn serve_one(
        proxy: Arc<ServerConfig>,
        challenges: Arc<Challenges>,
    ) -> (u16, std::thread::JoinHandle<Seen>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (sock, _) = l.accept().unwrap();
            let mut sock = Stream::Tcp(sock);
            let deadline = Instant::now() + Duration::from_secs(5);
            let never = AtomicBool::new(false);
            let routed = match route(&mut sock, &proxy, &challenges, deadline, &never) {
                Ok(r) => r,
                Err(e) => {
                    return Seen {
                        challenge: false,
                        result: Err(e.to_string()),
                    };
                }
            };
            let mut conn = Connection::Server(routed.conn);
            let r = crate::relay::handshake(&mut sock, &mut conn, deadline, &never)
                .map_err(|e| e.to_string());
            Seen {
                challenge: routed.challenge,
                result: r,
            }
        });
        (port, h)
    }

    fn handshake(
        port: u16,
        mut cfg: ClientConfig,
        alpn: &[&[u8]],
    ) -> Result<ClientConnection, String> {
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from("a.example").unwrap();
        let mut conn = ClientConnection::new(Arc::new(cfg), name).unwrap();
        let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
        }
        // TLS 1.3: a refused client certificate shows up on the first read.
        let _ = conn.complete_io(&mut sock);
        Ok(conn)
    }

    #[test]
    fn validators_get_the_challenge_and_everyone_else_the_proxy() {
        let spec = Spec {
            dns: &["a.example"],
            ..Spec::default()
        };
        let (server_ca, server) = ca_and_leaf(&rcgen::PKCS_ECDSA_P256_SHA256, &spec);
        let (client_ca, client) = ca_and_leaf(&rcgen::PKCS_ECDSA_P256_SHA256, &Spec::default());
        let proxy = proxy_config(&server, &client_ca);
        let challenges = Challenges::new();
        let ck = challenge::certificate("a.example", &[9u8; 32], &provider()).unwrap();
        let challenge_der = ck.cert[0].to_vec();
        challenges.insert("a.example", ck);
        let validator = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth();
        let plain = || {
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots(&server_ca.der))
        };

        // A validator (SNI and exactly acme-tls/1), without any client certificate.
        let (port, side) = serve_one(proxy.clone(), challenges.clone());
        let conn = handshake(port, validator.clone(), &[ACME_TLS_ALPN]).unwrap();
        assert_eq!(conn.alpn_protocol(), Some(ACME_TLS_ALPN));
        assert_eq!(conn.peer_certificates().unwrap()[0].as_ref(), challenge_der);
        assert_eq!(
            side.join().unwrap(),
            Seen {
                challenge: true,
                result: Ok(())
            }
        );

        // acme-tls/1 among others is an ordinary client: no certificate, no entry.
        let (port, side) = serve_one(proxy.clone(), challenges.clone());
        let _ = handshake(port, validator.clone(), &[ACME_TLS_ALPN, b"h2"]);
        let seen = side.join().unwrap();
        assert!(!seen.challenge);
        assert!(seen.result.is_err(), "entered without a client certificate");

        // An ordinary mTLS client gets the proxy's certificate and is let in.
        let (port, side) = serve_one(proxy.clone(), challenges.clone());
        let cfg = plain()
            .with_client_auth_cert(vec![CertificateDer::from(client.der.clone())], key(&client))
            .unwrap();
        let conn = handshake(port, cfg, &[]).unwrap();
        assert_eq!(conn.peer_certificates().unwrap()[0].as_ref(), server.der);
        assert_eq!(
            side.join().unwrap(),
            Seen {
                challenge: false,
                result: Ok(())
            }
        );

        // The same client without its certificate is refused.
        let (port, side) = serve_one(proxy, challenges);
        let _ = handshake(port, plain().with_no_client_auth(), &[]);
        let seen = side.join().unwrap();
        assert!(!seen.challenge);
        assert!(seen.result.is_err());
    }
}
