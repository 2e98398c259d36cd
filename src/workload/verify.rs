//! rustls glue for a Workload API [`Source`]: a certificate resolver that serves the current
//! SVID, and peer verifiers that check the peer's SVID against the current bundles (SPIFFE
//! rules instead of hostname or web PKI rules) and then ask the caller's authorization. Both
//! read the source on every handshake, so a rotation applies to the next handshake without
//! rebuilding any TLS configuration; established connections keep what they negotiated.

use std::fmt;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};

use super::Source;
use super::svid::{self, SvidRejected};

/// Decides whether a verified SVID may connect (`--allow-*` / `--verify-*`); its error is the
/// handshake error as the caller wants it logged. Called on handshake threads.
pub trait Authorize: Send + Sync {
    fn authorize(&self, leaf: &CertificateDer<'_>) -> Result<(), Error>;
}

impl<F: Fn(&CertificateDer<'_>) -> Result<(), Error> + Send + Sync> Authorize for F {
    fn authorize(&self, leaf: &CertificateDer<'_>) -> Result<(), Error> {
        self(leaf)
    }
}

/// Serves the source's current SVID chain (the bundle is never sent). Before the first update
/// there is nothing to serve and the handshake fails.
pub struct SvidResolver {
    source: Source,
}

impl SvidResolver {
    pub fn new(source: Source) -> SvidResolver {
        SvidResolver { source }
    }

    fn identity(&self) -> Option<Arc<CertifiedKey>> {
        self.source.current().map(|c| c.identity.clone())
    }
}

impl fmt::Debug for SvidResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SvidResolver")
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.identity()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.identity()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The shared part of both verifiers.
struct Checker {
    source: Source,
    provider: Arc<CryptoProvider>,
    authorize: Option<Arc<dyn Authorize>>,
}

impl Checker {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        let Some(current) = self.source.current() else {
            return Err(rejected("x509svid: no trust bundle received yet".into()));
        };
        svid::verify_peer(
            &current.bundles,
            end_entity,
            intermediates,
            now,
            &self.provider,
        )
        .map_err(rejected)?;
        match &self.authorize {
            Some(authorize) => authorize.authorize(end_entity),
            None => Ok(()),
        }
    }

    fn tls12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A refused SVID; rustls sends the peer a `bad_certificate` alert.
fn rejected(text: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(SvidRejected(
        text,
    )))))
}

/// The text of a refused SVID, if `e` is one.
pub fn rejection_text(e: &Error) -> Option<&str> {
    match e {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<SvidRejected>().map(|r| r.0.as_str())
        }
        _ => None,
    }
}

/// The server side: asks every client for a certificate (without CA names) and requires an
/// SVID, unless `mandatory` is false (`--disable-authentication`), in which case none is asked.
pub struct SvidClientVerifier {
    checker: Checker,
    mandatory: bool,
}

impl SvidClientVerifier {
    pub fn new(
        source: Source,
        provider: Arc<CryptoProvider>,
        mandatory: bool,
        authorize: Option<Arc<dyn Authorize>>,
    ) -> SvidClientVerifier {
        SvidClientVerifier {
            checker: Checker {
                source,
                provider,
                authorize,
            },
            mandatory,
        }
    }
}

impl fmt::Debug for SvidClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SvidClientVerifier")
    }
}

impl ClientCertVerifier for SvidClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.mandatory
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.checker.check(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.checker.tls12(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.checker.tls13(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.checker.schemes()
    }
}

/// The client side: the server must present an SVID of a trust domain we hold a bundle for;
/// the server name is not checked (SPIFFE IDs replace host names), it is only sent as SNI.
pub struct SvidServerVerifier {
    checker: Checker,
}

impl SvidServerVerifier {
    pub fn new(
        source: Source,
        provider: Arc<CryptoProvider>,
        authorize: Option<Arc<dyn Authorize>>,
    ) -> SvidServerVerifier {
        SvidServerVerifier {
            checker: Checker {
                source,
                provider,
                authorize,
            },
        }
    }
}

impl fmt::Debug for SvidServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SvidServerVerifier")
    }
}

impl ServerCertVerifier for SvidServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.checker.check(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.checker.tls12(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.checker.tls13(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.checker.schemes()
    }
}
