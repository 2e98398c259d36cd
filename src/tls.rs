//! TLS policy and the reloadable TLS contexts (docs/behaviour.md §4, §9).
//!
//! Owns the rustls configurations: protocol versions and AEAD-only suites, the server's
//! client-certificate verifier (chain + `--allow-*`, or pins), the client's server verifier
//! (chain + hostname + `--verify-*`, or pins), and the atomic swap of identity and trust on
//! reload. Reads certificate files only through `certs.rs`; owns no sockets.

use std::path::Path;
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
    CipherSuite, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, HandshakeKind,
    RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};

use crate::auth::{self, SpkiPin};
use crate::authz::Authorizer;
use crate::certs::{self, CertError};
use crate::config::{
    CipherGroup, ClientVerify, Config, MaxTlsVersion, ServerAuth, SystemTrust, TlsPolicy,
};
use crate::identity::{self, IdentitySource};

/// The crypto provider restricted to the suites we allow (docs/behaviour.md §4.1): the three TLS
/// 1.3 suites and the ECDHE + AEAD TLS 1.2 suites of the selected groups. Nothing else is ever
/// offered.
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
    // that matches the P-256 and X25519 key exchange anyway. A server chooses by this order,
    // not the client's, as the reference does.
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
    // The reference also offers P-521, last; a client that offers only P-521 would otherwise
    // find no common group.
    #[cfg(feature = "aws-lc-rs")]
    provider.kx_groups.push(crate::tlsparity::p521::SECP521R1);
    provider
}

/// Protocol versions from `--max-tls-version` (docs/behaviour.md §2.6): TLS 1.3 preferred, 1.2
/// minimum.
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
    /// The source's identity, and its trust anchors or else `--cacert` / the system store.
    fn load(
        source: &dyn IdentitySource,
        cacert: Option<&Path>,
        system: &SystemTrust,
        provider: &CryptoProvider,
    ) -> Result<Material, CertError> {
        let identity = source.load(provider)?;
        let anchors = match source.trust_anchors() {
            Some(anchors) => anchors,
            None => certs::load_trust(cacert, system).map_err(CertError::Trust)?,
        };
        let mut roots = RootCertStore::empty();
        // Unusable anchors are skipped, as the reference skips what it cannot parse.
        roots.add_parsable_certificates(anchors);
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
    build: Box<Build<C>>,
}

/// How a [`Reloadable`] makes its next configuration: reads identity and trust, builds.
type Build<C> = dyn Fn() -> Result<Arc<C>, CertError> + Send + Sync;

impl<C> Reloadable<C> {
    fn new(build: Box<Build<C>>) -> Result<Self, CertError> {
        let current = RwLock::new(build()?);
        Ok(Reloadable { current, build })
    }

    /// The configuration for the next handshake. Any thread, any time.
    pub fn current(&self) -> Arc<C> {
        crate::sync::read(&self.current).clone()
    }

    /// Re-reads every file and swaps in the new configuration; on error the old one stays.
    /// Any thread, any time; concurrent reloads are each atomic.
    pub fn reload(&self) -> Result<(), CertError> {
        let next = (self.build)()?;
        *crate::sync::write(&self.current) = next;
        Ok(())
    }
}

/// The TLS contexts of either mode, for the reload path (`reload.rs`), which needs only what
/// both have in common.
pub enum Contexts {
    Server(Arc<Reloadable<ServerTls>>),
    Client(Arc<Reloadable<ClientTls>>),
}

impl Contexts {
    /// Rebuilds the contexts from the identity source and trust; on error the old ones stay.
    pub fn reload(&self) -> Result<(), CertError> {
        match self {
            Contexts::Server(tls) => tls.reload(),
            Contexts::Client(tls) => tls.reload(),
        }
    }

    /// What the current contexts serve.
    pub fn served(&self) -> Arc<Served> {
        match self {
            Contexts::Server(tls) => tls.current().served.clone(),
            Contexts::Client(tls) => tls.current().served.clone(),
        }
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
    /// The status port's configuration: same identity, no client certificate (docs/behaviour.md
    /// §4.4); `None` when there is no identity to serve with.
    pub status: Option<Arc<ServerConfig>>,
}

impl Served {
    fn of(
        identity: Option<&Arc<CertifiedKey>>,
        provider: &Arc<CryptoProvider>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Result<Arc<Served>, CertError> {
        let Some(identity) = identity else {
            return Ok(Arc::default());
        };
        Ok(Arc::new(Served {
            subject: certs::subject_string(&identity.cert[0]),
            not_after: certs::not_after(&identity.cert[0]),
            status: Some(status_config(provider, versions, identity.clone())?),
        }))
    }
}

/// The server-side configuration plus the verifier used to re-check resumed sessions.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub served: Arc<Served>,
    verifier: Arc<ClientAuthVerifier>,
    /// With an identity source that answers ACME TLS-ALPN-01: the configuration for
    /// `acme-tls/1` ClientHellos (the challenge certificate, that ALPN, no client
    /// certificate).
    pub challenge: Option<Arc<ServerConfig>>,
}

/// What a completed server handshake is for.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// An authorized peer: forward.
    Peer,
    /// A TLS-ALPN-01 challenge connection: its handshake was the answer; close it.
    Challenge,
}

/// Whether a ClientHello is an ACME validator's (RFC 8737): it names a server (SNI) and offers
/// `acme-tls/1` as its only ALPN protocol. The exemption from client authentication stays that
/// narrow: a client offering `acme-tls/1` among other protocols is an ordinary client.
pub fn wants_challenge(hello: &rustls::server::ClientHello<'_>) -> bool {
    let named = hello.server_name().is_some_and(|n| !n.is_empty());
    let only_acme = hello.alpn().is_some_and(|mut protocols| {
        protocols.next() == Some(identity::ACME_TLS_ALPN) && protocols.next().is_none()
    });
    named && only_acme
}

impl ServerTls {
    /// Completes authorization once the handshake is done. Full handshakes were checked by the
    /// verifier; a resumed session's stored client certificate is checked again (a resumption
    /// must never widen access). A connection made with [`challenge`](Self::challenge) is a
    /// challenge.
    pub fn accepted(&self, conn: &rustls::ServerConnection) -> Result<Accepted, Error> {
        if self.challenge.is_some() && conn.alpn_protocol() == Some(identity::ACME_TLS_ALPN) {
            return Ok(Accepted::Challenge);
        }
        if conn.handshake_kind() != Some(HandshakeKind::Resumed) {
            return Ok(Accepted::Peer);
        }
        match conn.peer_certificates() {
            Some([leaf, rest @ ..]) => self
                .verifier
                .verify_client_cert(leaf, rest, UnixTime::now())
                .map(|_| Accepted::Peer),
            _ if !self.verifier.client_auth_mandatory() => Ok(Accepted::Peer),
            _ => Err(Error::NoCertificatesPresented),
        }
    }
}

/// The client-side configuration plus what is needed to re-check resumed sessions.
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub served: Arc<Served>,
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

/// Builds the reloadable server context: the identity from `source`, client certificates
/// verified against its trust anchors (or `--cacert` / the system store) and then put to
/// `authz`. Fails like the initial load would.
pub fn server(
    config: &Config,
    auth: &ServerAuth,
    source: Arc<dyn IdentitySource>,
    authz: Arc<dyn Authorizer>,
) -> Result<Reloadable<ServerTls>, CertError> {
    let auth = auth.clone();
    let cacert = config.cacert.clone();
    let system = config.system_trust.clone();
    let provider = Arc::new(provider(&config.tls));
    // An unusable `--max-tls-version` is reported by the caller after the target line, where
    // the reference reports it; these contexts are then never used.
    let versions = versions(&config.tls.max_version)
        .unwrap_or_else(|_| versions(&crate::config::MaxTlsVersion::Tls13).unwrap_or_default());
    let challenge = source.alpn_challenge();
    let peers = source.peer_verifiers();
    Reloadable::new(Box::new(move || {
        let material = Material::load(&*source, cacert.as_deref(), &system, &provider)?;
        let Some(identity) = material.identity else {
            return Err(CertError::Identity(
                "certificate cannot be used as a server".into(),
            ));
        };
        let served = Served::of(Some(&identity), &provider, versions)?;
        let verifier = Arc::new(ClientAuthVerifier::new(
            &auth,
            material.roots,
            &provider,
            authz.clone(),
            peers.as_ref().map(|p| p.clients.clone()),
        )?);
        let mut tls = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| CertError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
        tls.ignore_client_order = true;
        let challenge = match &challenge {
            Some(resolver) => {
                let mut tls = ServerConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(versions)
                    .map_err(|e| CertError::Tls(e.to_string()))?
                    .with_no_client_auth()
                    .with_cert_resolver(resolver.clone());
                tls.alpn_protocols = vec![identity::ACME_TLS_ALPN.to_vec()];
                Some(Arc::new(tls))
            }
            None => None,
        };
        Ok(Arc::new(ServerTls {
            config: Arc::new(tls),
            served,
            verifier,
            challenge,
        }))
    }))
}

/// Builds the reloadable client context: the identity from `source` (if any) as the client
/// certificate, the server verified against the trust anchors and hostname, then put to
/// `authz` (or checked against `--verify-spki-pin` pins instead).
pub fn client(
    config: &Config,
    verify: &ClientVerify,
    server_name: ServerName<'static>,
    source: Arc<dyn IdentitySource>,
    authz: Arc<dyn Authorizer>,
) -> Result<Reloadable<ClientTls>, CertError> {
    let verify = verify.clone();
    let cacert = config.cacert.clone();
    let system = config.system_trust.clone();
    let provider = Arc::new(provider(&config.tls));
    // An unusable `--max-tls-version` is reported by the caller after the target line, where
    // the reference reports it; these contexts are then never used.
    let versions = versions(&config.tls.max_version)
        .unwrap_or_else(|_| versions(&crate::config::MaxTlsVersion::Tls13).unwrap_or_default());
    let sessions: Arc<dyn rustls::client::ClientSessionStore> =
        Arc::new(rustls::client::ClientSessionMemoryCache::new(256));
    let resume = config.tls.resumption;
    let peers = source.peer_verifiers();
    Reloadable::new(Box::new(move || {
        let material = Material::load(&*source, cacert.as_deref(), &system, &provider)?;
        let verifier: Arc<dyn ServerCertVerifier> = match &verify {
            ClientVerify::Pins(pins) => Arc::new(PinVerifier::new(pins.clone(), &provider)),
            ClientVerify::Standard(_) => {
                let webpki: Arc<dyn ServerCertVerifier> = match &peers {
                    Some(peers) => peers.servers.clone(),
                    None => WebPkiServerVerifier::builder_with_provider(
                        material.roots,
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| CertError::Tls(format!("unable to build TLS config: {e}")))?,
                };
                Arc::new(ServerAclVerifier {
                    webpki,
                    authz: authz.clone(),
                    // An identity source's own verification (SPIFFE IDs) replaces host names.
                    check_name: peers.is_none(),
                })
            }
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| CertError::Tls(e.to_string()))?
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
) -> Result<Arc<ServerConfig>, CertError> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| CertError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// An authorization failure: the peer gets a `bad_certificate` alert, as from the reference.
fn unauthorized(why: String) -> Error {
    crate::tlsparity::bad_certificate(why)
}

/// Renders a handshake error the way operators know it: our own authorization texts as they
/// are, the common failures in the reference's words, everything else through rustls'
/// description.
pub fn describe(e: &Error) -> String {
    if let Some(text) = crate::tlsparity::describe(e) {
        return text;
    }
    #[cfg(feature = "spiffe")]
    if let Error::InvalidCertificate(rustls::CertificateError::Other(other)) = e {
        if let Some(r) = other
            .0
            .downcast_ref::<crate::workload::svid::SvidRejected>()
        {
            return r.0.clone();
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
    /// Chain verification, then the authorizer. `roots` also serve X.509 v1 leaves, which
    /// webpki refuses.
    Chain {
        webpki: Arc<dyn ClientCertVerifier>,
        authz: Arc<dyn Authorizer>,
        roots: Arc<RootCertStore>,
    },
    Pins(Vec<SpkiPin>),
}

impl ClientAuthVerifier {
    /// `source_verifier` is the identity source's own chain verification, used instead of
    /// the web PKI one over `roots` when present.
    fn new(
        auth: &ServerAuth,
        roots: Arc<RootCertStore>,
        provider: &Arc<CryptoProvider>,
        authz: Arc<dyn Authorizer>,
        source_verifier: Option<Arc<dyn ClientCertVerifier>>,
    ) -> Result<Self, CertError> {
        let mode = match auth {
            ServerAuth::Disabled => ClientAuthMode::Disabled,
            ServerAuth::Pins(pins) => ClientAuthMode::Pins(pins.clone()),
            ServerAuth::AllowAll | ServerAuth::Acl(_) => ClientAuthMode::Chain {
                roots: roots.clone(),
                webpki: match source_verifier {
                    Some(verifier) => verifier,
                    None => WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                        .build()
                        .map_err(|e| CertError::Tls(format!("unable to build TLS config: {e}")))?,
                },
                authz,
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
            // Pin mode sends no CA names (docs/behaviour.md §4.2).
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
            ClientAuthMode::Chain {
                webpki,
                authz,
                roots,
            } => {
                let verified = match webpki.verify_client_cert(end_entity, intermediates, now) {
                    // An X.509 v1 leaf, which the reference accepts: checked on its own terms.
                    Err(_) if crate::tlsparity::is_v1(end_entity) => {
                        crate::tlsparity::verify_v1_leaf(end_entity, roots, &self.algorithms, now)?;
                        ClientCertVerified::assertion()
                    }
                    other => other?,
                };
                authz
                    .authorize(end_entity, intermediates)
                    .map_err(|d| unauthorized(d.0))?;
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
        crate::tlsparity::verify_handshake_signature(message, cert, dss, &self.algorithms, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        crate::tlsparity::verify_handshake_signature(message, cert, dss, &self.algorithms, true)
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
        crate::tlsparity::verify_handshake_signature(m, c, d, &self.algorithms, false)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        crate::tlsparity::verify_handshake_signature(m, c, d, &self.algorithms, true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Standard chain + hostname verification (or the identity source's own verification), then
/// the authorizer (`--verify-*`).
#[derive(Debug)]
struct ServerAclVerifier {
    webpki: Arc<dyn ServerCertVerifier>,
    authz: Arc<dyn Authorizer>,
    /// Whether the server name is checked against the leaf (standard web PKI verification).
    check_name: bool,
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
        // Validity and name first, as the reference checks them before the chain.
        if self.check_name {
            crate::tlsparity::check_server_name(end_entity, server_name, now)?;
        }
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.authz
            .authorize(end_entity, intermediates)
            .map_err(|d| unauthorized(d.0))?;
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
    use rustls::server::ResolvesServerCert;

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

    /// An identity source with an ACME TLS-ALPN-01 challenge certificate.
    struct Challenging {
        identity: Arc<CertifiedKey>,
        challenge: Arc<rustls::sign::SingleCertAndKey>,
    }

    impl IdentitySource for Challenging {
        fn describe(&self) -> String {
            "test".into()
        }
        fn location(&self) -> String {
            "test".into()
        }
        fn load(&self, _: &CryptoProvider) -> Result<Option<Arc<CertifiedKey>>, CertError> {
            Ok(Some(self.identity.clone()))
        }
        fn alpn_challenge(&self) -> Option<Arc<dyn ResolvesServerCert>> {
            Some(self.challenge.clone())
        }
    }

    /// Runs a handshake between two in-memory connections.
    fn handshake(client: &mut rustls::ClientConnection, server: &mut rustls::ServerConnection) {
        for _ in 0..20 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                return;
            }
        }
        panic!("handshake did not finish");
    }

    /// The ACME seam: an `acme-tls/1` ClientHello gets the challenge certificate without
    /// presenting a client certificate, and is a challenge (closed, never forwarded); any other
    /// connection without a client certificate is refused once the handshake is done.
    #[test]
    fn acme_tls_alpn_challenges_need_no_client_certificate_other_connections_do() {
        use crate::certs::test_support::{Spec, scratch_dir, self_signed};
        let dir = scratch_dir("acme");
        let (cert, key) = self_signed(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &Spec {
                dns: &["localhost"],
                ..Spec::default()
            },
        )
        .write(&dir, "server");
        let (ch_cert, ch_key) = self_signed(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &Spec {
                cn: Some("challenge"),
                dns: &["localhost"],
                ..Spec::default()
            },
        )
        .write(&dir, "challenge");
        let path = |p: &std::path::Path| p.display().to_string();
        let args = [
            "server".to_string(),
            "--listen=:1".into(),
            "--target=localhost:2".into(),
            format!("--cert={}", path(&cert)),
            format!("--key={}", path(&key)),
            format!("--cacert={}", path(&cert)),
            "--allow-all".into(),
        ];
        let Ok(crate::cli::Parsed::Run(raw)) =
            crate::cli::parse(args.iter().map(Into::into).collect(), &|_| None)
        else {
            panic!("parse")
        };
        let config = raw.into_config().unwrap();
        let crate::config::Mode::Server(opts) = &config.mode else {
            panic!("server")
        };
        let provider = Arc::new(provider(&config.tls));
        let load = |cert: &std::path::Path, key: &std::path::Path| {
            let source = crate::config::IdentitySource::CertKey {
                cert: cert.into(),
                key: key.into(),
            };
            certs::load_identity(&source, &provider).unwrap().unwrap()
        };
        let identity = load(&cert, &key);
        let challenge = load(&ch_cert, &ch_key);
        let source = Arc::new(Challenging {
            identity,
            challenge: Arc::new(rustls::sign::SingleCertAndKey::from(challenge.clone())),
        });
        let tls = server(
            &config,
            &opts.auth,
            source,
            crate::authz::from_config(&config).expect("authorizer"),
        )
        .unwrap()
        .current();
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(
            certs::load_trust(Some(&ch_cert), &SystemTrust::default()).unwrap(),
        );
        roots.add_parsable_certificates(
            certs::load_trust(Some(&cert), &SystemTrust::default()).unwrap(),
        );
        let connect = |alpn: &[u8]| {
            let mut client = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            client.alpn_protocols = vec![alpn.to_vec()];
            let name = ServerName::try_from("localhost").unwrap();
            let mut client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
            // What the server connector does: read the ClientHello, pick the configuration.
            let mut hello = Vec::new();
            client.write_tls(&mut hello).unwrap();
            let mut acceptor = rustls::server::Acceptor::default();
            acceptor.read_tls(&mut hello.as_slice()).unwrap();
            let accepted = acceptor.accept().unwrap().unwrap();
            let config = match wants_challenge(&accepted.client_hello()) {
                true => tls.challenge.clone().unwrap(),
                false => tls.config.clone(),
            };
            let mut server = accepted.into_connection(config).unwrap();
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handshake(&mut client, &mut server)
            }));
            let served = client.peer_certificates().map(|c| c[0].clone());
            (done.is_ok(), served, tls.accepted(&server))
        };
        let (done, served, accepted) = connect(identity::ACME_TLS_ALPN);
        assert!(done);
        assert_eq!(served, Some(challenge.cert[0].clone()));
        assert_eq!(accepted, Ok(Accepted::Challenge));
        // Any other connection is an ordinary one: the client certificate stays mandatory.
        let (done, served, _) = connect(b"h2");
        assert!(!done, "handshake without a client certificate succeeded");
        assert_ne!(served, Some(challenge.cert[0].clone()));
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
