//! TLS policy and the reloadable TLS contexts (SPEC 4, 9).
//!
//! Owns the rustls configurations: protocol versions and AEAD-only suites, the server's
//! client-certificate verifier (chain + `--allow-*`, or pins), the client's server verifier
//! (chain + hostname + `--verify-*`, or pins), and the atomic swap of identity and trust on
//! reload. Reads certificate files only through `certs.rs`; owns no sockets.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, CipherSuite, ClientConfig, DigitallySignedStruct, DistinguishedName, Error,
    HandshakeKind, OtherError, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};

use crate::auth::{self, SpkiPin};
use crate::certs;
use crate::config::{Acl, CipherGroup, ClientVerify, Config, MaxTlsVersion, ServerAuth, TlsPolicy};

/// The crypto provider restricted to the suites we allow (SPEC 4.1): the three TLS 1.3 suites
/// and the ECDHE + AEAD TLS 1.2 suites of the selected groups. Nothing else is ever offered.
pub fn provider(policy: &TlsPolicy) -> CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    let mut provider = rustls::crypto::ring::default_provider();
    let groups = &policy.cipher_suites;
    provider.cipher_suites.retain(|s| match s.suite() {
        CipherSuite::TLS13_AES_128_GCM_SHA256
        | CipherSuite::TLS13_AES_256_GCM_SHA384
        | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => true,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => groups.contains(&CipherGroup::Aes),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
            groups.contains(&CipherGroup::Chacha)
        }
        _ => false,
    });
    // Preference: TLS 1.3 first, then AES-128-GCM, AES-256-GCM, ChaCha20, as the reference's Go
    // stack orders them on CPUs with AES instructions. AES-128 takes 10 rounds to AES-256's 14,
    // and its SHA-256 runs on the SHA extensions where SHA-384 (AES-256's hash) has none: a
    // handshake costs about 8 % less CPU and bulk data less too, at a security level (128 bits)
    // that matches the P-256 and X25519 key exchange anyway. A server still follows the
    // client's order.
    provider.cipher_suites.sort_by_key(|s| {
        let cipher = match s.suite() {
            CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
            CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
            _ => 2,
        };
        (s.version() != &rustls::version::TLS13, cipher)
    });
    provider
}

/// Protocol versions from `--max-tls-version` (SPEC 2.6): TLS 1.3 preferred, 1.2 minimum.
pub fn versions(
    max: &MaxTlsVersion,
) -> Result<&'static [&'static SupportedProtocolVersion], String> {
    static BOTH: [&SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    match max {
        MaxTlsVersion::Tls13 => Ok(&BOTH),
        MaxTlsVersion::Tls12 => Ok(&TLS12),
        MaxTlsVersion::Unsupported(word) => Err(format!(
            "invalid max TLS version: unsupported TLS version: {word}"
        )),
    }
}

/// Identity and trust, loaded together so that a reload publishes both or neither.
struct Material {
    identity: Option<Arc<CertifiedKey>>,
    roots: Arc<RootCertStore>,
}

impl Material {
    fn load(config: &Config, provider: &CryptoProvider) -> Result<Material, String> {
        let identity = certs::load_identity(&config.identity, provider)?;
        let mut roots = RootCertStore::empty();
        // Unusable anchors are skipped, as the reference skips what it cannot parse.
        roots.add_parsable_certificates(certs::load_trust(
            config.cacert.as_deref(),
            &config.system_trust,
        )?);
        Ok(Material {
            identity,
            roots: Arc::new(roots),
        })
    }
}

/// A TLS configuration that can be swapped atomically by a reload. Each new handshake takes the
/// current one; established sessions keep theirs.
pub struct Reloadable<C> {
    current: RwLock<Arc<C>>,
    build: Box<dyn Fn() -> Result<Arc<C>, String> + Send + Sync>,
}

impl<C> Reloadable<C> {
    fn new(build: Box<dyn Fn() -> Result<Arc<C>, String> + Send + Sync>) -> Result<Self, String> {
        let current = RwLock::new(build()?);
        Ok(Reloadable { current, build })
    }

    /// The configuration for the next handshake. Any thread, any time.
    pub fn current(&self) -> Arc<C> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads every file and swaps in the new configuration; on error the old one stays.
    /// Any thread, any time; concurrent reloads are each atomic.
    pub fn reload(&self) -> Result<(), String> {
        let next = (self.build)()?;
        match self.current.write() {
            Ok(mut c) => *c = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }
}

/// What either side's context shows of the identity it serves: for reload log lines,
/// `/_status`, the expiry metric and the status port. Empty without an identity.
#[derive(Default)]
pub struct Served {
    /// The leaf subject, for `loaded certificate: …` (empty without a certificate).
    pub subject: String,
    /// The leaf notAfter, for `/_status` and the expiry metric.
    pub not_after: Option<SystemTime>,
    /// The status port's configuration: same identity, no client certificate (SPEC 4.4);
    /// `None` when there is no identity to serve with.
    pub status: Option<Arc<ServerConfig>>,
}

impl Served {
    fn of(
        identity: Option<&Arc<CertifiedKey>>,
        provider: &Arc<CryptoProvider>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Result<Served, String> {
        let Some(identity) = identity else {
            return Ok(Served::default());
        };
        Ok(Served {
            subject: certs::subject_string(&identity.cert[0]),
            not_after: certs::not_after(&identity.cert[0]),
            status: Some(status_config(provider, versions, identity.clone())?),
        })
    }
}

impl AsRef<Served> for ServerTls {
    fn as_ref(&self) -> &Served {
        &self.served
    }
}

impl AsRef<Served> for ClientTls {
    fn as_ref(&self) -> &Served {
        &self.served
    }
}

/// The server-side configuration plus the verifier used to re-check resumed sessions.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub served: Served,
    verifier: Arc<ClientAuthVerifier>,
}

impl ServerTls {
    /// Re-runs authentication on a resumed session's stored client certificate (SPEC 4.1: a
    /// resumption must never widen access). Full handshakes were already checked.
    pub fn recheck_resumed(&self, conn: &rustls::ServerConnection) -> Result<(), Error> {
        if conn.handshake_kind() != Some(HandshakeKind::Resumed) {
            return Ok(());
        }
        match conn.peer_certificates() {
            Some([leaf, rest @ ..]) => self
                .verifier
                .verify_client_cert(leaf, rest, UnixTime::now())
                .map(drop),
            _ if !self.verifier.client_auth_mandatory() => Ok(()),
            _ => Err(Error::NoCertificatesPresented),
        }
    }
}

/// The client-side configuration plus what is needed to re-check resumed sessions.
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub served: Served,
    verifier: Arc<dyn ServerCertVerifier>,
    pub server_name: ServerName<'static>,
}

impl ClientTls {
    /// Re-runs server verification on a resumed session's stored certificate chain.
    pub fn recheck_resumed(&self, conn: &rustls::ClientConnection) -> Result<(), Error> {
        if conn.handshake_kind() != Some(HandshakeKind::Resumed) {
            return Ok(());
        }
        match conn.peer_certificates() {
            Some([leaf, rest @ ..]) => self
                .verifier
                .verify_server_cert(leaf, rest, &self.server_name, &[], UnixTime::now())
                .map(drop),
            _ => Err(Error::NoCertificatesPresented),
        }
    }
}

/// Builds the reloadable server context (SPEC 4.2). Fails like the initial load would.
pub fn server(config: Arc<Config>, auth: &ServerAuth) -> Result<Reloadable<ServerTls>, String> {
    let auth = auth.clone();
    let provider = Arc::new(provider(&config.tls));
    let versions = versions(&config.tls.max_version)?;
    Reloadable::new(Box::new(move || {
        let material = Material::load(&config, &provider)?;
        let Some(identity) = material.identity else {
            return Err("certificate cannot be used as a server".into());
        };
        let served = Served::of(Some(&identity), &provider, versions)?;
        let verifier = Arc::new(ClientAuthVerifier::new(&auth, material.roots, &provider)?);
        let tls = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
        Ok(Arc::new(ServerTls {
            config: Arc::new(tls),
            served,
            verifier,
        }))
    }))
}

/// Builds the reloadable client context (SPEC 4.3).
pub fn client(
    config: Arc<Config>,
    verify: &ClientVerify,
    server_name: ServerName<'static>,
) -> Result<Reloadable<ClientTls>, String> {
    let verify = verify.clone();
    let provider = Arc::new(provider(&config.tls));
    let versions = versions(&config.tls.max_version)?;
    let sessions: Arc<dyn rustls::client::ClientSessionStore> =
        Arc::new(rustls::client::ClientSessionMemoryCache::new(256));
    let resume = config.tls.resumption;
    Reloadable::new(Box::new(move || {
        let material = Material::load(&config, &provider)?;
        let verifier: Arc<dyn ServerCertVerifier> = match &verify {
            ClientVerify::Pins(pins) => Arc::new(PinVerifier::new(pins.clone(), &provider)),
            ClientVerify::Standard(acl) => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(material.roots, provider.clone())
                        .build()
                        .map_err(|e| format!("unable to build TLS config: {e}"))?;
                Arc::new(ServerAclVerifier {
                    webpki,
                    acl: acl.clone(),
                })
            }
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let served = Served::of(material.identity.as_ref(), &provider, versions)?;
        let mut tls = match material.identity {
            Some(identity) => builder.with_client_cert_resolver(Arc::new(
                rustls::sign::SingleCertAndKey::from(identity),
            )),
            None => builder.with_no_client_auth(),
        };
        tls.resumption = if resume {
            rustls::client::Resumption::store(sessions.clone())
        } else {
            rustls::client::Resumption::disabled()
        };
        Ok(Arc::new(ClientTls {
            config: Arc::new(tls),
            served,
            verifier,
            server_name: server_name.clone(),
        }))
    }))
}

/// The TLS client of `--metrics-url` and `--target-status` over https: our versions and suites,
/// the `--cacert` bundle or the system roots (read once, at startup), standard hostname
/// verification and no client certificate.
pub fn https_client(config: &Config) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(provider(&config.tls));
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs::load_trust(
        config.cacert.as_deref(),
        &config.system_trust,
    )?);
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("unable to build TLS config: {e}"))?;
    let tls = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(&config.tls.max_version)?)
        .map_err(|e| e.to_string())?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// The status port's TLS: the proxy's identity, versions and suites, no client certificate.
fn status_config(
    provider: &Arc<CryptoProvider>,
    versions: &[&'static SupportedProtocolVersion],
    identity: Arc<CertifiedKey>,
) -> Result<Arc<ServerConfig>, String> {
    let config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
    Ok(Arc::new(config))
}

/// An authorization failure carried through rustls to the handshake error log line.
#[derive(Debug)]
struct Unauthorized(String);

impl fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unauthorized {}

fn unauthorized(why: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Unauthorized(
        why,
    )))))
}

/// Renders a handshake error the way operators know it: our own authorization texts as they
/// are, everything else through rustls' description.
pub fn describe(e: &Error) -> String {
    if let Error::InvalidCertificate(CertificateError::Other(other)) = e {
        if let Some(u) = other.0.downcast_ref::<Unauthorized>() {
            return u.0.clone();
        }
    }
    e.to_string()
}

/// The server's client-certificate verifier for every `ServerAuth` mode. Proof of possession
/// (the handshake signature) is checked with the provider's algorithms in every mode.
#[derive(Debug)]
struct ClientAuthVerifier {
    mode: ClientAuthMode,
    algorithms: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
enum ClientAuthMode {
    Disabled,
    /// Chain verification, then the ACL (an `AllowAll` server has `acl: None`).
    Chain {
        webpki: Arc<dyn ClientCertVerifier>,
        acl: Option<Acl>,
    },
    Pins(Vec<SpkiPin>),
}

impl ClientAuthVerifier {
    fn new(
        auth: &ServerAuth,
        roots: Arc<RootCertStore>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let mode = match auth {
            ServerAuth::Disabled => ClientAuthMode::Disabled,
            ServerAuth::Pins(pins) => ClientAuthMode::Pins(pins.clone()),
            ServerAuth::AllowAll | ServerAuth::Acl(_) => ClientAuthMode::Chain {
                webpki: WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("unable to build TLS config: {e}"))?,
                acl: match auth {
                    ServerAuth::Acl(acl) => Some(acl.clone()),
                    _ => None,
                },
            },
        };
        Ok(ClientAuthVerifier {
            mode,
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

impl ClientCertVerifier for ClientAuthVerifier {
    fn offer_client_auth(&self) -> bool {
        !matches!(self.mode, ClientAuthMode::Disabled)
    }

    fn client_auth_mandatory(&self) -> bool {
        self.offer_client_auth()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.mode {
            ClientAuthMode::Chain { webpki, .. } => webpki.root_hint_subjects(),
            // Pin mode sends no CA names (SPEC 4.2).
            _ => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match &self.mode {
            ClientAuthMode::Disabled => {
                Err(Error::General("client authentication is disabled".into()))
            }
            ClientAuthMode::Pins(pins) => {
                auth::check_pins(pins, end_entity).map_err(unauthorized)?;
                Ok(ClientCertVerified::assertion())
            }
            ClientAuthMode::Chain { webpki, acl } => {
                let verified = webpki.verify_client_cert(end_entity, intermediates, now)?;
                if let Some(acl) = acl {
                    auth::check_acl(acl, end_entity).map_err(unauthorized)?;
                }
                Ok(verified)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Accepts any certificate whose leaf SPKI matches a pin; no chain, expiry or name checks, but
/// the handshake signature is still verified with the provider's algorithms.
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<SpkiPin>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinVerifier {
    fn new(pins: Vec<SpkiPin>, provider: &CryptoProvider) -> PinVerifier {
        PinVerifier {
            pins,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        auth::check_pins(&self.pins, end_entity).map_err(unauthorized)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Standard chain + hostname verification, then the `--verify-*` ACL when one is given.
#[derive(Debug)]
struct ServerAclVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// `--verify-*`; empty means chain and hostname checks only.
    acl: Acl,
}

impl ServerCertVerifier for ServerAclVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if !self.acl.is_empty() {
            auth::check_acl(&self.acl, end_entity).map_err(unauthorized)?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suites(groups: Vec<CipherGroup>) -> Vec<CipherSuite> {
        let policy = TlsPolicy {
            max_version: MaxTlsVersion::Tls13,
            cipher_suites: groups,
            resumption: true,
        };
        provider(&policy)
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect()
    }

    #[test]
    fn aes_128_first_then_aes_256_then_chacha_tls13_before_tls12() {
        let all = suites(vec![CipherGroup::Aes, CipherGroup::Chacha]);
        assert_eq!(
            all[..3],
            [
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ]
        );
        assert_eq!(all.len(), 9, "{all:?}");
        assert_eq!(
            all[3..5],
            [
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ]
        );
        let chacha_only = suites(vec![CipherGroup::Chacha]);
        assert_eq!(chacha_only.len(), 5, "{chacha_only:?}");
        assert!(!chacha_only.contains(&CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256));
    }
}
