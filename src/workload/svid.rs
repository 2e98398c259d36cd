//! What an X.509-SVID update means: SPIFFE IDs, the checks every SVID must pass before it is
//! served, the trust bundles keyed by trust domain, and the verification of a peer's SVID
//! against them. Pure functions over bytes; owns no I/O and no threads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use der::Decode;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, TrustAnchor, UnixTime};
use rustls::sign::CertifiedKey;
use webpki::{EndEntityCert, KeyPurposeIdIter};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectAltName};

use super::proto::X509SvidResponse;

/// A valid SPIFFE ID: `spiffe://<trust domain><path>`, kept as its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiffeId {
    text: String,
    /// Length of `spiffe://<trust domain>`.
    domain_end: usize,
}

const SCHEME: &str = "spiffe://";

impl SpiffeId {
    /// Parses an ID with the SPIFFE grammar: lower-case trust domain of `a-z0-9.-_`, path
    /// segments of `a-zA-Z0-9.-_`, no empty, `.` or `..` segment, no trailing `/`. The error
    /// texts are the ones operators know from SPIRE tooling.
    pub fn parse(text: &str) -> Result<SpiffeId, String> {
        if text.is_empty() {
            return Err("cannot be empty".into());
        }
        let Some(rest) = text.strip_prefix(SCHEME) else {
            return Err("scheme is missing or invalid".into());
        };
        let domain_len = rest.find('/').unwrap_or(rest.len());
        let (domain, path) = rest.split_at(domain_len);
        check_trust_domain(domain)?;
        check_path(path)?;
        Ok(SpiffeId {
            text: text.to_string(),
            domain_end: SCHEME.len() + domain_len,
        })
    }

    /// The trust domain name (without scheme).
    pub fn trust_domain(&self) -> &str {
        &self.text[SCHEME.len()..self.domain_end]
    }

    /// The path, `""` for the trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.text[self.domain_end..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn check_trust_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("trust domain is missing".into());
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores".into());
    }
    Ok(())
}

/// Left to right, as SPIFFE's reference parser goes, so that the first fault is reported.
fn check_path(path: &str) -> Result<(), String> {
    let bytes = path.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate().skip(1) {
        if c == b'/' {
            match &path[start..i] {
                "/" => return Err("path cannot contain empty segments".into()),
                "/." | "/.." => return Err("path cannot contain dot segments".into()),
                _ => {}
            }
            start = i;
        } else if !is_path_char(c) {
            return Err("path segment characters are limited to letters, numbers, dots, dashes, and underscores".into());
        }
    }
    match &path[start..] {
        "/" => Err("path cannot have a trailing slash".into()),
        "/." | "/.." => Err("path cannot contain dot segments".into()),
        _ => Ok(()),
    }
}

fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

/// A trust domain named either bare (`example.org`) or by any ID in it
/// (`spiffe://example.org/x`), as the agent may name them.
pub fn trust_domain_of(text: &str) -> Result<String, String> {
    if text.contains(":/") {
        return Ok(SpiffeId::parse(text)?.trust_domain().to_string());
    }
    check_trust_domain(text)?;
    Ok(text.to_string())
}

/// The CA certificates of one trust domain, with their parsed trust anchors.
pub struct Bundle {
    pub certs: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl Bundle {
    fn parse(der: &[u8]) -> Result<Bundle, String> {
        let certs =
            split_der(der).map_err(|e| format!("x509bundle: cannot parse certificate: {e}"))?;
        let mut anchors = Vec::with_capacity(certs.len());
        for cert in &certs {
            let anchor = webpki::anchor_from_trusted_cert(cert)
                .map_err(|e| format!("x509bundle: cannot parse certificate: {e:?}"))?;
            anchors.push(anchor.to_owned());
        }
        Ok(Bundle { certs, anchors })
    }
}

/// Bundles by trust domain: this workload's own and the federated ones.
#[derive(Default)]
pub struct BundleSet {
    by_domain: BTreeMap<String, Bundle>,
}

impl BundleSet {
    pub fn get(&self, trust_domain: &str) -> Option<&Bundle> {
        self.by_domain.get(trust_domain)
    }

    /// The trust domains, sorted.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.by_domain.keys().map(String::as_str)
    }

    /// Every CA certificate of every trust domain, for callers that need one flat pool.
    pub fn all_certs(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.by_domain.values().flat_map(|b| b.certs.iter())
    }
}

/// One decoded, checked update: the identity served (the first SVID) and every bundle.
pub struct X509Context {
    pub identity: Arc<CertifiedKey>,
    pub spiffe_id: SpiffeId,
    pub bundles: BundleSet,
}

impl fmt::Debug for X509Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Context")
            .field("spiffe_id", &self.spiffe_id.as_str())
            .field(
                "bundles",
                &self.bundles.by_domain.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Parses and checks a whole response. Any failure rejects the whole message (the caller
/// keeps the previous state).
pub fn parse_response(
    msg: &X509SvidResponse,
    provider: &CryptoProvider,
) -> Result<X509Context, String> {
    if msg.svids.is_empty() {
        return Err("no SVIDs in response".into());
    }
    let mut first = None;
    let mut hints = Vec::new();
    let mut bundles = BundleSet::default();
    for svid in &msg.svids {
        if !svid.hint.is_empty() {
            if hints.contains(&&svid.hint) {
                continue;
            }
            hints.push(&svid.hint);
        }
        let domain = trust_domain_of(&svid.spiffe_id)?;
        let checked = parse_svid(&svid.x509_svid, &svid.x509_svid_key, provider)?;
        bundles
            .by_domain
            .insert(domain, Bundle::parse(&svid.bundle)?);
        first.get_or_insert(checked);
    }
    for (name, der) in &msg.federated_bundles {
        let domain = trust_domain_of(name)?;
        bundles.by_domain.insert(domain, Bundle::parse(der)?);
    }
    let (identity, spiffe_id) = first.ok_or("no SVIDs in response")?;
    Ok(X509Context {
        identity,
        spiffe_id,
        bundles,
    })
}

/// One SVID: the certificate chain (leaf first) and its PKCS#8 key, checked as the X.509-SVID
/// standard requires of what a workload serves.
fn parse_svid(
    chain_der: &[u8],
    key_der: &[u8],
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, SpiffeId), String> {
    let chain = split_der(chain_der)
        .map_err(|e| format!("x509svid: cannot parse DER encoded certificate: {e}"))?;
    let parsed = chain
        .iter()
        .map(|c| Certificate::from_der(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(
            |_| "x509svid: cannot parse DER encoded certificate: x509: malformed certificate",
        )?;
    let invalid = |e: String| format!("x509svid: certificate validation failed: {e}");
    let Some((leaf, signers)) = parsed.split_first() else {
        return Err(invalid("no certificates found".into()));
    };
    let id = leaf_id(leaf)
        .map_err(|e| invalid(format!("cannot get leaf certificate SPIFFE ID: {e}")))?;
    if id.path().is_empty() {
        return Err(invalid(
            "leaf certificate SPIFFE ID must have a non-root path".into(),
        ));
    }
    let (is_ca, usage) = ca_and_usage(leaf).map_err(&invalid)?;
    if is_ca {
        return Err(invalid(
            "leaf certificate must not have CA flag set to true".into(),
        ));
    }
    if !usage.contains(KeyUsages::DigitalSignature) {
        return Err(invalid(
            "leaf certificate must have 'digitalSignature' set as key usage".into(),
        ));
    }
    if usage.contains(KeyUsages::KeyCertSign) {
        return Err(invalid(
            "leaf certificate must not have 'keyCertSign' set as key usage".into(),
        ));
    }
    if usage.contains(KeyUsages::CRLSign) {
        return Err(invalid(
            "leaf certificate must not have 'cRLSign' set as key usage".into(),
        ));
    }
    for signer in signers {
        let (is_ca, usage) = ca_and_usage(signer).map_err(&invalid)?;
        if !is_ca {
            return Err(invalid(
                "signing certificate must have CA flag set to true".into(),
            ));
        }
        if !usage.contains(KeyUsages::KeyCertSign) {
            return Err(invalid(
                "signing certificate must have 'keyCertSign' set as key usage".into(),
            ));
        }
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("x509svid: cannot parse DER encoded private key: {e}"))?;
    let certified = CertifiedKey::new(chain, key);
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err(
            "x509svid: private key validation failed: leaf certificate does not match private key"
                .into(),
        );
    }
    Ok((Arc::new(certified), id))
}

/// The leaf's only URI SAN as a SPIFFE ID.
fn leaf_id(leaf: &Certificate) -> Result<SpiffeId, String> {
    let mut uris = Vec::new();
    let sans = leaf
        .tbs_certificate
        .get::<SubjectAltName>()
        .map_err(|_| "x509: malformed subjectAltName")?;
    for name in sans.map(|(_, san)| san.0).unwrap_or_default() {
        if let GeneralName::UniformResourceIdentifier(uri) = name {
            uris.push(uri.to_string());
        }
    }
    match uris.as_slice() {
        [] => Err("certificate contains no URI SAN".into()),
        [one] => SpiffeId::parse(one),
        _ => Err("certificate contains more than one URI SAN".into()),
    }
}

/// keyUsage bits (none when the extension is absent).
#[derive(Clone, Copy)]
struct Usage(Option<KeyUsage>);

impl Usage {
    fn contains(self, bit: KeyUsages) -> bool {
        self.0.is_some_and(|ku| ku.0.contains(bit))
    }
}

/// basicConstraints cA and the keyUsage bits.
fn ca_and_usage(cert: &Certificate) -> Result<(bool, Usage), String> {
    let tbs = &cert.tbs_certificate;
    let is_ca = tbs
        .get::<BasicConstraints>()
        .map_err(|_| "x509: malformed basicConstraints")?
        .is_some_and(|(_, bc)| bc.ca);
    let usage = tbs
        .get::<KeyUsage>()
        .map_err(|_| "x509: malformed keyUsage")?
        .map(|(_, ku)| ku);
    Ok((is_ca, Usage(usage)))
}

/// Splits concatenated DER certificates (each a SEQUENCE with a definite length).
fn split_der(mut der: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let malformed = || "x509: malformed certificate".to_string();
        if der[0] != 0x30 || der.len() < 2 {
            return Err(malformed());
        }
        let (len, header) = match der[1] {
            n @ 0..=0x7f => (usize::from(n), 2),
            0x81..=0x84 => {
                let n = usize::from(der[1] & 0x7f);
                let bytes = der.get(2..2 + n).ok_or_else(malformed)?;
                (
                    bytes
                        .iter()
                        .fold(0usize, |acc, &b| acc << 8 | usize::from(b)),
                    2 + n,
                )
            }
            _ => return Err(malformed()),
        };
        let total = header
            .checked_add(len)
            .filter(|&t| t <= der.len())
            .ok_or_else(malformed)?;
        out.push(CertificateDer::from(der[..total].to_vec()));
        der = &der[total..];
    }
    Ok(out)
}

/// Why a peer's certificate was refused; its text is what the handshake error line shows.
#[derive(Debug)]
pub struct SvidRejected(pub String);

impl fmt::Display for SvidRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SvidRejected {}

/// Accepts any extended key usage: an SVID is verified for what it is, not for a purpose.
struct AnyEku;

impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for id in iter {
            id?;
        }
        Ok(())
    }
}

/// Verifies a peer's presented chain as an X.509-SVID against `bundles`: the leaf's single
/// URI SAN is a SPIFFE ID, the leaf is not a CA and cannot sign certificates or CRLs, and the
/// chain leads (through the presented intermediates) to a CA of the bundle of the leaf's trust
/// domain, at `now`, with any extended key usage. Returns the peer's ID.
pub fn verify_peer(
    bundles: &BundleSet,
    leaf_der: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    provider: &CryptoProvider,
) -> Result<SpiffeId, String> {
    let leaf = Certificate::from_der(leaf_der)
        .map_err(|_| "x509svid: could not get leaf SPIFFE ID: x509: malformed certificate")?;
    let id = leaf_id(&leaf).map_err(|e| format!("x509svid: could not get leaf SPIFFE ID: {e}"))?;
    let (is_ca, usage) = ca_and_usage(&leaf).map_err(|e| format!("x509svid: {e}"))?;
    if is_ca {
        return Err("x509svid: leaf certificate with CA flag set to true".into());
    }
    if usage.contains(KeyUsages::KeyCertSign) {
        return Err("x509svid: leaf certificate with KeyCertSign key usage".into());
    }
    if usage.contains(KeyUsages::CRLSign) {
        return Err("x509svid: leaf certificate with KeyCrlSign key usage".into());
    }
    let Some(bundle) = bundles.get(id.trust_domain()) else {
        return Err(format!(
            "x509svid: could not get X509 bundle: x509bundle: no X.509 bundle for trust domain \"{}\"",
            id.trust_domain()
        ));
    };
    let cert = EndEntityCert::try_from(leaf_der).map_err(|e| {
        format!(
            "x509svid: could not verify leaf certificate: {}",
            x509_text(&e)
        )
    })?;
    cert.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &bundle.anchors,
        intermediates,
        now,
        AnyEku,
        None,
        None,
    )
    .map_err(|e| {
        format!(
            "x509svid: could not verify leaf certificate: {}",
            x509_text(&e)
        )
    })?;
    Ok(id)
}

/// webpki's verdicts in the words of the X.509 verifier SPIFFE users know.
fn x509_text(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        // A CA of the same name but another key is no more an authority than an unknown one.
        E::UnknownIssuer | E::InvalidSignatureForPublicKey => {
            "x509: certificate signed by unknown authority".into()
        }
        E::CertExpired { .. } | E::CertNotValidYet { .. } => {
            "x509: certificate has expired or is not yet valid".into()
        }
        E::BadDer | E::BadDerTime => "x509: malformed certificate".into(),
        other => format!("x509: {other:?}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn spiffe_id_grammar() {
        let ok = SpiffeId::parse("spiffe://example.org/ns/prod/sa-1_x.y").unwrap();
        assert_eq!(ok.trust_domain(), "example.org");
        assert_eq!(ok.path(), "/ns/prod/sa-1_x.y");
        assert_eq!(SpiffeId::parse("spiffe://td").unwrap().path(), "");
        for (bad, why) in [
            ("", "cannot be empty"),
            ("http://td/x", "scheme is missing or invalid"),
            ("SPIFFE://td/x", "scheme is missing or invalid"),
            ("spiffe:///x", "trust domain is missing"),
            ("spiffe://Example.org/x", "trust domain characters"),
            ("spiffe://td:8080/x", "trust domain characters"),
            ("spiffe://td/a//b", "path cannot contain empty segments"),
            ("spiffe://td/a/", "path cannot have a trailing slash"),
            ("spiffe://td/", "path cannot have a trailing slash"),
            ("spiffe://td/a/./b", "path cannot contain dot segments"),
            ("spiffe://td/..", "path cannot contain dot segments"),
            ("spiffe://td/a?b", "path segment characters"),
            ("spiffe://td/a%20b", "path segment characters"),
        ] {
            let e = SpiffeId::parse(bad).unwrap_err();
            assert!(e.starts_with(why), "{bad}: {e}");
        }
        assert_eq!(trust_domain_of("example.org").unwrap(), "example.org");
        assert_eq!(
            trust_domain_of("spiffe://example.org").unwrap(),
            "example.org"
        );
        assert_eq!(trust_domain_of("").unwrap_err(), "trust domain is missing");
    }

    #[test]
    fn split_der_rejects_truncation_and_garbage() {
        let cert = rcgen::generate_simple_self_signed(vec!["a".into()])
            .unwrap()
            .cert;
        let der = cert.der().to_vec();
        let mut two = der.clone();
        two.extend_from_slice(&der);
        assert_eq!(split_der(&two).unwrap().len(), 2);
        assert!(split_der(&two[..two.len() - 1]).is_err());
        assert!(split_der(&[0x30]).is_err());
        assert!(split_der(&[0x02, 0x01, 0x00]).is_err());
        assert!(split_der(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(split_der(&[]).unwrap().is_empty());
    }
}
