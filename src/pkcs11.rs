//! PKCS#11 identities: the private key stays inside a token (an HSM, a smart card, SoftHSM,
//! a TPM through tpm2-pkcs11) and every handshake signature is computed by the token's module,
//! which is loaded at run time. Owns the module handles, the token sessions, the signer given
//! to rustls and the [`Pkcs11Source`] identity source (`--pkcs11-module`); reads the
//! certificate file only through `certs.rs` and never touches sockets.
//!
//! The key is found the way the reference finds it: through the leaf certificate's public key
//! (a public-key object with the same modulus and exponent, or curve and point), then the
//! private-key object with the same `CKA_ID`. Object labels are never used.
//!
//! Concurrency: PKCS#11 sessions must not be used by two threads at once, so signatures go
//! through a small pool of sessions opened on the one logged-in token. A handshake takes an
//! idle session, or opens a new one while fewer than [`MAX_SESSIONS`] exist, or waits for one
//! to come back. The login is per application and token, so the extra sessions share the
//! single login of the start; the first session is never closed on purpose, which keeps that
//! login alive. A key marked `CKA_ALWAYS_AUTHENTICATE` uses a single session and logs in again
//! before each signature. A session whose token went away is dropped from the pool, and the
//! handshake that saw it fails with a `pkcs11key: …` error; the process goes on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::Decode;
use der::asn1::{ObjectIdentifier, OctetStringRef, UintRef};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use sha2::Digest;
use x509_cert::Certificate;

use crate::certs::{self, CertError};
use crate::config::{self, Config};
use crate::identity::IdentitySource;
use crate::sandbox::Plan;
use crate::sync::lock;

/// At most this many sessions sign at the same time; more handshakes wait for one.
pub const MAX_SESSIONS: usize = 4;

/// How long a handshake waits for a free session before it fails.
const SESSION_WAIT: Duration = Duration::from_secs(30);

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");

/// A private key in a token, logged in and ready to sign, bound to the public key of the
/// leaf certificate it was found by.
pub struct TokenKey {
    module: PathBuf,
    label: String,
    slot: Slot,
    ctx: Pkcs11,
    key: ObjectHandle,
    public: PublicKey,
    /// The leaf's `SubjectPublicKeyInfo` DER: reloads must present the same one.
    spki: Vec<u8>,
    pin: String,
    always_authenticate: bool,
    /// Whether the token offers `CKM_RSA_PKCS_PSS` (TLS 1.3 needs it for RSA keys).
    pss: bool,
    max_sessions: usize,
    pool: Mutex<Pool>,
    returned: Condvar,
}

/// The token's sessions: idle ones, and how many exist (idle or signing).
struct Pool {
    idle: Vec<Session>,
    open: usize,
}

/// The leaf's public key, as the token's public-key object must hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    Rsa {
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    Ec {
        curve: Curve,
        /// DER of the named-curve OID (`CKA_EC_PARAMS`).
        params: Vec<u8>,
        /// DER OCTET STRING around the uncompressed point (`CKA_EC_POINT`).
        point: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P224,
    P256,
    P384,
    P521,
}

const CURVES: &[(&str, Curve)] = &[
    ("1.3.132.0.33", Curve::P224),
    ("1.2.840.10045.3.1.7", Curve::P256),
    ("1.3.132.0.34", Curve::P384),
    ("1.3.132.0.35", Curve::P521),
];

impl TokenKey {
    /// Loads the module (once per process and path), finds the token labelled `label`, logs in
    /// with `pin` and finds the private key belonging to `leaf` (a DER certificate).
    ///
    /// Errors are the reference's full texts, e.g. `pkcs11: failed to load private key from
    /// module "<m>" (token "<l>"): pkcs11key: pkcs11key: opening session: pkcs11: 0xA0:
    /// CKR_PIN_INCORRECT`.
    pub fn open(module: &Path, label: &str, pin: &str, leaf: &[u8]) -> Result<TokenKey, String> {
        Self::open_with(module, label, pin, leaf, MAX_SESSIONS)
    }

    fn open_with(
        module: &Path,
        label: &str,
        pin: &str,
        leaf: &[u8],
        max_sessions: usize,
    ) -> Result<TokenKey, String> {
        let fail = |e: String| {
            format!(
                "pkcs11: failed to load private key from module \"{}\" (token \"{label}\"): \
                 pkcs11key: {e}",
                module.display()
            )
        };
        let ctx = load_module(module).map_err(fail)?;
        let (slot, session) = open_session(&ctx, label, pin)
            .map_err(|e| fail(format!("pkcs11key: opening session: {e}")))?;
        let (public, spki) =
            public_key(leaf).map_err(|e| fail(format!("looking up public key: {e}")))?;
        let public_handle = first_object(&session, &public.template())
            .map_err(|e| fail(format!("looking up public key: {e}")))?;
        let id = match session.get_attributes(public_handle, &[AttributeType::Id]) {
            Ok(attrs) => attrs.into_iter().find_map(|a| match a {
                Attribute::Id(id) => Some(id),
                _ => None,
            }),
            Err(e) => return Err(fail(format!("looking up public key: {}", ck_error(&e)))),
        };
        let id = id.ok_or_else(|| fail("getting private key: no objects found".to_string()))?;
        let key = first_object(
            &session,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(id),
            ],
        )
        .map_err(|e| fail(format!("getting private key: {e}")))?;
        let always_authenticate = session
            .get_attributes(key, &[AttributeType::AlwaysAuthenticate])
            .ok()
            .into_iter()
            .flatten()
            .any(|a| matches!(a, Attribute::AlwaysAuthenticate(true)));
        let pss = match ctx.get_mechanism_list(slot) {
            Ok(list) => list.contains(&MechanismType::RSA_PKCS_PSS),
            Err(_) => true,
        };
        let max_sessions = if always_authenticate {
            1
        } else {
            max_sessions.max(1)
        };
        Ok(TokenKey {
            module: module.to_path_buf(),
            label: label.to_string(),
            slot,
            ctx,
            key,
            public,
            spki,
            pin: pin.to_string(),
            always_authenticate,
            pss,
            max_sessions,
            pool: Mutex::new(Pool {
                idle: vec![session],
                open: 1,
            }),
            returned: Condvar::new(),
        })
    }

    /// Whether `leaf` (a DER certificate) carries the public key this token key was found by:
    /// what a reload must check before it serves a re-read certificate with this key.
    pub fn matches(&self, leaf: &[u8]) -> bool {
        Certificate::from_der(leaf)
            .ok()
            .and_then(|c| der::Encode::to_der(&c.tbs_certificate.subject_public_key_info).ok())
            .is_some_and(|spki| spki == self.spki)
    }

    /// The module path given at load.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The token label given at load.
    pub fn token_label(&self) -> &str {
        &self.label
    }

    /// `RSA 2048`, `ECDSA P-256` and so on.
    pub fn key_type(&self) -> String {
        match &self.public {
            PublicKey::Rsa { modulus, .. } => {
                let lead = modulus.first().map_or(8, |b| b.leading_zeros() as usize);
                format!("RSA {}", modulus.len() * 8 - lead)
            }
            PublicKey::Ec { curve, .. } => format!("ECDSA {}", curve.name()),
        }
    }

    /// The signature schemes this key can produce, most preferred first.
    pub fn schemes(&self) -> Vec<SignatureScheme> {
        match &self.public {
            PublicKey::Rsa { .. } => {
                let mut schemes = Vec::new();
                if self.pss {
                    schemes.extend([
                        SignatureScheme::RSA_PSS_SHA512,
                        SignatureScheme::RSA_PSS_SHA384,
                        SignatureScheme::RSA_PSS_SHA256,
                    ]);
                }
                schemes.extend([
                    SignatureScheme::RSA_PKCS1_SHA512,
                    SignatureScheme::RSA_PKCS1_SHA384,
                    SignatureScheme::RSA_PKCS1_SHA256,
                ]);
                schemes
            }
            PublicKey::Ec { curve, .. } => curve.scheme().into_iter().collect(),
        }
    }

    /// Proves that the token's private key belongs to the certificate: signs a test message
    /// with the most preferred scheme and verifies it with the leaf's public key through
    /// `provider`'s verification algorithms. Returns the scheme used.
    pub fn self_test(&self, provider: &CryptoProvider) -> Result<SignatureScheme, String> {
        let scheme = *self
            .schemes()
            .first()
            .ok_or_else(|| format!("no TLS signature scheme for a {} key", self.key_type()))?;
        let message = b"ghostunnel: does the token key match the certificate?";
        let signature = self.sign(scheme, message)?;
        verify(provider, &self.spki, scheme, message, &signature)
            .map(|()| scheme)
            .map_err(|()| {
                "the token's signature does not verify with the certificate's public key"
                    .to_string()
            })
    }

    /// Signs `message` with `scheme` through the token: hashes it here, then has the token
    /// apply the raw mechanism (`CKM_RSA_PKCS` over a DigestInfo, `CKM_RSA_PKCS_PSS` with
    /// salt length = hash length, or `CKM_ECDSA` whose `r || s` is re-encoded as DER).
    ///
    /// Safe to call from any number of threads at once.
    pub fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, String> {
        let (mechanism, input, ecdsa) = match scheme {
            SignatureScheme::RSA_PKCS1_SHA256 => (
                Mechanism::RsaPkcs,
                digest_info(Hash::Sha256, message),
                false,
            ),
            SignatureScheme::RSA_PKCS1_SHA384 => (
                Mechanism::RsaPkcs,
                digest_info(Hash::Sha384, message),
                false,
            ),
            SignatureScheme::RSA_PKCS1_SHA512 => (
                Mechanism::RsaPkcs,
                digest_info(Hash::Sha512, message),
                false,
            ),
            SignatureScheme::RSA_PSS_SHA256 => {
                (pss(Hash::Sha256), Hash::Sha256.digest(message), false)
            }
            SignatureScheme::RSA_PSS_SHA384 => {
                (pss(Hash::Sha384), Hash::Sha384.digest(message), false)
            }
            SignatureScheme::RSA_PSS_SHA512 => {
                (pss(Hash::Sha512), Hash::Sha512.digest(message), false)
            }
            SignatureScheme::ECDSA_NISTP256_SHA256 => {
                (Mechanism::Ecdsa, Hash::Sha256.digest(message), true)
            }
            SignatureScheme::ECDSA_NISTP384_SHA384 => {
                (Mechanism::Ecdsa, Hash::Sha384.digest(message), true)
            }
            SignatureScheme::ECDSA_NISTP521_SHA512 => {
                (Mechanism::Ecdsa, Hash::Sha512.digest(message), true)
            }
            other => return Err(format!("pkcs11key: unsupported signature scheme {other:?}")),
        };
        let raw = self.with_session(|session| {
            if self.always_authenticate {
                // The key wants a login right before each use; the single session (see
                // `open_with`) serializes this for the whole process.
                let _ = session.logout();
                login(session, &self.pin)?;
            }
            session.sign(&mechanism, self.key, &input)
        })?;
        match ecdsa {
            true => ecdsa_der(&raw),
            false => Ok(raw),
        }
    }

    /// Runs `op` on a session of the pool; see the module documentation.
    fn with_session<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<T, String> {
        let session = self.take_session()?;
        let result = op(&session);
        let broken = matches!(
            &result,
            Err(CkError::Pkcs11(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::DeviceError
                    | RvError::CryptokiNotInitialized,
                _
            ))
        );
        let mut pool = lock(&self.pool);
        match broken {
            true => {
                pool.open -= 1;
                drop(pool);
                drop(session);
            }
            false => {
                pool.idle.push(session);
                drop(pool);
            }
        }
        self.returned.notify_one();
        result.map_err(|e| match &e {
            CkError::Pkcs11(_, Function::SignInit) => {
                format!("pkcs11key: sign init: {}", ck_error(&e))
            }
            CkError::Pkcs11(_, Function::Login | Function::Logout) => {
                format!("pkcs11key: login: {}", ck_error(&e))
            }
            _ => format!("pkcs11key: sign: {}", ck_error(&e)),
        })
    }

    fn take_session(&self) -> Result<Session, String> {
        let mut pool = lock(&self.pool);
        let mut waited = Duration::ZERO;
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(session);
            }
            if pool.open < self.max_sessions {
                pool.open += 1;
                drop(pool);
                return self.ctx.open_ro_session(self.slot).map_err(|e| {
                    lock(&self.pool).open -= 1;
                    format!("pkcs11key: opening session: {}", ck_error(&e))
                });
            }
            if waited >= SESSION_WAIT {
                return Err(format!(
                    "pkcs11key: no token session became free within {}s",
                    SESSION_WAIT.as_secs()
                ));
            }
            let step = Duration::from_secs(1);
            pool = crate::sync::wait_timeout(&self.returned, pool, step).0;
            waited += step;
        }
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("module", &self.module)
            .field("label", &self.label)
            .field("key", &self.key_type())
            .finish_non_exhaustive()
    }
}

/// The rustls face of a [`TokenKey`]: put it in a `CertifiedKey` with the chain.
#[derive(Debug, Clone)]
pub struct TokenSigningKey(pub Arc<TokenKey>);

impl SigningKey for TokenSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.0.schemes().into_iter().find(|s| offered.contains(s))?;
        Some(Box::new(TokenSigner {
            key: Arc::clone(&self.0),
            scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.0.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.0.public {
            PublicKey::Rsa { .. } => SignatureAlgorithm::RSA,
            PublicKey::Ec { .. } => SignatureAlgorithm::ECDSA,
        }
    }
}

#[derive(Debug)]
struct TokenSigner {
    key: Arc<TokenKey>,
    scheme: SignatureScheme,
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key
            .sign(self.scheme, message)
            .map_err(rustls::Error::General)
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

// ---------------------------------------------------------------------------------------------
// The identity source

/// Why Landlock is off with a module: modules open libraries, devices, files and daemon
/// sockets that no plan can list.
const LANDLOCK_REASON: &str = "using pkcs11 (landlock is not compatible with pkcs11)";

/// `--pkcs11-module` with `--cert`: the chain is re-read from the PEM file on every load, the
/// key is found in the token on the first load and kept for the life of the process.
pub struct Pkcs11Source {
    cert: PathBuf,
    module: PathBuf,
    label: String,
    pin: String,
    /// The key found by the first load's leaf; reloads must present the same public key.
    key: Mutex<Option<Arc<TokenKey>>>,
    /// The provider of the last load, for `--check`'s test signature.
    provider: Mutex<Option<Arc<CryptoProvider>>>,
}

impl Pkcs11Source {
    /// The source for `config` (whose identity must be `Pkcs11`). The note that Landlock is
    /// skipped was logged with the first lines (`RawArgs::landlock_announcement`).
    pub fn new(config: &Config) -> Pkcs11Source {
        let (cert, module, label, pin) = match &config.identity {
            config::IdentitySource::Pkcs11 {
                cert,
                module,
                token_label,
                pin,
            } => (
                cert.clone(),
                module.clone(),
                token_label.clone(),
                pin.clone(),
            ),
            // Not reached: the factory calls this for a PKCS#11 identity only. Empty settings
            // fail the first load with a clear module error rather than a panic.
            _ => Default::default(),
        };
        Pkcs11Source {
            cert,
            module,
            label,
            pin,
            key: Mutex::new(None),
            provider: Mutex::new(None),
        }
    }
}

impl IdentitySource for Pkcs11Source {
    fn describe(&self) -> String {
        "using PKCS#11 module as certificate source".to_string()
    }

    fn location(&self) -> String {
        format!("{} (PKCS#11)", self.cert.display())
    }

    /// Reads the chain, then (first load) finds the key or (later loads) checks that the new
    /// leaf still carries the cached key's public key.
    fn load(&self, provider: &CryptoProvider) -> Result<Option<Arc<CertifiedKey>>, CertError> {
        let failed = |e: String| {
            CertError::Identity(format!(
                "failed to load certificate from \"{}\": {e}",
                self.cert.display()
            ))
        };
        let chain = certs::read_pem_chain(&self.cert).map_err(failed)?;
        let mut cached = lock(&self.key);
        let key = match &*cached {
            Some(key) => {
                log::info!("pkcs11: re-using previously cached private key handle from module");
                if !key.matches(&chain[0]) {
                    return Err(CertError::Identity(format!(
                        "pkcs11: refusing to reload certificate \"{}\": its public key does not \
                         match the cached HSM private key",
                        self.cert.display()
                    )));
                }
                Arc::clone(key)
            }
            None => {
                log::info!("pkcs11: loading private key for given certificate from module");
                let key = TokenKey::open(&self.module, &self.label, &self.pin, &chain[0])
                    .map_err(CertError::Identity)?;
                let key = Arc::new(key);
                *cached = Some(Arc::clone(&key));
                key
            }
        };
        drop(cached);
        certs::check_validity(&chain[0], &self.cert, SystemTime::now())
            .map_err(CertError::Identity)?;
        *lock(&self.provider) = Some(Arc::new(provider.clone()));
        let signer: Arc<dyn SigningKey> = Arc::new(TokenSigningKey(key));
        Ok(Some(Arc::new(CertifiedKey::new(chain, signer))))
    }

    fn sandbox(&self, plan: &mut Plan) {
        plan.disable(LANDLOCK_REASON);
    }

    fn status_fields(&self) -> Vec<(&'static str, String)> {
        vec![("pkcs11_token", self.label.clone())]
    }

    /// The token, the key type, and a test signature verified with the certificate's key.
    fn check_lines(&self) -> Vec<String> {
        let Some(key) = lock(&self.key).clone() else {
            return Vec::new();
        };
        let mut lines = vec![
            format!(
                "token: \"{}\" via {}",
                key.token_label(),
                key.module().display()
            ),
            format!("token key: {}", key.key_type()),
        ];
        let provider = lock(&self.provider).clone();
        let verdict = match provider.map(|p| key.self_test(&p)) {
            Some(Ok(scheme)) => format!("yes (test signature {} verified)", scheme_name(scheme)),
            Some(Err(e)) => format!("NO: {e}"),
            None => "not tested".to_string(),
        };
        lines.push(format!("key matches certificate: {verdict}"));
        lines
    }
}

/// The IANA name of a scheme this key can sign with, as TLS tools print it.
fn scheme_name(scheme: SignatureScheme) -> &'static str {
    match scheme {
        SignatureScheme::RSA_PKCS1_SHA256 => "rsa_pkcs1_sha256",
        SignatureScheme::RSA_PKCS1_SHA384 => "rsa_pkcs1_sha384",
        SignatureScheme::RSA_PKCS1_SHA512 => "rsa_pkcs1_sha512",
        SignatureScheme::RSA_PSS_SHA256 => "rsa_pss_rsae_sha256",
        SignatureScheme::RSA_PSS_SHA384 => "rsa_pss_rsae_sha384",
        SignatureScheme::RSA_PSS_SHA512 => "rsa_pss_rsae_sha512",
        SignatureScheme::ECDSA_NISTP256_SHA256 => "ecdsa_secp256r1_sha256",
        SignatureScheme::ECDSA_NISTP384_SHA384 => "ecdsa_secp384r1_sha384",
        SignatureScheme::ECDSA_NISTP521_SHA512 => "ecdsa_secp521r1_sha512",
        _ => "another scheme",
    }
}

// ---------------------------------------------------------------------------------------------
// Module, token, key lookup

/// Loads and initializes `path` once per process; later calls share the handle. The module
/// is never finalized or unloaded (its handle lives in a static).
fn load_module(path: &Path) -> Result<Pkcs11, String> {
    static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let mut modules = lock(&MODULES);
    if let Some((_, ctx)) = modules.iter().find(|(p, _)| p == path) {
        return Ok(ctx.clone());
    }
    let ctx =
        Pkcs11::new(path).map_err(|_| format!("failed to load module '{}'", path.display()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("failed to initialize module: {}", ck_error(&e))),
    }
    modules.push((path.to_path_buf(), ctx.clone()));
    Ok(ctx)
}

/// The first slot with a token whose label (trailing blanks removed) is exactly `label`, a
/// read-only session on it, logged in as the user.
fn open_session(ctx: &Pkcs11, label: &str, pin: &str) -> Result<(Slot, Session), String> {
    let slots = ctx.get_slots_with_token().map_err(|e| ck_error(&e))?;
    let mut found = None;
    for slot in slots {
        let info = ctx.get_token_info(slot).map_err(|e| ck_error(&e))?;
        if info.label() == label {
            found = Some(slot);
            break;
        }
    }
    let Some(slot) = found else {
        return Err(format!("no slot found matching token label \"{label}\""));
    };
    let session = ctx.open_ro_session(slot).map_err(|e| ck_error(&e))?;
    login(&session, pin).map_err(|e| ck_error(&e))?;
    Ok((slot, session))
}

/// `C_Login` as the user. An empty PIN is passed as a null pointer, which is how a token with
/// a protected authentication path (a PIN pad) is asked to prompt; other tokens refuse it
/// (`CKR_ARGUMENTS_BAD`). Already being logged in is success.
fn login(session: &Session, pin: &str) -> Result<(), CkError> {
    let pin = (!pin.is_empty()).then(|| AuthPin::new(pin.to_string().into()));
    match session.login(UserType::User, pin.as_ref()) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn first_object(session: &Session, template: &[Attribute]) -> Result<ObjectHandle, String> {
    let mut objects = session
        .iter_objects_with_cache_size(template, std::num::NonZeroUsize::MIN)
        .map_err(|e| ck_error(&e))?;
    match objects.next() {
        Some(Ok(handle)) => Ok(handle),
        Some(Err(e)) => Err(ck_error(&e)),
        None => Err("no objects found".to_string()),
    }
}

impl PublicKey {
    /// The search template for the token's public-key object.
    fn template(&self) -> Vec<Attribute> {
        match self {
            PublicKey::Rsa { modulus, exponent } => vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Modulus(modulus.clone()),
                Attribute::PublicExponent(exponent.clone()),
            ],
            PublicKey::Ec { params, point, .. } => vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(params.clone()),
                Attribute::EcPoint(point.clone()),
            ],
        }
    }
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P224 => "P-224",
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// The TLS scheme bound to this curve; P-224 has none.
    fn scheme(self) -> Option<SignatureScheme> {
        match self {
            Curve::P224 => None,
            Curve::P256 => Some(SignatureScheme::ECDSA_NISTP256_SHA256),
            Curve::P384 => Some(SignatureScheme::ECDSA_NISTP384_SHA384),
            Curve::P521 => Some(SignatureScheme::ECDSA_NISTP521_SHA512),
        }
    }
}

/// The leaf's public key and its SPKI DER. Errors: `unsupported public key of type <Go type>`
/// (the reference's wording), or a parse error.
fn public_key(leaf: &[u8]) -> Result<(PublicKey, Vec<u8>), String> {
    let cert = Certificate::from_der(leaf).map_err(|e| format!("x509: {e}"))?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let spki_der = der::Encode::to_der(spki).map_err(|e| format!("x509: {e}"))?;
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| "x509: invalid public key bit string".to_string())?;
    let key = match spki.algorithm.oid {
        OID_RSA => {
            let (modulus, exponent) = rsa_public_key(bits).map_err(|e| format!("x509: {e}"))?;
            PublicKey::Rsa { modulus, exponent }
        }
        OID_EC => {
            let oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or_else(|| "x509: unsupported elliptic curve".to_string())?;
            let oid_text = oid.to_string();
            let curve = CURVES
                .iter()
                .find(|(o, _)| *o == oid_text)
                .map(|(_, c)| *c)
                .ok_or_else(|| "x509: unsupported elliptic curve".to_string())?;
            let params = der::Encode::to_der(&oid).map_err(|e| format!("x509: {e}"))?;
            let point = OctetStringRef::new(bits)
                .and_then(|o| der::Encode::to_der(&o))
                .map_err(|e| format!("x509: {e}"))?;
            PublicKey::Ec {
                curve,
                params,
                point,
            }
        }
        OID_ED25519 => return Err("unsupported public key of type ed25519.PublicKey".into()),
        OID_DSA => return Err("unsupported public key of type *dsa.PublicKey".into()),
        _ => return Err("unsupported public key of type <nil>".into()),
    };
    Ok((key, spki_der))
}

/// Modulus and exponent of a DER `RSAPublicKey`, as unsigned big-endian bytes without leading
/// zeros.
fn rsa_public_key(der: &[u8]) -> der::Result<(Vec<u8>, Vec<u8>)> {
    use der::{Reader, SliceReader};
    let mut reader = SliceReader::new(der)?;
    reader.sequence(|r| {
        let n = UintRef::decode(r)?;
        let e = UintRef::decode(r)?;
        Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
    })
}

/// Verifies `signature` over `message` with the key in `spki` (DER), as a peer would.
fn verify(
    provider: &CryptoProvider,
    spki: &[u8],
    scheme: SignatureScheme,
    message: &[u8],
    signature: &[u8],
) -> Result<(), ()> {
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(spki).map_err(|_| ())?;
    let key = spki.subject_public_key.as_bytes().ok_or(())?;
    let algs = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, algs)| *algs)
        .ok_or(())?;
    let ok = algs
        .iter()
        .any(|alg| alg.verify_signature(key, message, signature).is_ok());
    ok.then_some(()).ok_or(())
}

// ---------------------------------------------------------------------------------------------
// Signature formats

#[derive(Debug, Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(message).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(message).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(message).to_vec(),
        }
    }
}

/// `DigestInfo(hash) || digest`, the input of `CKM_RSA_PKCS` for a PKCS#1 v1.5 signature.
fn digest_info(hash: Hash, message: &[u8]) -> Vec<u8> {
    let prefix: &[u8] = match hash {
        Hash::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        Hash::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        Hash::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    };
    [prefix, &hash.digest(message)].concat()
}

/// `CKM_RSA_PKCS_PSS` with MGF1 over the same hash and a salt as long as the hash.
fn pss(hash: Hash) -> Mechanism<'static> {
    let (hash_alg, mgf, len) = match hash {
        Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32u64),
        Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48),
        Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64),
    };
    Mechanism::RsaPkcsPss(PkcsPssParams {
        hash_alg,
        mgf,
        s_len: len.into(),
    })
}

/// Re-encodes a token's `r || s` ECDSA output as DER `SEQUENCE { INTEGER r, INTEGER s }`.
fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(format!(
            "pkcs11key: sign: malformed ECDSA signature of {} bytes",
            raw.len()
        ));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [der_uint(r), der_uint(s)].concat();
    Ok([vec![0x30], der_len(body.len()), body].concat())
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let mut value = bytes[start..].to_vec();
    if value.first().is_none_or(|&b| b & 0x80 != 0) {
        value.insert(0, 0);
    }
    [vec![0x02], der_len(value.len()), value].concat()
}

fn der_len(len: usize) -> Vec<u8> {
    match len {
        0..=0x7f => vec![len as u8],
        0x80..=0xff => vec![0x81, len as u8],
        _ => vec![0x82, (len >> 8) as u8, len as u8],
    }
}

// ---------------------------------------------------------------------------------------------
// Error texts

/// A cryptoki error as the reference renders PKCS#11 return codes: `pkcs11: 0xA0:
/// CKR_PIN_INCORRECT` (upper-case hex, no leading zeros; empty name when unknown).
fn ck_error(e: &CkError) -> String {
    let CkError::Pkcs11(rv, _) = e else {
        return e.to_string();
    };
    let (code, name) = match rv {
        RvError::VendorDefined(code) | RvError::UnknownErrorCode(code) => (*code, ""),
        _ => CKR_NAMES
            .iter()
            .find(|(code, _)| cryptoki::error::Rv::from(*code) == cryptoki::error::Rv::Error(*rv))
            .map_or((0, ""), |(code, name)| (*code, *name)),
    };
    format!("pkcs11: 0x{code:X}: {name}")
}

/// The standard `CKR_*` return codes (PKCS#11 3.2), without `CKR_OK`.
const CKR_NAMES: &[(u64, &str)] = &[
    (0x1, "CKR_CANCEL"),
    (0x2, "CKR_HOST_MEMORY"),
    (0x3, "CKR_SLOT_ID_INVALID"),
    (0x5, "CKR_GENERAL_ERROR"),
    (0x6, "CKR_FUNCTION_FAILED"),
    (0x7, "CKR_ARGUMENTS_BAD"),
    (0x8, "CKR_NO_EVENT"),
    (0x9, "CKR_NEED_TO_CREATE_THREADS"),
    (0xA, "CKR_CANT_LOCK"),
    (0x10, "CKR_ATTRIBUTE_READ_ONLY"),
    (0x11, "CKR_ATTRIBUTE_SENSITIVE"),
    (0x12, "CKR_ATTRIBUTE_TYPE_INVALID"),
    (0x13, "CKR_ATTRIBUTE_VALUE_INVALID"),
    (0x1B, "CKR_ACTION_PROHIBITED"),
    (0x20, "CKR_DATA_INVALID"),
    (0x21, "CKR_DATA_LEN_RANGE"),
    (0x30, "CKR_DEVICE_ERROR"),
    (0x31, "CKR_DEVICE_MEMORY"),
    (0x32, "CKR_DEVICE_REMOVED"),
    (0x40, "CKR_ENCRYPTED_DATA_INVALID"),
    (0x41, "CKR_ENCRYPTED_DATA_LEN_RANGE"),
    (0x42, "CKR_AEAD_DECRYPT_FAILED"),
    (0x50, "CKR_FUNCTION_CANCELED"),
    (0x51, "CKR_FUNCTION_NOT_PARALLEL"),
    (0x54, "CKR_FUNCTION_NOT_SUPPORTED"),
    (0x60, "CKR_KEY_HANDLE_INVALID"),
    (0x62, "CKR_KEY_SIZE_RANGE"),
    (0x63, "CKR_KEY_TYPE_INCONSISTENT"),
    (0x64, "CKR_KEY_NOT_NEEDED"),
    (0x65, "CKR_KEY_CHANGED"),
    (0x66, "CKR_KEY_NEEDED"),
    (0x67, "CKR_KEY_INDIGESTIBLE"),
    (0x68, "CKR_KEY_FUNCTION_NOT_PERMITTED"),
    (0x69, "CKR_KEY_NOT_WRAPPABLE"),
    (0x6A, "CKR_KEY_UNEXTRACTABLE"),
    (0x70, "CKR_MECHANISM_INVALID"),
    (0x71, "CKR_MECHANISM_PARAM_INVALID"),
    (0x82, "CKR_OBJECT_HANDLE_INVALID"),
    (0x90, "CKR_OPERATION_ACTIVE"),
    (0x91, "CKR_OPERATION_NOT_INITIALIZED"),
    (0xA0, "CKR_PIN_INCORRECT"),
    (0xA1, "CKR_PIN_INVALID"),
    (0xA2, "CKR_PIN_LEN_RANGE"),
    (0xA3, "CKR_PIN_EXPIRED"),
    (0xA4, "CKR_PIN_LOCKED"),
    (0xB0, "CKR_SESSION_CLOSED"),
    (0xB1, "CKR_SESSION_COUNT"),
    (0xB3, "CKR_SESSION_HANDLE_INVALID"),
    (0xB4, "CKR_SESSION_PARALLEL_NOT_SUPPORTED"),
    (0xB5, "CKR_SESSION_READ_ONLY"),
    (0xB6, "CKR_SESSION_EXISTS"),
    (0xB7, "CKR_SESSION_READ_ONLY_EXISTS"),
    (0xB8, "CKR_SESSION_READ_WRITE_SO_EXISTS"),
    (0xC0, "CKR_SIGNATURE_INVALID"),
    (0xC1, "CKR_SIGNATURE_LEN_RANGE"),
    (0xD0, "CKR_TEMPLATE_INCOMPLETE"),
    (0xD1, "CKR_TEMPLATE_INCONSISTENT"),
    (0xE0, "CKR_TOKEN_NOT_PRESENT"),
    (0xE1, "CKR_TOKEN_NOT_RECOGNIZED"),
    (0xE2, "CKR_TOKEN_WRITE_PROTECTED"),
    (0xF0, "CKR_UNWRAPPING_KEY_HANDLE_INVALID"),
    (0xF1, "CKR_UNWRAPPING_KEY_SIZE_RANGE"),
    (0xF2, "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT"),
    (0x100, "CKR_USER_ALREADY_LOGGED_IN"),
    (0x101, "CKR_USER_NOT_LOGGED_IN"),
    (0x102, "CKR_USER_PIN_NOT_INITIALIZED"),
    (0x103, "CKR_USER_TYPE_INVALID"),
    (0x104, "CKR_USER_ANOTHER_ALREADY_LOGGED_IN"),
    (0x105, "CKR_USER_TOO_MANY_TYPES"),
    (0x110, "CKR_WRAPPED_KEY_INVALID"),
    (0x112, "CKR_WRAPPED_KEY_LEN_RANGE"),
    (0x113, "CKR_WRAPPING_KEY_HANDLE_INVALID"),
    (0x114, "CKR_WRAPPING_KEY_SIZE_RANGE"),
    (0x115, "CKR_WRAPPING_KEY_TYPE_INCONSISTENT"),
    (0x120, "CKR_RANDOM_SEED_NOT_SUPPORTED"),
    (0x121, "CKR_RANDOM_NO_RNG"),
    (0x130, "CKR_DOMAIN_PARAMS_INVALID"),
    (0x140, "CKR_CURVE_NOT_SUPPORTED"),
    (0x150, "CKR_BUFFER_TOO_SMALL"),
    (0x160, "CKR_SAVED_STATE_INVALID"),
    (0x170, "CKR_INFORMATION_SENSITIVE"),
    (0x180, "CKR_STATE_UNSAVEABLE"),
    (0x190, "CKR_CRYPTOKI_NOT_INITIALIZED"),
    (0x191, "CKR_CRYPTOKI_ALREADY_INITIALIZED"),
    (0x1A0, "CKR_MUTEX_BAD"),
    (0x1A1, "CKR_MUTEX_NOT_LOCKED"),
    (0x1B0, "CKR_NEW_PIN_MODE"),
    (0x1B1, "CKR_NEXT_OTP"),
    (0x1B5, "CKR_EXCEEDED_MAX_ITERATIONS"),
    (0x1B6, "CKR_FIPS_SELF_TEST_FAILED"),
    (0x1B7, "CKR_LIBRARY_LOAD_FAILED"),
    (0x1B8, "CKR_PIN_TOO_WEAK"),
    (0x1B9, "CKR_PUBLIC_KEY_INVALID"),
    (0x200, "CKR_FUNCTION_REJECTED"),
    (0x201, "CKR_TOKEN_RESOURCE_EXCEEDED"),
    (0x202, "CKR_OPERATION_CANCEL_FAILED"),
    (0x203, "CKR_KEY_EXHAUSTED"),
    (0x204, "CKR_PENDING"),
    (0x205, "CKR_SESSION_ASYNC_NOT_SUPPORTED"),
    (0x206, "CKR_SEED_RANDOM_REQUIRED"),
    (0x207, "CKR_OPERATION_NOT_VALIDATED"),
    (0x208, "CKR_TOKEN_NOT_INITIALIZED"),
    (0x209, "CKR_PARAMETER_SET_NOT_SUPPORTED"),
];

#[cfg(test)]
mod tests {
    use std::process::Command;

    use rcgen::{CertificateParams, DnType, KeyPair, SignatureAlgorithm};

    use super::*;

    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    /// Set in the child process that runs a SoftHSM test (see [`in_softhsm`]).
    const DIR_VAR: &str = "GT_TEST_SOFTHSM_DIR";

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    /// A self-signed certificate and its PKCS#8 PEM key.
    fn cert(alg: &'static SignatureAlgorithm, cn: &str) -> (Vec<u8>, String) {
        let key = KeyPair::generate_for(alg).expect("keygen");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.self_signed(&key).expect("self-sign");
        (cert.der().to_vec(), key.serialize_pem())
    }

    fn softhsm_util(dir: &Path, args: &[&str]) {
        let out = Command::new("softhsm2-util")
            .args(args)
            .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
            .output()
            .expect("softhsm2-util must be installed (Debian package softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The module's environment (`SOFTHSM2_CONF`) is read once per process, so every SoftHSM
    /// test runs its body in a child process of this test binary, with a token directory of
    /// its own: tokens `ec256` (PIN 1234), `ec384` (PIN 1234) and `rsa` (PIN 5678), each with
    /// one imported key whose certificate is `<label>.der`, plus `other.der` (no key in any
    /// token). The parent returns `None` after the child passed.
    fn in_softhsm(test: &str) -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os(DIR_VAR) {
            return Some(PathBuf::from(dir));
        }
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} missing: install softhsm2"
        );
        let dir = std::env::temp_dir().join(format!(
            "gt-softhsm-{}-{}",
            std::process::id(),
            test.replace(':', "_")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tokens")).expect("token dir");
        std::fs::write(
            dir.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .expect("softhsm2.conf");
        let tokens: [(&str, &'static SignatureAlgorithm, &str); 3] = [
            ("ec256", &rcgen::PKCS_ECDSA_P256_SHA256, "1234"),
            ("ec384", &rcgen::PKCS_ECDSA_P384_SHA384, "1234"),
            ("rsa", &rcgen::PKCS_RSA_SHA256, "5678"),
        ];
        for (i, (label, alg, pin)) in tokens.into_iter().enumerate() {
            let (der, key) = cert(alg, label);
            std::fs::write(dir.join(format!("{label}.der")), der).expect("cert");
            let key_path = dir.join(format!("{label}.key"));
            std::fs::write(&key_path, key).expect("key");
            softhsm_util(
                &dir,
                &[
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--so-pin",
                    "0000",
                    "--pin",
                    pin,
                ],
            );
            let id = format!("0{}", i + 1);
            softhsm_util(
                &dir,
                &[
                    "--import",
                    &key_path.display().to_string(),
                    "--token",
                    label,
                    "--label",
                    &format!("key-{label}"),
                    "--id",
                    &id,
                    "--pin",
                    pin,
                ],
            );
        }
        let (other, _) = cert(&rcgen::PKCS_ECDSA_P256_SHA256, "other");
        std::fs::write(dir.join("other.der"), other).expect("cert");

        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
            .env(DIR_VAR, &dir)
            .output()
            .expect("run the test in a child process");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child test failed:\n{text}");
        assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
        let _ = std::fs::remove_dir_all(&dir);
        None
    }

    fn leaf(dir: &Path, label: &str) -> Vec<u8> {
        std::fs::read(dir.join(format!("{label}.der"))).expect("cert")
    }

    #[test]
    fn softhsm_keys_sign_every_scheme() {
        let Some(dir) = in_softhsm("pkcs11::tests::softhsm_keys_sign_every_scheme") else {
            return;
        };
        let module = Path::new(MODULE);
        let cases = [
            (
                "ec256",
                "1234",
                "ECDSA P-256",
                vec![SignatureScheme::ECDSA_NISTP256_SHA256],
            ),
            (
                "ec384",
                "1234",
                "ECDSA P-384",
                vec![SignatureScheme::ECDSA_NISTP384_SHA384],
            ),
            (
                "rsa",
                "5678",
                "RSA 2048",
                vec![
                    SignatureScheme::RSA_PSS_SHA512,
                    SignatureScheme::RSA_PSS_SHA384,
                    SignatureScheme::RSA_PSS_SHA256,
                    SignatureScheme::RSA_PKCS1_SHA512,
                    SignatureScheme::RSA_PKCS1_SHA384,
                    SignatureScheme::RSA_PKCS1_SHA256,
                ],
            ),
        ];
        let provider = provider();
        for (label, pin, key_type, schemes) in cases {
            let cert = leaf(&dir, label);
            let key = TokenKey::open(module, label, pin, &cert).expect(label);
            assert_eq!(key.key_type(), key_type);
            assert_eq!(key.schemes(), schemes);
            assert!(key.matches(&cert));
            assert!(!key.matches(&leaf(&dir, "other")));
            for scheme in schemes {
                let message = format!("handshake transcript for {label} {scheme:?}");
                let sig = key.sign(scheme, message.as_bytes()).expect("sign");
                assert_eq!(
                    verify(&provider, &key.spki, scheme, message.as_bytes(), &sig),
                    Ok(())
                );
                assert_eq!(
                    verify(&provider, &key.spki, scheme, b"another message", &sig),
                    Err(()),
                    "{scheme:?}"
                );
            }
            assert_eq!(key.self_test(&provider), Ok(key.schemes()[0]));

            // Through rustls' interface, as a handshake uses it.
            let signing = TokenSigningKey(Arc::new(key));
            assert!(signing.choose_scheme(&[SignatureScheme::ED25519]).is_none());
            let offered = [SignatureScheme::ED25519, signing.0.schemes()[0]];
            let signer = signing.choose_scheme(&offered).expect("a scheme");
            let sig = signer.sign(b"transcript").expect("sign");
            assert_eq!(
                verify(
                    &provider,
                    &signing.0.spki,
                    signer.scheme(),
                    b"transcript",
                    &sig
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn softhsm_load_errors_use_the_reference_texts() {
        let Some(dir) = in_softhsm("pkcs11::tests::softhsm_load_errors_use_the_reference_texts")
        else {
            return;
        };
        let module = Path::new(MODULE);
        let err = |label: &str, pin: &str, cert: &[u8]| {
            TokenKey::open(module, label, pin, cert).expect_err("must fail")
        };
        let prefix = |label: &str| {
            format!(
                "pkcs11: failed to load private key from module \"{MODULE}\" (token \"{label}\"): pkcs11key: "
            )
        };
        let ec = leaf(&dir, "ec256");
        assert_eq!(
            err("ec256", "9999", &ec),
            format!(
                "{}pkcs11key: opening session: pkcs11: 0xA0: CKR_PIN_INCORRECT",
                prefix("ec256")
            )
        );
        assert_eq!(
            err("ec256", "", &ec),
            format!(
                "{}pkcs11key: opening session: pkcs11: 0x7: CKR_ARGUMENTS_BAD",
                prefix("ec256")
            )
        );
        assert_eq!(
            err("nosuch", "1234", &ec),
            format!(
                "{}pkcs11key: opening session: no slot found matching token label \"nosuch\"",
                prefix("nosuch")
            )
        );
        // Labels are exact, not prefixes or case-insensitive.
        assert!(
            err("EC256", "1234", &ec).ends_with("no slot found matching token label \"EC256\"")
        );
        assert!(err("ec", "1234", &ec).ends_with("no slot found matching token label \"ec\""));
        // An empty label is the blank label of SoftHSM's spare uninitialized slot.
        assert_eq!(
            err("", "1234", &ec),
            format!(
                "{}pkcs11key: opening session: pkcs11: 0xE1: CKR_TOKEN_NOT_RECOGNIZED",
                prefix("")
            )
        );
        assert_eq!(
            err("ec256", "1234", &leaf(&dir, "rsa")),
            format!("{}looking up public key: no objects found", prefix("ec256"))
        );
        assert_eq!(
            err("ec256", "1234", &leaf(&dir, "other")),
            format!("{}looking up public key: no objects found", prefix("ec256"))
        );
        let ed = {
            let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("keygen");
            CertificateParams::default()
                .self_signed(&key)
                .expect("cert")
                .der()
                .to_vec()
        };
        assert_eq!(
            err("ec256", "1234", &ed),
            format!(
                "{}looking up public key: unsupported public key of type ed25519.PublicKey",
                prefix("ec256")
            )
        );
        // Not a PKCS#11 module: a shared library without C_GetFunctionList, and a text file.
        for bogus in ["/usr/lib/x86_64-linux-gnu/libz.so.1", "/etc/hostname"] {
            let e = TokenKey::open(Path::new(bogus), "ec256", "1234", &ec).expect_err("bogus");
            assert_eq!(
                e,
                format!(
                    "pkcs11: failed to load private key from module \"{bogus}\" (token \"ec256\"): \
                     pkcs11key: failed to load module '{bogus}'"
                )
            );
        }
        // The module is initialized once per process: a second key from it still loads.
        TokenKey::open(module, "ec256", "1234", &ec).expect("after failures");
    }

    #[test]
    fn softhsm_concurrent_signatures_share_a_bounded_pool() {
        let Some(dir) =
            in_softhsm("pkcs11::tests::softhsm_concurrent_signatures_share_a_bounded_pool")
        else {
            return;
        };
        let provider = provider();
        for (label, pin) in [("ec256", "1234"), ("rsa", "5678")] {
            let key = Arc::new(
                TokenKey::open(Path::new(MODULE), label, pin, &leaf(&dir, label)).expect(label),
            );
            let scheme = key.schemes()[0];
            let threads: Vec<_> = (0..12)
                .map(|t| {
                    let key = Arc::clone(&key);
                    std::thread::spawn(move || {
                        (0..15)
                            .map(|i| {
                                let msg = format!("{t}-{i}");
                                let sig = key.sign(scheme, msg.as_bytes()).expect("sign");
                                (msg, sig)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for thread in threads {
                for (msg, sig) in thread.join().expect("signing thread") {
                    assert_eq!(
                        verify(&provider, &key.spki, scheme, msg.as_bytes(), &sig),
                        Ok(())
                    );
                }
            }
            let pool = lock(&key.pool);
            assert!(
                pool.open >= 1 && pool.open <= MAX_SESSIONS,
                "{} sessions",
                pool.open
            );
            assert_eq!(pool.idle.len(), pool.open, "every session came back");
        }
    }

    #[test]
    fn ecdsa_signatures_become_der() {
        // r has its high bit set (needs a zero byte), s has leading zeros (dropped).
        let mut raw = vec![0x80; 32];
        raw.extend([0u8, 0, 0x01].iter().chain([0x7f; 29].iter()));
        let der = ecdsa_der(&raw).expect("der");
        assert_eq!(&der[..5], &[0x30, 0x43, 0x02, 0x21, 0x00]);
        assert_eq!(&der[37..40], &[0x02, 0x1e, 0x01]);
        assert_eq!(der.len(), 2 + 35 + 32, "r: 2 + 33 bytes, s: 2 + 30 bytes");
        // P-521 sizes need a long-form length.
        let der = ecdsa_der(&[0xff; 132]).expect("der");
        assert_eq!(&der[..3], &[0x30, 0x81, 0x8a], "2 × (2 + 67) bytes");
        assert!(ecdsa_der(&[]).is_err());
        assert!(ecdsa_der(&[1, 2, 3]).is_err());
        assert_eq!(der_uint(&[0, 0]), vec![0x02, 0x01, 0x00]);
    }

    #[test]
    fn digest_info_prefixes() {
        let d = digest_info(Hash::Sha256, b"abc");
        assert_eq!(d.len(), 19 + 32);
        assert_eq!(&d[19..], sha2::Sha256::digest(b"abc").as_slice());
        assert_eq!(digest_info(Hash::Sha384, b"").len(), 19 + 48);
        assert_eq!(digest_info(Hash::Sha512, b"").len(), 19 + 64);
    }

    #[test]
    fn return_codes_render_like_the_reference() {
        let e = |rv| ck_error(&CkError::Pkcs11(rv, Function::Login));
        assert_eq!(e(RvError::PinIncorrect), "pkcs11: 0xA0: CKR_PIN_INCORRECT");
        assert_eq!(e(RvError::ArgumentsBad), "pkcs11: 0x7: CKR_ARGUMENTS_BAD");
        assert_eq!(
            e(RvError::TokenNotRecognized),
            "pkcs11: 0xE1: CKR_TOKEN_NOT_RECOGNIZED"
        );
        assert_eq!(
            e(RvError::DeviceRemoved),
            "pkcs11: 0x32: CKR_DEVICE_REMOVED"
        );
        assert_eq!(
            e(RvError::VendorDefined(0x8000_0001)),
            "pkcs11: 0x80000001: "
        );
    }

    #[test]
    fn public_key_templates() {
        let (der, _) = cert(&rcgen::PKCS_ECDSA_P256_SHA256, "ec");
        let (key, spki) = public_key(&der).expect("ec");
        let PublicKey::Ec {
            curve,
            params,
            point,
        } = key
        else {
            panic!("not EC")
        };
        assert_eq!(curve, Curve::P256);
        assert_eq!(
            params,
            [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        );
        assert_eq!(
            &point[..3],
            &[0x04, 0x41, 0x04],
            "OCTET STRING around 04||X||Y"
        );
        assert!(spki.len() > 65);

        let (der, _) = cert(&rcgen::PKCS_RSA_SHA256, "rsa");
        let (PublicKey::Rsa { modulus, exponent }, _) = public_key(&der).expect("rsa") else {
            panic!("not RSA")
        };
        assert_eq!(exponent, [1, 0, 1]);
        assert_eq!(modulus.len(), 256);
        assert!(modulus[0] != 0);
        assert!(public_key(b"not a certificate").is_err());
    }
}
