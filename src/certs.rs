//! Certificate material: loading the identity from `--keystore` (PEM or PKCS#12) or
//! `--cert`/`--key` (SPEC 3.2-3.4), the CA bundle or system trust store (3.5), and rendering
//! certificate subjects for logs (13.4). Reads files; owns no sockets and no TLS sessions.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use crate::config::IdentitySource;

/// Loads the identity. `Ok(None)` for [`IdentitySource::None`]. Errors are the SPEC 3.6 `<e>`
/// texts, e.g. `reading certificate file "<p>": open <p>: no such file or directory` or
/// `parsing X509 key pair: tls: private key does not match public key`.
pub fn load_identity(
    source: &IdentitySource,
    provider: &CryptoProvider,
) -> Result<Option<Arc<CertifiedKey>>, String> {
    let _ = (source, provider);
    unimplemented!()
}

/// Loads the trust anchors: the PEM bundle at `path`, or the system store when `None`.
/// Errors: `loading trust store: unable to read certificates from CA bundle`,
/// `loading trust store: open <p>: no such file or directory`.
pub fn load_trust(path: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    let _ = path;
    unimplemented!()
}

/// The subject of a DER certificate in the reference's RFC 2253-like form (SPEC 13.4), e.g.
/// `CN=server,OU=servers,O=Acme,C=US`. Unparseable input renders as an empty string.
pub fn subject_string(cert_der: &[u8]) -> String {
    let _ = cert_der;
    unimplemented!()
}
