//! Certificate material: loading the identity from `--keystore` (PEM, DER, PKCS#12 or JCEKS) or
//! `--cert`/`--key` (docs/behaviour.md §3.2-3.4), the CA bundle or system trust store (3.5), and
//! rendering certificate subjects for logs (13.4). Reads files; owns no sockets and no TLS
//! sessions. Every call re-reads its files, so a reload is just another call.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use base64ct::Encoding;
use der::{Decode, Encode, Tag, Tagged};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::sign::{CertifiedKey, SigningKey};
use x509_cert::Certificate;
use x509_cert::attr::AttributeTypeAndValue;

use crate::config::{IdentitySource, SystemTrust};

/// Files are read up to this size (docs/behaviour.md §3.2).
const MAX_FILE_SIZE: u64 = 50 * 1024 * 1024;

/// Where Go looks for the system bundle on Linux, in order; the first readable one wins.
const SYSTEM_CERT_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Directories whose files are added to the system store when `SSL_CERT_DIR` is unset.
const SYSTEM_CERT_DIRS: &[&str] = &["/etc/ssl/certs", "/etc/pki/tls/certs"];

/// A failure at the certificate-loading boundary: building the TLS contexts at start or on a
/// reload, and `--check`. `Display` is the `<e>` that users see today in
/// `error: unable to load certificates: <e>` and `error reloading TLS configuration: <e>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertError {
    /// The identity (keystore, cert/key, or a back-end's) could not be loaded or used.
    Identity(String),
    /// The trust anchors (`--cacert`, the system store, or a back-end's bundle).
    Trust(String),
    /// The loaded material does not make a TLS configuration.
    Tls(String),
}

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertError::Identity(e) | CertError::Trust(e) | CertError::Tls(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for CertError {}

/// Loads the identity. `Ok(None)` for [`IdentitySource::None`]. Errors are the docs/behaviour.md
/// §3.6 `<e>` texts, e.g. `reading certificate file "<p>": open <p>: no such file or directory` or
/// `parsing X509 key pair: tls: private key does not match public key`. An expired or not-yet-valid
/// leaf is rejected with `certificate "<p>" has expired (not after <time>)` or `certificate "<p>"
/// is not yet valid (not before <time>)`.
///
/// May be called from any thread at any time; it re-reads every file.
pub fn load_identity(
    source: &IdentitySource,
    provider: &CryptoProvider,
) -> Result<Option<Arc<CertifiedKey>>, String> {
    let (blocks, path) = match source {
        IdentitySource::None => return Ok(None),
        #[cfg(feature = "acme")]
        IdentitySource::Acme(_) => {
            return Err("ACME certificates come from the ACME source, not from files".into());
        }
        // Not a file source: `identity::from_config` gives it a source of its own.
        IdentitySource::WorkloadApi { .. } => {
            return Err("the SPIFFE Workload API is not a certificate file".into());
        }
        IdentitySource::Keystore { path, password } => (read_keystore(path, password)?, path),
        IdentitySource::CertKey { cert, key } => {
            let mut blocks = read_pem_file(cert)?;
            blocks.extend(read_pem_file(key)?);
            (blocks, cert)
        }
        // The key is in a token: `pkcs11.rs` reads the chain with `read_pem_chain`.
        IdentitySource::Pkcs11 { .. } => {
            return Err("a PKCS#11 identity is loaded through its module".to_string());
        }
    };
    let certified =
        key_pair(&blocks, provider).map_err(|e| format!("parsing X509 key pair: {e}"))?;
    check_validity(&certified.cert[0], path, SystemTime::now())?;
    Ok(Some(Arc::new(certified)))
}

/// Loads the trust anchors: the PEM bundle at `path`, or the system store when `None`.
/// Errors: `loading trust store: unable to read certificates from CA bundle`,
/// `loading trust store: open <p>: no such file or directory`.
///
/// May be called from any thread at any time; it re-reads every file.
pub fn load_trust(
    path: Option<&Path>,
    system: &SystemTrust,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let result = match path {
        Some(path) => read_file(path).and_then(|data| {
            let certs = certs_from_pem(&data);
            match certs.is_empty() {
                true => Err("unable to read certificates from CA bundle".to_string()),
                false => Ok(certs),
            }
        }),
        None => system_trust(system.file.clone().map(Into::into), system.dir.clone()),
    };
    result.map_err(|e| format!("loading trust store: {e}"))
}

/// The notAfter instant of a DER certificate; `None` if it cannot be parsed.
pub fn not_after(cert_der: &[u8]) -> Option<SystemTime> {
    let cert = Certificate::from_der(cert_der).ok()?;
    Some(cert.tbs_certificate.validity.not_after.to_system_time())
}

/// The subject of a DER certificate in the reference's RFC 2253-like form (docs/behaviour.md
/// §13.4), e.g. `CN=server,OU=servers,O=Acme,C=US`. Unparseable input renders as an empty string.
pub fn subject_string(cert_der: &[u8]) -> String {
    match Certificate::from_der(cert_der) {
        Ok(cert) => render_name(&cert.tbs_certificate.subject),
        Err(_) => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Files

/// Reads a whole file (capped at 50 MiB) with Go-style error texts: `open <p>: <errno text>`.
fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let file =
        File::open(path).map_err(|e| format!("open {}: {}", path.display(), os_error(&e)))?;
    let mut data = Vec::new();
    file.take(MAX_FILE_SIZE)
        .read_to_end(&mut data)
        .map_err(|e| format!("read {}: {}", path.display(), os_error(&e)))?;
    Ok(data)
}

/// An OS error as Go prints it: `no such file or directory`, without `(os error 2)`.
fn os_error(e: &io::Error) -> String {
    let Some(code) = e.raw_os_error() else {
        return e.to_string();
    };
    let text = io::Error::from_raw_os_error(code).to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The certificate chain of a PKCS#11 identity (docs/behaviour.md §3.8): every `CERTIFICATE`
/// block of the PEM file at `path`, in order, whatever the file's name or other blocks. Errors:
/// `open <p>: …`, `error reading file '<p>', no certificates found` (no PEM block at all),
/// `no certificates found in file '<p>'` (PEM blocks but no certificate), and
/// `error reading file '<p>': x509: malformed certificate`.
pub fn read_pem_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = read_file(path)?;
    let blocks = pem_file_blocks(path, &data)?;
    let mut chain = Vec::new();
    for block in blocks.into_iter().filter(|b| b.label == CERTIFICATE) {
        if Certificate::from_der(&block.der).is_err() {
            return Err(format!(
                "error reading file '{}': x509: malformed certificate",
                path.display()
            ));
        }
        chain.push(CertificateDer::from(block.der));
    }
    if chain.is_empty() {
        return Err(format!(
            "no certificates found in file '{}'",
            path.display()
        ));
    }
    Ok(chain)
}

/// `--cert`/`--key` files, and `--keystore` files in PEM format.
fn read_pem_file(path: &Path) -> Result<Vec<Block>, String> {
    let data = read_file(path).map_err(|e| reading(path, &e))?;
    pem_file_blocks(path, &data)
}

fn pem_file_blocks(path: &Path, data: &[u8]) -> Result<Vec<Block>, String> {
    let blocks = pem_blocks(data);
    if blocks.is_empty() {
        return Err(format!(
            "error reading file '{}', no certificates found",
            path.display()
        ));
    }
    Ok(blocks)
}

fn reading(path: &Path, e: &str) -> String {
    format!("reading certificate file \"{}\": {e}", path.display())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pem,
    Pkcs12,
    Jceks,
    Der,
}

/// docs/behaviour.md §3.3: the extension first, then the magic bytes.
fn detect_format(path: &Path, data: &[u8]) -> Result<Format, String> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pem" | "crt" | "p7b" | "p7c" => return Ok(Format::Pem),
        "p12" | "pfx" => return Ok(Format::Pkcs12),
        "jceks" | "jks" => return Ok(Format::Jceks),
        "der" => return Ok(Format::Der),
        _ => {}
    }
    match data {
        [0xCE, 0xCE, 0xCE, 0xCE, ..] | [0xFE, 0xED, 0xFE, 0xED, ..] => Ok(Format::Jceks),
        [0x2D, 0x2D, 0x2D, 0x2D, ..] | [0x43, 0x4F, 0x4E, 0x4E, ..] => Ok(Format::Pem),
        [0x30, 0x82, 0x03, _, ..] => Ok(Format::Der),
        [0x30, 0x82, _, _, ..] => Ok(Format::Pkcs12),
        _ => Err(format!(
            "failed to detect format for '{}': unable to guess file format",
            path.display()
        )),
    }
}

/// `--keystore`: detects the format and returns PEM-equivalent blocks.
fn read_keystore(path: &Path, password: &str) -> Result<Vec<Block>, String> {
    let data = read_file(path).map_err(|e| reading(path, &e))?;
    keystore_blocks(path, data, password)
}

/// Decodes keystore bytes as if read from `path` (whose name picks the format) into an
/// identity. This is the loader behind `--keystore` without the file I/O, for the fuzz targets.
pub fn identity_from_keystore_bytes(
    path: &Path,
    data: Vec<u8>,
    password: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    key_pair(&keystore_blocks(path, data, password)?, provider)
}

fn keystore_blocks(path: &Path, data: Vec<u8>, password: &str) -> Result<Vec<Block>, String> {
    let format = detect_format(path, &data).map_err(|e| reading(path, &e))?;
    let failed = |e: String| reading(path, &format!("failed to parse '{}': {e}", path.display()));
    match format {
        Format::Pem => pem_file_blocks(path, &data),
        Format::Der => {
            Certificate::from_der(&data).map_err(|e| failed(format!("x509: {e}")))?;
            Ok(vec![Block::new(CERTIFICATE, data)])
        }
        Format::Jceks => {
            let blocks = jceks_blocks(&data, password).map_err(failed)?;
            if blocks.is_empty() {
                return Err(format!(
                    "error reading file '{}', no certificates found",
                    path.display()
                ));
            }
            Ok(blocks)
        }
        Format::Pkcs12 => {
            let blocks = pkcs12_blocks(&data, password)
                .map_err(|e| failed(format!("unable to read keystore: {e}")))?;
            if blocks.is_empty() {
                return Err(format!(
                    "error reading file '{}', no certificates found",
                    path.display()
                ));
            }
            Ok(blocks)
        }
    }
}

/// A JCEKS/JKS store as blocks, in the decoder's order (trusted certificates first, then each
/// key with its chain), so the key-pair rules below pick leaf and key as the reference does.
#[cfg(feature = "jceks")]
fn jceks_blocks(data: &[u8], password: &str) -> Result<Vec<Block>, String> {
    let blocks = crate::jks::decode(data, password)?;
    Ok(blocks
        .into_iter()
        .map(|b| match b {
            crate::jks::Block::Certificate(der) => Block::new(CERTIFICATE, der),
            crate::jks::Block::PrivateKey(der) => Block::new("PRIVATE KEY", der),
        })
        .collect())
}

#[cfg(not(feature = "jceks"))]
fn jceks_blocks(_data: &[u8], _password: &str) -> Result<Vec<Block>, String> {
    Err("JCEKS/JKS keystores are not supported by this build; convert to PKCS#12".to_string())
}

#[cfg(feature = "pkcs12")]
fn pkcs12_blocks(data: &[u8], password: &str) -> Result<Vec<Block>, String> {
    let contents = crate::pkcs12::decode(data, password)?;
    if contents.keys.len() > 1 {
        return Err(format!(
            "pkcs12: expected exactly one private key, found {}",
            contents.keys.len()
        ));
    }
    let certs = contents
        .certs
        .into_iter()
        .map(|c| Block::new(CERTIFICATE, c));
    let keys = contents
        .keys
        .into_iter()
        .map(|k| Block::new("PRIVATE KEY", k));
    Ok(certs.chain(keys).collect())
}

#[cfg(not(feature = "pkcs12"))]
fn pkcs12_blocks(_data: &[u8], _password: &str) -> Result<Vec<Block>, String> {
    Err("pkcs12: support not compiled in (feature \"pkcs12\")".to_string())
}

// ---------------------------------------------------------------------------------------------
// PEM

const CERTIFICATE: &str = "CERTIFICATE";

/// One PEM block (or its equivalent from a binary keystore).
#[derive(Debug, Clone)]
struct Block {
    label: String,
    der: Vec<u8>,
}

impl Block {
    fn new(label: &str, der: Vec<u8>) -> Block {
        Block {
            label: label.to_string(),
            der,
        }
    }
}

/// All well-formed PEM blocks, in order, like repeated Go `pem.Decode`: text outside blocks is
/// ignored, a malformed block is skipped, RFC 1421 headers (encrypted PEM) are dropped so the
/// body then fails to parse as a key.
fn pem_blocks(data: &[u8]) -> Vec<Block> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(start) = find_line_start(rest, BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let line_end = after
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(after.len());
        let line = trim_ascii_end(&after[..line_end]);
        let next = &after[line_end..];
        let Some(label) = line.strip_suffix(b"-----") else {
            rest = next;
            continue;
        };
        let end_marker = [b"-----END ".as_slice(), label, b"-----"].concat();
        let Some(end) = find_line_start(next, &end_marker) else {
            rest = next;
            continue;
        };
        let body = &next[..end];
        let after_end = &next[end + end_marker.len()..];
        match (std::str::from_utf8(label), decode_pem_body(body)) {
            (Ok(label), Some(der)) => {
                out.push(Block::new(label, der));
                rest = after_end;
            }
            _ => rest = next,
        }
    }
    out
}

/// Finds `needle` at the start of `hay` or right after a `\n`.
fn find_line_start(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while from + needle.len() <= hay.len() {
        let i = hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)?
            + from;
        if i == 0 || hay[i - 1] == b'\n' {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

fn trim_ascii_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &s[..end]
}

/// Decodes the base64 body after skipping leading `Key: value` header lines (Go `pem.Decode`).
fn decode_pem_body(body: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    // The body starts with the line break that ends the BEGIN line.
    let text = text.strip_prefix('\n').unwrap_or(text);
    let b64: String = text
        .lines()
        .skip_while(|line| line.contains(':'))
        .flat_map(str::chars)
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64ct::Base64::decode_vec(&b64).ok()
}

/// Every parseable `CERTIFICATE` block (Go `AppendCertsFromPEM`).
fn certs_from_pem(data: &[u8]) -> Vec<CertificateDer<'static>> {
    pem_blocks(data)
        .into_iter()
        .filter(|b| b.label == CERTIFICATE && Certificate::from_der(&b.der).is_ok())
        .map(|b| CertificateDer::from(b.der))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Key pair (Go tls.X509KeyPair semantics)

/// Builds the chain and loads the key; errors are Go's `tls: …` texts without the
/// `parsing X509 key pair: ` prefix.
fn key_pair(blocks: &[Block], provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let mut chain = Vec::new();
    let mut skipped = Vec::new();
    for block in blocks {
        match block.label == CERTIFICATE {
            true => chain.push(CertificateDer::from(block.der.clone())),
            false => skipped.push(block.label.as_str()),
        }
    }
    if chain.is_empty() {
        if skipped.is_empty() {
            return Err("tls: failed to find any PEM data in certificate input".to_string());
        }
        if skipped.len() == 1 && skipped[0].ends_with("PRIVATE KEY") {
            return Err(
                "tls: failed to find certificate PEM data in certificate input, but did \
                        find a private key; PEM inputs may have been switched"
                    .to_string(),
            );
        }
        return Err(format!(
            "tls: failed to find \"CERTIFICATE\" PEM block in certificate input after skipping \
             PEM blocks of the following types: [{}]",
            skipped.join(" ")
        ));
    }

    let mut skipped = Vec::new();
    let mut key_block = None;
    for block in blocks {
        if block.label == "PRIVATE KEY" || block.label.ends_with(" PRIVATE KEY") {
            key_block = Some(block);
            break;
        }
        skipped.push(block.label.as_str());
    }
    let Some(key_block) = key_block else {
        if skipped.len() == 1 && skipped[0] == CERTIFICATE {
            return Err(
                "tls: found a certificate rather than a key in the PEM for the private key"
                    .to_string(),
            );
        }
        return Err(format!(
            "tls: failed to find PEM block with type ending in \"PRIVATE KEY\" in key input \
             after skipping PEM blocks of the following types: [{}]",
            skipped.join(" ")
        ));
    };
    let key = load_key(key_block, provider)?;

    let leaf = Certificate::from_der(&chain[0]).map_err(|e| format!("x509: {e}"))?;
    if let Some(key_spki) = key.public_key() {
        let cert_spki = &leaf.tbs_certificate.subject_public_key_info;
        let key_spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(key_spki.as_ref())
            .map_err(|_| "tls: failed to parse private key".to_string())?;
        if key_spki.algorithm.oid != cert_spki.algorithm.oid {
            return Err("tls: private key type does not match public key type".to_string());
        }
        if &key_spki != cert_spki {
            return Err("tls: private key does not match public key".to_string());
        }
    }
    Ok(CertifiedKey::new(chain, key))
}

/// Loads the key like Go's `parsePrivateKey`: the label's encoding first, then PKCS#1, PKCS#8
/// and SEC1.
fn load_key(block: &Block, provider: &CryptoProvider) -> Result<Arc<dyn SigningKey>, String> {
    let der = &block.der;
    let pkcs1 = || PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der.clone()));
    let pkcs8 = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.clone()));
    let sec1 = || PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der.clone()));
    let order: [&dyn Fn() -> PrivateKeyDer<'static>; 3] = match block.label.as_str() {
        "RSA PRIVATE KEY" => [&pkcs1, &pkcs8, &sec1],
        "EC PRIVATE KEY" => [&sec1, &pkcs8, &pkcs1],
        _ => [&pkcs8, &pkcs1, &sec1],
    };
    for make in order {
        if let Ok(key) = provider.key_provider.load_private_key(make()) {
            return Ok(key);
        }
    }
    Err("tls: failed to parse private key".to_string())
}

/// Rejects a leaf outside its validity period, naming the file.
pub(crate) fn check_validity(leaf: &[u8], path: &Path, now: SystemTime) -> Result<(), String> {
    let Ok(cert) = Certificate::from_der(leaf) else {
        return Ok(());
    };
    let validity = &cert.tbs_certificate.validity;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    if now > validity.not_after.to_unix_duration() {
        return Err(format!(
            "certificate \"{}\" has expired (not after {})",
            path.display(),
            validity.not_after.to_date_time()
        ));
    }
    if now < validity.not_before.to_unix_duration() {
        return Err(format!(
            "certificate \"{}\" is not yet valid (not before {})",
            path.display(),
            validity.not_before.to_date_time()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// System trust store (Go crypto/x509 root_unix.go)

fn system_trust(
    cert_file: Option<std::ffi::OsString>,
    cert_dir: Option<std::ffi::OsString>,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |certs: Vec<CertificateDer<'static>>| {
        for cert in certs {
            if seen.insert(cert.as_ref().to_vec()) {
                roots.push(cert);
            }
        }
    };
    let mut first_err = None;

    let files: Vec<PathBuf> = match cert_file {
        Some(f) => vec![PathBuf::from(f)],
        None => SYSTEM_CERT_FILES.iter().map(PathBuf::from).collect(),
    };
    for file in &files {
        match read_file(file) {
            Ok(data) => {
                add(certs_from_pem(&data));
                break;
            }
            Err(e) => {
                let missing =
                    matches!(File::open(file), Err(ref io) if io.kind() == io::ErrorKind::NotFound);
                if first_err.is_none() && !missing {
                    first_err = Some(e);
                }
            }
        }
    }

    let dirs: Vec<PathBuf> = match cert_dir {
        Some(d) => std::env::split_paths(&d).collect(),
        None => SYSTEM_CERT_DIRS.iter().map(PathBuf::from).collect(),
    };
    for dir in &dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                if first_err.is_none() && e.kind() != io::ErrorKind::NotFound {
                    first_err = Some(format!("open {}: {}", dir.display(), os_error(&e)));
                }
                continue;
            }
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for path in names {
            // Symlinks within the same directory (hash links) are duplicates; Go skips them.
            if let Ok(target) = std::fs::read_link(&path) {
                if target
                    .parent()
                    .is_none_or(|p| p.as_os_str().is_empty() || p == dir)
                {
                    continue;
                }
            }
            if let Ok(data) = read_file(&path) {
                add(certs_from_pem(&data));
            }
        }
    }

    match (roots.is_empty(), first_err) {
        (true, Some(e)) => Err(e),
        _ => Ok(roots),
    }
}

// ---------------------------------------------------------------------------------------------
// Subject rendering (Go pkix.Name.String)

/// Standard attributes in render order, with their names (docs/behaviour.md §13.4).
const NAMED: &[(&str, &str)] = &[
    ("2.5.4.5", "SERIALNUMBER"),
    ("2.5.4.3", "CN"),
    ("2.5.4.11", "OU"),
    ("2.5.4.10", "O"),
    ("2.5.4.17", "POSTALCODE"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.6", "C"),
];

/// Renders a name like Go: the nine standard attributes in fixed order (CN and SERIALNUMBER
/// keep only their last value, the others join their values with `+`), then every other
/// attribute in reverse order of appearance as `<oid>=#<hex DER>`.
pub(crate) fn render_name(name: &x509_cert::name::Name) -> String {
    let atvs: Vec<&AttributeTypeAndValue> = name.0.iter().flat_map(|rdn| rdn.0.iter()).collect();
    let mut rdns: Vec<String> = Vec::new();
    for (oid, label) in NAMED {
        let values: Vec<String> = atvs
            .iter()
            .filter(|atv| atv.oid.to_string() == *oid)
            .filter_map(|atv| attribute_string(&atv.value))
            .map(|v| format!("{label}={}", escape_value(&v)))
            .collect();
        let values = match *label {
            "CN" | "SERIALNUMBER" => values.into_iter().last().into_iter().collect(),
            _ => values,
        };
        if !values.is_empty() {
            rdns.push(values.join("+"));
        }
    }
    for atv in atvs.iter().rev() {
        let oid = atv.oid.to_string();
        if NAMED.iter().any(|(o, _)| *o == oid) {
            continue;
        }
        rdns.push(match attribute_string(&atv.value) {
            Some(v) => format!("{oid}=#{}", hex(&go_marshal_string(&v))),
            None => match atv.value.to_der() {
                Ok(der) => format!("{oid}=#{}", hex(&der)),
                Err(_) => format!("{oid}="),
            },
        });
    }
    rdns.join(",")
}

/// Decodes an attribute value the way Go's `parseASN1String` does: the one decoder for subject
/// rendering and the ACL's CN/OU. `None` for what Go refuses, e.g. an odd-length BMPString.
pub(crate) fn attribute_string(value: &der::Any) -> Option<String> {
    let bytes = value.value();
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(bytes).ok().map(str::to_string)
        }
        Tag::TeletexString => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// RFC 2253 escaping as Go does it.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, c) in value.char_indices() {
        let escape = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => i == 0 || i == last,
            '#' => i == 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Go `asn1.Marshal` of a string: PrintableString when every character allows it, else
/// UTF8String.
fn go_marshal_string(value: &str) -> Vec<u8> {
    let printable = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b));
    let tag = if printable { 0x13 } else { 0x0c };
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend(&bytes[skip..]);
    }
    out.extend(value.as_bytes());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Certificate fixtures for the unit tests of this module and `auth.rs`: rcgen certificates,
/// a scratch directory and an `openssl` runner.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType, SignatureAlgorithm};

    /// A fresh, empty scratch directory under the system temp dir.
    pub(crate) fn scratch_dir(tag: &str) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gt-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    /// Runs `openssl` with `args`, panicking with its stderr on failure.
    pub(crate) fn openssl(args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Runs a shell pipeline, returning stdout.
    pub(crate) fn sh(script: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("run sh");
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// A generated certificate with its key.
    pub(crate) struct Cert {
        pub(crate) der: Vec<u8>,
        pub(crate) pem: String,
        /// PKCS#8 PEM.
        pub(crate) key_pem: String,
    }

    impl Cert {
        /// Writes `<name>.crt` and `<name>.key` into `dir`; returns (cert, key) paths.
        pub(crate) fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
            let cert = dir.join(format!("{name}.crt"));
            let key = dir.join(format!("{name}.key"));
            std::fs::write(&cert, &self.pem).expect("write cert");
            std::fs::write(&key, &self.key_pem).expect("write key");
            (cert, key)
        }
    }

    /// What a test leaf should carry.
    #[derive(Default)]
    pub(crate) struct Spec<'a> {
        pub(crate) cn: Option<&'a str>,
        pub(crate) ou: Option<&'a str>,
        pub(crate) dns: &'a [&'a str],
        pub(crate) ips: &'a [&'a str],
        pub(crate) uris: &'a [&'a str],
        pub(crate) expired: bool,
    }

    pub(crate) fn params(spec: &Spec<'_>) -> CertificateParams {
        let mut params = CertificateParams::default();
        if let Some(cn) = spec.cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        if let Some(ou) = spec.ou {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, ou);
        }
        for dns in spec.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*dns).try_into().expect("dns")));
        }
        for ip in spec.ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().expect("ip")));
        }
        for uri in spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().expect("uri")));
        }
        if spec.expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        params
    }

    /// A fresh key. Ed25519 keys come from `openssl genpkey`: OpenSSL 3.0 cannot read the
    /// PKCS#8 v2 keys aws-lc-rs writes, and the PKCS#12 tests feed keys to it.
    pub(crate) fn new_key(alg: &'static SignatureAlgorithm) -> KeyPair {
        if alg == &rcgen::PKCS_ED25519 {
            let pem = openssl(&["genpkey", "-algorithm", "ed25519"]);
            let pem = String::from_utf8(pem).expect("utf-8 PEM");
            return KeyPair::from_pem(&pem).expect("ed25519 key");
        }
        KeyPair::generate_for(alg).expect("keygen")
    }

    /// A self-signed certificate with a fresh key of `alg`.
    pub(crate) fn self_signed(alg: &'static SignatureAlgorithm, spec: &Spec<'_>) -> Cert {
        let key = new_key(alg);
        let cert = params(spec).self_signed(&key).expect("self-sign");
        Cert {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A CA and a leaf signed by it.
    pub(crate) fn ca_and_leaf(alg: &'static SignatureAlgorithm, spec: &Spec<'_>) -> (Cert, Cert) {
        let ca_key = new_key(alg);
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Test CA");
        ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
        let ca = Cert {
            der: ca_cert.der().to_vec(),
            pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);
        let key = new_key(alg);
        let cert = params(spec).signed_by(&key, &issuer).expect("sign");
        let leaf = Cert {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        (ca, leaf)
    }
}

#[cfg(test)]
#[path = "certs_tests.rs"]
mod tests;
