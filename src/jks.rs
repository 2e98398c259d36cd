//! JCEKS and JKS keystores (Java's `-storetype JCEKS|JKS`) for `--keystore`: byte-level
//! decoding of the file, its integrity digest and the JCEKS key protection
//! (PBEWithMD5AndTripleDES). Returns certificates and PKCS#8 keys as a block list in the order
//! the reference produces them; never matches keys to certificates (the caller's key-pair rules
//! do) and never reads files.
//!
//! File layout (big-endian): magic `CECECECE` (JCEKS) or `FEEDFEED` (JKS), version 2, an entry
//! count, the entries, then a SHA-1 digest of (password as UTF-16BE, `Mighty Aphrodite`,
//! every preceding byte). Entries are private keys (an `EncryptedPrivateKeyInfo` and a
//! certificate chain), trusted certificates, or secret keys (refused). Structure errors are
//! reported before the digest is checked, key decryption errors after.
//!
//! JKS private keys use Sun's proprietary XOR key protector; like the reference this decoder
//! refuses them with a hint to convert the store to PKCS#12, so a JKS store is only good for
//! trusted certificates.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode, Reader, SliceReader};
use md5::{Digest, Md5};
use sha1::Sha1;
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifierOwned;

/// One PEM-equivalent block of the decoded store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A DER certificate.
    Certificate(Vec<u8>),
    /// A PKCS#8 `PrivateKeyInfo` DER.
    PrivateKey(Vec<u8>),
}

/// Longest blob (key or certificate) accepted.
const MAX_BLOB: usize = 20 * 1024 * 1024;
/// Most PBE iterations accepted: bounds the CPU a hostile file can cost.
const MAX_ITERATIONS: u32 = 10_000_000;

const MAGIC_JCEKS: u32 = 0xCECE_CECE;
const MAGIC_JKS: u32 = 0xFEED_FEED;

const TAG_PRIVATE_KEY: u32 = 1;
const TAG_TRUSTED_CERT: u32 = 2;
const TAG_SECRET_KEY: u32 = 3;

const OID_JCEKS_PBE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.42.2.19.1");
const OID_JKS_PROTECTOR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.42.2.17.1.1");

const DECRYPTION_FAILED: &str = "decryption failed with the given password";

/// Decodes a JCEKS or JKS store with `password` (store and key password alike). The blocks
/// are, in order: every trusted certificate (aliases in byte-wise ascending order), then for
/// each private-key entry (same order) its key followed by its chain as stored.
///
/// Errors are the reference's texts, e.g. `unable to parse keystore: integrity protection
/// violation: keystore was tampered with or password was incorrect` or `unable to recover
/// private key 'srv': recovering private key "srv": decryption failed with the given password`.
pub fn decode(data: &[u8], password: &str) -> Result<Vec<Block>, String> {
    let entries = parse(data, password).map_err(|e| format!("unable to parse keystore: {e}"))?;
    let mut trusted = Vec::new();
    let mut keys = Vec::new();
    for (alias, entry) in entries {
        match entry {
            Entry::Trusted(cert) => trusted.push(Block::Certificate(cert)),
            Entry::Key { protected, chain } => {
                let fail = |e: String| format!("unable to recover private key '{alias}': {e}");
                if chain.is_empty() {
                    return Err(fail(
                        "invalid JCEKS data: key has no certificates".to_string(),
                    ));
                }
                let key = recover_key(&protected, password)
                    .map_err(|e| fail(format!("recovering private key \"{alias}\": {e}")))?;
                keys.push(Block::PrivateKey(key));
                keys.extend(chain.into_iter().map(Block::Certificate));
            }
        }
    }
    trusted.extend(keys);
    Ok(trusted)
}

enum Entry {
    Key {
        protected: Vec<u8>,
        chain: Vec<Vec<u8>>,
    },
    Trusted(Vec<u8>),
}

/// The entries by alias (a later entry replaces an earlier one with the same alias), sorted by
/// alias; the integrity digest is checked after the structure.
fn parse(data: &[u8], password: &str) -> Result<Vec<(String, Entry)>, String> {
    let integrity_password = utf16_password(password).map_err(|e| {
        format!("encoding integrity password: password is unsupported by JCEKS format: {e}")
    })?;
    let invalid = |e: String| format!("invalid JCEKS data: {e}");
    let mut r = ByteReader { data, pos: 0 };
    let magic = r
        .u32()
        .map_err(|e| invalid(format!("reading magic: {e}")))?;
    if magic != MAGIC_JCEKS && magic != MAGIC_JKS {
        return Err(invalid(format!(
            "unexpected magic: {magic:08x} != ({MAGIC_JCEKS:08x} || {MAGIC_JKS:08x})"
        )));
    }
    let version = r
        .u32()
        .map_err(|e| invalid(format!("reading version: {e}")))?;
    if version != 2 {
        return Err(invalid(format!("unexpected version: {version} != 2")));
    }
    let count = r
        .i32()
        .map_err(|_| invalid("failed to read entry count".to_string()))?;
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for i in 0..count.max(0) {
        let tag = r
            .u32()
            .map_err(|_| invalid(format!("failed to read entry {i} tag")))?;
        let (alias, entry) = match tag {
            TAG_PRIVATE_KEY => private_key_entry(&mut r)
                .map_err(|e| invalid(format!("failed to parse private key entry {i}: {e}")))?,
            TAG_TRUSTED_CERT => trusted_cert_entry(&mut r)
                .map_err(|e| invalid(format!("failed to parse certificate entry {i}: {e}")))?,
            TAG_SECRET_KEY => {
                return Err("unsupported JCEKS data: file contains a secret key entry".into());
            }
            other => return Err(format!("unsupported JCEKS data: unknown entry tag {other}")),
        };
        entries.retain(|(a, _)| *a != alias);
        entries.push((alias, entry));
    }
    let covered = &data[..r.pos];
    let stored = r
        .take(20)
        .map_err(|e| invalid(format!("failed to read integrity checksum: {e}")))?;
    let mut digest = Sha1::new();
    digest.update(&integrity_password);
    digest.update(b"Mighty Aphrodite");
    digest.update(covered);
    if digest.finalize().as_slice() != stored {
        return Err(
            "integrity protection violation: keystore was tampered with or password was incorrect"
                .to_string(),
        );
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

fn private_key_entry(r: &mut ByteReader<'_>) -> Result<(String, Entry), String> {
    let alias = r.string().map_err(|e| format!("reading alias: {e}"))?;
    r.take(8).map_err(|e| format!("reading timestamp: {e}"))?;
    let protected = r
        .blob()
        .map_err(|e| format!("reading protected key: {e}"))?;
    let count = r
        .i32()
        .map_err(|e| format!("reading certificate count: {e}"))?;
    let mut chain = Vec::new();
    for i in 0..count.max(0) {
        chain.push(certificate(r).map_err(|e| format!("reading certificate {i}: {e}"))?);
    }
    Ok((alias, Entry::Key { protected, chain }))
}

fn trusted_cert_entry(r: &mut ByteReader<'_>) -> Result<(String, Entry), String> {
    let alias = r.string().map_err(|e| format!("reading alias: {e}"))?;
    r.take(8).map_err(|e| format!("reading timestamp: {e}"))?;
    let cert = certificate(r).map_err(|e| format!("reading certificate: {e}"))?;
    Ok((alias, Entry::Trusted(cert)))
}

/// A certificate: its type (must be `X.509`) and DER bytes (must parse).
fn certificate(r: &mut ByteReader<'_>) -> Result<Vec<u8>, String> {
    let kind = r.string()?;
    if kind != "X.509" {
        return Err(format!(
            "unsupported JCEKS data: unable to handle certificate type: {kind}"
        ));
    }
    let der = r.blob()?;
    Certificate::from_der(&der)
        .map_err(|_| "failed to parse certificate: x509: malformed certificate".to_string())?;
    Ok(der)
}

/// The store password as UTF-16BE code units for the integrity digest.
fn utf16_password(password: &str) -> Result<Vec<u8>, &'static str> {
    if password.is_empty() {
        return Err("empty passwords are not interoperable");
    }
    if password.chars().any(|c| u32::from(c) > 0xFFFF) {
        return Err("password contains unsupported codepoints");
    }
    Ok(password.encode_utf16().flat_map(u16::to_be_bytes).collect())
}

// ---------------------------------------------------------------------------------------------
// Key protection

/// Decrypts an `EncryptedPrivateKeyInfo` into a PKCS#8 `PrivateKeyInfo`.
fn recover_key(protected: &[u8], password: &str) -> Result<Vec<u8>, String> {
    let (algorithm, ciphertext) = encrypted_private_key_info(protected).map_err(|e| {
        format!("invalid JCEKS data: failed to parse private key as DER: asn1: {e}")
    })?;
    match algorithm.oid {
        OID_JCEKS_PBE => {}
        OID_JKS_PROTECTOR => {
            return Err(format!(
                "unsupported JCEKS data: JKS private-key protection ({OID_JKS_PROTECTOR}) is not \
                 supported; convert the keystore to PKCS#12 with: keytool -importkeystore \
                 -srckeystore in.jks -destkeystore out.p12 -deststoretype pkcs12"
            ));
        }
        other => {
            return Err(format!(
                "unsupported JCEKS data: unsupported encrypted-private-key algorithm: {other}"
            ));
        }
    }
    decrypt(&algorithm, &ciphertext, password).ok_or_else(|| DECRYPTION_FAILED.to_string())
}

fn encrypted_private_key_info(der: &[u8]) -> der::Result<(AlgorithmIdentifierOwned, Vec<u8>)> {
    let mut reader = SliceReader::new(der)?;
    let out = reader.sequence(|r| {
        let algorithm = AlgorithmIdentifierOwned::decode(r)?;
        let data = OctetString::decode(r)?;
        Ok((algorithm, data.into_bytes()))
    })?;
    reader.finish(out)
}

/// PBEWithMD5AndTripleDES (Sun's JCE variant): two MD5 chains over the salt halves derive the
/// 3DES key and CBC IV. `None` for any failure: they all read as a wrong password.
fn decrypt(
    algorithm: &AlgorithmIdentifierOwned,
    ciphertext: &[u8],
    password: &str,
) -> Option<Vec<u8>> {
    let password = password.as_bytes();
    if password.is_empty() || !password.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return None;
    }
    let params = algorithm.parameters.as_ref()?.to_der().ok()?;
    let (salt, iterations) = pbe_params(&params).ok()?;
    let mut salt: [u8; 8] = salt.try_into().ok()?;
    if !(1..=MAX_ITERATIONS).contains(&iterations) {
        return None;
    }
    if salt[..4] == salt[4..] {
        salt[..4].reverse();
    }
    let mut derived = [0u8; 32];
    for (half, out) in salt.chunks(4).zip(derived.chunks_mut(16)) {
        let mut state = Md5::new()
            .chain_update(half)
            .chain_update(password)
            .finalize();
        for _ in 1..iterations {
            state = Md5::new()
                .chain_update(state)
                .chain_update(password)
                .finalize();
        }
        out.copy_from_slice(&state);
    }
    let cipher =
        cbc::Decryptor::<des::TdesEde3>::new_from_slices(&derived[..24], &derived[24..]).ok()?;
    let plain = cipher.decrypt_padded_vec_mut::<Pkcs7>(ciphertext).ok()?;
    pkcs8_with_curve(&plain)
}

fn pbe_params(der: &[u8]) -> der::Result<(Vec<u8>, u32)> {
    let mut reader = SliceReader::new(der)?;
    let out = reader.sequence(|r| {
        let salt = OctetString::decode(r)?;
        let iterations = u32::decode(r)?;
        Ok((salt.into_bytes(), iterations))
    })?;
    reader.finish(out)
}

/// Checks that `plain` is a PKCS#8 `PrivateKeyInfo` and returns it. Java writes EC keys with
/// the curve only in the PKCS#8 algorithm parameters; key loaders that want it inside the
/// `ECPrivateKey` too get a copy there.
fn pkcs8_with_curve(plain: &[u8]) -> Option<Vec<u8>> {
    let info = PrivateKeyInfo::from_der(plain).ok()?;
    Some(info.with_ec_curve().unwrap_or_else(|| plain.to_vec()))
}

/// The parts of a PKCS#8 `PrivateKeyInfo` this decoder looks at.
struct PrivateKeyInfo {
    version: u8,
    algorithm: AlgorithmIdentifierOwned,
    key: Vec<u8>,
    /// Attributes and the v2 public key, kept as raw DER.
    rest: Vec<u8>,
}

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

impl PrivateKeyInfo {
    fn from_der(der: &[u8]) -> der::Result<PrivateKeyInfo> {
        let mut reader = SliceReader::new(der)?;
        let out = reader.sequence(|r| {
            let version = u8::decode(r)?;
            let algorithm = AlgorithmIdentifierOwned::decode(r)?;
            let key = OctetString::decode(r)?.into_bytes();
            let rest = r.read_slice(r.remaining_len())?.to_vec();
            Ok(PrivateKeyInfo {
                version,
                algorithm,
                key,
                rest,
            })
        })?;
        reader.finish(out)
    }

    /// For an EC key whose inner `ECPrivateKey` lacks the `[0] parameters` field: the same
    /// `PrivateKeyInfo` with the algorithm's curve OID inserted there. `None` otherwise.
    fn with_ec_curve(&self) -> Option<Vec<u8>> {
        if self.algorithm.oid != OID_EC_PUBLIC_KEY {
            return None;
        }
        let curve = self.algorithm.parameters.as_ref()?.to_der().ok()?;
        // ECPrivateKey ::= SEQUENCE { version INTEGER, privateKey OCTET STRING,
        //                             parameters [0] OPTIONAL, publicKey [1] OPTIONAL }
        let mut reader = SliceReader::new(&self.key).ok()?;
        let (version, private_key, tail) = reader
            .sequence(|r| {
                let version = u8::decode(r)?;
                let private_key = OctetString::decode(r)?;
                let tail = r.read_slice(r.remaining_len())?.to_vec();
                Ok((version, private_key, tail))
            })
            .ok()?;
        if tail.first() == Some(&0xA0) {
            return None;
        }
        let params = tlv(0xA0, &curve);
        let inner = tlv(
            0x30,
            &[
                version.to_der().ok()?,
                private_key.to_der().ok()?,
                params,
                tail,
            ]
            .concat(),
        );
        let outer = tlv(
            0x30,
            &[
                self.version.to_der().ok()?,
                self.algorithm.to_der().ok()?,
                tlv(0x04, &inner),
                self.rest.clone(),
            ]
            .concat(),
        );
        Some(outer)
    }
}

/// A DER tag-length-value with a definite length.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let len = value.len();
    let mut out = vec![tag];
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        0x100..=0xffff => out.extend([0x82, (len >> 8) as u8, len as u8]),
        _ => out.extend([0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(value);
    out
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A cursor with Go `io.ReadFull` error texts: `EOF` when nothing was left, `unexpected EOF`
/// when some but not all of a field was there.
struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let rest = &self.data[self.pos..];
        if rest.len() < n {
            let e = if rest.is_empty() {
                "EOF"
            } else {
                "unexpected EOF"
            };
            return Err(e.to_string());
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, String> {
        self.u32().map(|v| v as i32)
    }

    /// A length-prefixed blob (`i32` length). Negative lengths are invalid and long ones are
    /// refused before anything is allocated.
    fn blob(&mut self) -> Result<Vec<u8>, String> {
        let len = self.i32()?;
        let Ok(len) = usize::try_from(len) else {
            return Err("invalid JCEKS data".to_string());
        };
        if len > MAX_BLOB {
            return Err(format!(
                "JCEKS data too large: data field of size {len} bytes exceeds maximum length of \
                 {MAX_BLOB}"
            ));
        }
        Ok(self.take(len)?.to_vec())
    }

    /// A Java `writeUTF` string: `u16` length and modified UTF-8. Like the reference, a string
    /// cut short by the end of the file is taken as far as it goes; the next field then fails.
    fn string(&mut self) -> Result<String, String> {
        let b = self.take(2)?;
        let len = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let len = len.min(self.data.len() - self.pos);
        let bytes = self.take(len)?;
        Ok(modified_utf8(bytes))
    }
}

/// Decodes Java's modified UTF-8 (NUL as `C0 80`, supplementary characters as surrogate
/// pairs); malformed input becomes U+FFFD.
fn modified_utf8(bytes: &[u8]) -> String {
    let mut units = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let cont = |k: usize| {
            bytes
                .get(i + k)
                .filter(|c| *c & 0xC0 == 0x80)
                .map(|c| u16::from(c & 0x3F))
        };
        if b < 0x80 {
            units.push(u16::from(b));
            i += 1;
        } else if b & 0xE0 == 0xC0 {
            match cont(1) {
                Some(c1) => {
                    units.push((u16::from(b & 0x1F) << 6) | c1);
                    i += 2;
                }
                None => {
                    units.push(0xFFFD);
                    i += 1;
                }
            }
        } else if b & 0xF0 == 0xE0 {
            match (cont(1), cont(2)) {
                (Some(c1), Some(c2)) => {
                    units.push((u16::from(b & 0x0F) << 12) | (c1 << 6) | c2);
                    i += 3;
                }
                _ => {
                    units.push(0xFFFD);
                    i += 1;
                }
            }
        } else {
            units.push(0xFFFD);
            i += 1;
        }
    }
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::OnceLock;

    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;

    const PASS: &str = "changeit";

    /// Keystores made by `keytool` once per test binary (see [`fixtures`]).
    struct Fixtures {
        dir: PathBuf,
        ca: Vec<u8>,
        ec_leaf: Vec<u8>,
        rsa_leaf: Vec<u8>,
    }

    fn run(program: &str, args: &[&str], dir: &Path) {
        let out = Command::new(program)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn keytool(dir: &Path, args: &[&str]) {
        // A quicker JVM start: these runs are short.
        let mut all = vec!["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC"];
        all.extend_from_slice(args);
        run("keytool", &all, dir);
    }

    /// A CA, an ECDSA P-256 and an RSA leaf signed by it (rcgen), turned into PKCS#12 by
    /// openssl and into JCEKS/JKS stores by keytool, the way operators make them.
    fn fixtures() -> &'static Fixtures {
        static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
        FIXTURES.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("gt-jks-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch dir");
            let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
            let mut ca_params = CertificateParams::default();
            ca_params
                .distinguished_name
                .push(DnType::CommonName, "Test CA");
            ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = ca_params.self_signed(&ca_key).expect("ca");
            std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
            let issuer = Issuer::new(ca_params, ca_key);
            let mut leaves = Vec::new();
            for (name, alg) in [
                ("ec", &rcgen::PKCS_ECDSA_P256_SHA256),
                ("rsa", &rcgen::PKCS_RSA_SHA256),
            ] {
                let key = KeyPair::generate_for(alg).expect("keygen");
                let mut params = CertificateParams::default();
                params
                    .distinguished_name
                    .push(DnType::CommonName, format!("server-{name}"));
                let cert = params.signed_by(&key, &issuer).expect("sign");
                std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("write");
                std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem())
                    .expect("write");
                run(
                    "openssl",
                    &[
                        "pkcs12",
                        "-export",
                        "-in",
                        &format!("{name}.crt"),
                        "-inkey",
                        &format!("{name}.key"),
                        "-certfile",
                        "ca.pem",
                        "-name",
                        if name == "ec" { "srv" } else { "rsa" },
                        "-out",
                        &format!("{name}.p12"),
                        "-passout",
                        "pass:changeit",
                    ],
                    &dir,
                );
                leaves.push(cert.der().to_vec());
            }
            let import = |src: &str, dest: &str, kind: &str, extra: &[&str]| {
                let mut args = vec![
                    "-importkeystore",
                    "-srckeystore",
                    src,
                    "-srcstoretype",
                    "pkcs12",
                    "-srcstorepass",
                    PASS,
                    "-destkeystore",
                    dest,
                    "-deststoretype",
                    kind,
                    "-deststorepass",
                    PASS,
                    "-noprompt",
                ];
                args.extend_from_slice(extra);
                keytool(&dir, &args);
            };
            import("ec.p12", "ec.jceks", "JCEKS", &[]);
            std::fs::copy(dir.join("ec.jceks"), dir.join("two.jceks")).expect("copy");
            import("rsa.p12", "two.jceks", "JCEKS", &[]);
            import("ec.p12", "ec.jks", "JKS", &[]);
            import(
                "ec.p12",
                "keypass.jceks",
                "JCEKS",
                &["-destkeypass", "otherpw"],
            );
            std::fs::copy(dir.join("ec.jceks"), dir.join("ec-ca.jceks")).expect("copy");
            let import_ca = |store: &str, kind: &str, alias: &str| {
                keytool(
                    &dir,
                    &[
                        "-importcert",
                        "-keystore",
                        store,
                        "-storetype",
                        kind,
                        "-storepass",
                        PASS,
                        "-alias",
                        alias,
                        "-file",
                        "ca.pem",
                        "-noprompt",
                    ],
                );
            };
            import_ca("ec-ca.jceks", "JCEKS", "ca");
            import_ca("trusted.jceks", "JCEKS", "ca");
            import_ca("trusted.jks", "JKS", "ca");
            std::fs::copy(dir.join("ec.jceks"), dir.join("secret.jceks")).expect("copy");
            keytool(
                &dir,
                &[
                    "-genseckey",
                    "-keystore",
                    "secret.jceks",
                    "-storetype",
                    "JCEKS",
                    "-storepass",
                    PASS,
                    "-alias",
                    "sec",
                    "-keyalg",
                    "AES",
                    "-keysize",
                    "128",
                ],
            );
            for (alias, alg) in [
                ("p384", &["-keyalg", "EC", "-groupname", "secp384r1"][..]),
                ("ed", &["-keyalg", "Ed25519"][..]),
            ] {
                let mut args = vec![
                    "-genkeypair",
                    "-keystore",
                    "gen.jceks",
                    "-storetype",
                    "JCEKS",
                    "-storepass",
                    PASS,
                    "-alias",
                    alias,
                    "-dname",
                    "CN=generated",
                    "-validity",
                    "2",
                ];
                args.extend_from_slice(alg);
                keytool(&dir, &args);
            }
            Fixtures {
                dir,
                ca: ca.der().to_vec(),
                ec_leaf: leaves[0].clone(),
                rsa_leaf: leaves[1].clone(),
            }
        })
    }

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(fixtures().dir.join(name)).expect("fixture")
    }

    fn key(der: &[u8]) -> std::sync::Arc<dyn rustls::sign::SigningKey> {
        rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())))
            .expect("the recovered key loads")
    }

    /// The key's public half is the certificate's.
    fn assert_pair(key_der: &[u8], cert: &[u8]) {
        let cert = Certificate::from_der(cert).expect("cert");
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .expect("spki");
        let key = key(key_der);
        assert_eq!(
            key.public_key().expect("public key").as_ref(),
            spki.as_slice()
        );
    }

    fn blocks(name: &str) -> Vec<Block> {
        decode(&read(name), PASS).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn split(blocks: &[Block]) -> (Vec<&Vec<u8>>, Vec<&Vec<u8>>) {
        let certs = blocks.iter().filter_map(|b| match b {
            Block::Certificate(c) => Some(c),
            Block::PrivateKey(_) => None,
        });
        let keys = blocks.iter().filter_map(|b| match b {
            Block::PrivateKey(k) => Some(k),
            Block::Certificate(_) => None,
        });
        (certs.collect(), keys.collect())
    }

    fn private_key_entries_with_chains() {
        let fx = fixtures();
        let blocks = blocks("ec.jceks");
        let Block::PrivateKey(key) = &blocks[0] else {
            panic!("the key comes first: {blocks:?}")
        };
        assert_eq!(
            blocks[1..],
            [
                Block::Certificate(fx.ec_leaf.clone()),
                Block::Certificate(fx.ca.clone())
            ]
        );
        assert_pair(key, &fx.ec_leaf);
    }

    fn two_keys_in_alias_order_with_both_chains() {
        let fx = fixtures();
        let blocks = blocks("two.jceks");
        // Aliases "rsa" < "srv": the RSA entry supplies the key and the leaf.
        let (certs, keys) = split(&blocks);
        assert_eq!(keys.len(), 2);
        assert_eq!(certs, [&fx.rsa_leaf, &fx.ca, &fx.ec_leaf, &fx.ca]);
        assert!(matches!(blocks[0], Block::PrivateKey(_)));
        assert!(matches!(blocks[3], Block::PrivateKey(_)));
        assert_pair(keys[0], &fx.rsa_leaf);
        assert_pair(keys[1], &fx.ec_leaf);
    }

    fn trusted_certificates_come_first() {
        let fx = fixtures();
        let with_ca = blocks("ec-ca.jceks");
        assert_eq!(with_ca[0], Block::Certificate(fx.ca.clone()));
        assert!(matches!(with_ca[1], Block::PrivateKey(_)));
        assert_eq!(
            with_ca[2..],
            [
                Block::Certificate(fx.ec_leaf.clone()),
                Block::Certificate(fx.ca.clone())
            ]
        );
        assert_eq!(blocks("trusted.jceks"), [Block::Certificate(fx.ca.clone())]);
        assert_eq!(blocks("trusted.jks"), [Block::Certificate(fx.ca.clone())]);
    }

    fn keys_generated_by_keytool() {
        let blocks = blocks("gen.jceks");
        // "ed" < "p384"; each self-signed.
        let (certs, keys) = split(&blocks);
        assert_eq!((certs.len(), keys.len()), (2, 2));
        assert_pair(keys[0], certs[0]);
        assert_pair(keys[1], certs[1]);
        let key = key(keys[1]);
        assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::ECDSA);
    }

    fn password_errors() {
        let data = read("ec.jceks");
        assert_eq!(
            decode(&data, "wrong").unwrap_err(),
            "unable to parse keystore: integrity protection violation: keystore was tampered with \
             or password was incorrect"
        );
        assert_eq!(
            decode(&data, "").unwrap_err(),
            "unable to parse keystore: encoding integrity password: password is unsupported by \
             JCEKS format: empty passwords are not interoperable"
        );
        assert_eq!(
            decode(b"garbage", "").unwrap_err(),
            "unable to parse keystore: encoding integrity password: password is unsupported by \
             JCEKS format: empty passwords are not interoperable",
            "the password is checked before anything is read"
        );
        assert_eq!(
            decode(&data, "\u{1F600}x").unwrap_err(),
            "unable to parse keystore: encoding integrity password: password is unsupported by \
             JCEKS format: password contains unsupported codepoints"
        );
        assert_eq!(
            decode(&read("keypass.jceks"), PASS).unwrap_err(),
            "unable to recover private key 'srv': recovering private key \"srv\": decryption \
             failed with the given password"
        );
    }

    fn refused_entries() {
        assert_eq!(
            decode(&read("secret.jceks"), PASS).unwrap_err(),
            "unable to parse keystore: unsupported JCEKS data: file contains a secret key entry"
        );
        assert_eq!(
            decode(&read("secret.jceks"), "wrong").unwrap_err(),
            "unable to parse keystore: unsupported JCEKS data: file contains a secret key entry",
            "structure errors come before the integrity check"
        );
        assert_eq!(
            decode(&read("ec.jks"), PASS).unwrap_err(),
            "unable to recover private key 'srv': recovering private key \"srv\": unsupported \
             JCEKS data: JKS private-key protection (1.3.6.1.4.1.42.2.17.1.1) is not supported; \
             convert the keystore to PKCS#12 with: keytool -importkeystore -srckeystore in.jks \
             -destkeystore out.p12 -deststoretype pkcs12"
        );
        let p12 = read("ec.p12");
        assert_eq!(
            decode(&p12, PASS).unwrap_err(),
            format!(
                "unable to parse keystore: invalid JCEKS data: unexpected magic: {:02x}{:02x}{:02x}{:02x} \
                 != (cececece || feedfeed)",
                p12[0], p12[1], p12[2], p12[3]
            )
        );
    }

    /// Every check on keystores made by keytool, in one test: the stores take a while to
    /// make (a JVM per keytool run) and each test runs in a process of its own.
    #[test]
    fn keytool_stores() {
        private_key_entries_with_chains();
        two_keys_in_alias_order_with_both_chains();
        trusted_certificates_come_first();
        keys_generated_by_keytool();
        password_errors();
        refused_entries();
        damaged_files_get_the_reference_texts();
    }

    /// Re-signs `data` (without its old digest) with the store password.
    fn redigest(mut data: Vec<u8>) -> Vec<u8> {
        data.truncate(data.len() - 20);
        let mut d = Sha1::new();
        d.update(utf16_password(PASS).expect("password"));
        d.update(b"Mighty Aphrodite");
        d.update(&data);
        data.extend_from_slice(&d.finalize());
        data
    }

    fn damaged_files_get_the_reference_texts() {
        let data = read("ec.jceks");
        let err = |n: usize| {
            decode(&data[..n], PASS)
                .unwrap_err()
                .strip_prefix("unable to parse keystore: invalid JCEKS data: ")
                .map(str::to_string)
        };
        // Offsets in a one-key store (alias "srv"): magic, version, count, tag, alias, time,
        // key length, key.
        assert_eq!(err(0).unwrap(), "reading magic: EOF");
        assert_eq!(err(1).unwrap(), "reading magic: unexpected EOF");
        assert_eq!(err(4).unwrap(), "reading version: EOF");
        assert_eq!(err(8).unwrap(), "failed to read entry count");
        assert_eq!(err(12).unwrap(), "failed to read entry 0 tag");
        assert_eq!(
            err(16).unwrap(),
            "failed to parse private key entry 0: reading alias: EOF"
        );
        assert_eq!(
            err(17).unwrap(),
            "failed to parse private key entry 0: reading alias: unexpected EOF"
        );
        assert_eq!(
            err(19).unwrap(),
            "failed to parse private key entry 0: reading timestamp: EOF"
        );
        assert_eq!(
            err(22).unwrap(),
            "failed to parse private key entry 0: reading timestamp: unexpected EOF"
        );
        assert_eq!(
            err(29).unwrap(),
            "failed to parse private key entry 0: reading protected key: EOF"
        );
        assert_eq!(
            err(34).unwrap(),
            "failed to parse private key entry 0: reading protected key: unexpected EOF"
        );
        assert_eq!(
            err(data.len() - 20).unwrap(),
            "failed to read integrity checksum: EOF"
        );
        assert_eq!(
            err(data.len() - 1).unwrap(),
            "failed to read integrity checksum: unexpected EOF"
        );
        // Every truncation fails cleanly.
        for n in 0..data.len() {
            assert!(decode(&data[..n], PASS).is_err(), "{n}");
        }
        // Trailing bytes after the digest are ignored.
        let mut longer = data.clone();
        longer.extend_from_slice(b"xyz");
        assert!(decode(&longer, PASS).is_ok());

        let patched = |off: usize, bytes: &[u8]| {
            let mut d = data.clone();
            d[off..off + bytes.len()].copy_from_slice(bytes);
            decode(&redigest(d), PASS).unwrap_err()
        };
        assert_eq!(
            patched(4, &[0, 0, 0, 1]),
            "unable to parse keystore: invalid JCEKS data: unexpected version: 1 != 2"
        );
        assert_eq!(
            patched(12, &[0, 0, 0, 5]),
            "unable to parse keystore: unsupported JCEKS data: unknown entry tag 5"
        );
        assert_eq!(
            patched(29, &0x7fff_ffffu32.to_be_bytes()),
            "unable to parse keystore: invalid JCEKS data: failed to parse private key entry 0: \
             reading protected key: JCEKS data too large: data field of size 2147483647 bytes \
             exceeds maximum length of 20971520"
        );
        assert_eq!(
            patched(29, &(-1i32).to_be_bytes()),
            "unable to parse keystore: invalid JCEKS data: failed to parse private key entry 0: \
             reading protected key: invalid JCEKS data"
        );
        // The JCEKS key protection does not depend on the magic.
        let mut jks_magic = data.clone();
        jks_magic[..4].copy_from_slice(&MAGIC_JKS.to_be_bytes());
        assert!(decode(&redigest(jks_magic), PASS).is_ok());
        // An entry count of zero is an empty store.
        let mut empty = data[..8].to_vec();
        empty.extend_from_slice(&[0, 0, 0, 0]);
        empty.extend_from_slice(&[0; 20]);
        assert_eq!(decode(&redigest(empty), PASS), Ok(Vec::new()));
    }

    #[test]
    fn key_protection_round_trip() {
        // Salt halves that are equal: the first half is reversed before hashing (Sun's quirk).
        // Encrypt with the same derivation and check the decoder gets the key back.
        use cbc::cipher::BlockEncryptMut;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        let pkcs8 = key.serialize_der();
        for salt in [[1u8, 2, 3, 4, 1, 2, 3, 4], [9, 8, 7, 6, 5, 4, 3, 2]] {
            let mut halves = salt;
            if halves[..4] == halves[4..] {
                halves[..4].reverse();
            }
            let mut derived = Vec::new();
            for half in halves.chunks(4) {
                let mut state = half.to_vec();
                for _ in 0..3 {
                    state = Md5::new()
                        .chain_update(&state)
                        .chain_update(PASS)
                        .finalize()
                        .to_vec();
                }
                derived.extend(state);
            }
            let enc =
                cbc::Encryptor::<des::TdesEde3>::new_from_slices(&derived[..24], &derived[24..])
                    .expect("3des")
                    .encrypt_padded_vec_mut::<Pkcs7>(&pkcs8);
            let params = tlv(0x30, &[tlv(0x04, &salt), vec![0x02, 0x01, 0x03]].concat());
            let alg = tlv(
                0x30,
                &[OID_JCEKS_PBE.to_der().expect("oid"), params].concat(),
            );
            let info = tlv(0x30, &[alg, tlv(0x04, &enc)].concat());
            let plain = recover_key(&info, PASS).expect("decrypts");
            assert_eq!(
                PrivateKeyInfo::from_der(&plain)
                    .expect("pkcs8")
                    .algorithm
                    .oid,
                OID_EC_PUBLIC_KEY
            );
            assert_eq!(key_pem_public(&plain), key_pem_public(&pkcs8));
            assert_eq!(
                recover_key(&info, "changeiT"),
                Err(DECRYPTION_FAILED.to_string())
            );
            assert_eq!(
                recover_key(&info, "ch\u{e4}ngeit"),
                Err(DECRYPTION_FAILED.to_string())
            );
        }
    }

    fn key_pem_public(pkcs8: &[u8]) -> Vec<u8> {
        key(pkcs8).public_key().expect("spki").as_ref().to_vec()
    }

    /// Java writes EC keys without the curve inside the `ECPrivateKey`; the decoder copies it
    /// there from the PKCS#8 algorithm parameters.
    #[test]
    fn ec_curve_copied_into_the_inner_key() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("keygen");
        let original = key.serialize_der();
        let info = PrivateKeyInfo::from_der(&original).expect("pkcs8");
        // Rebuild the inner ECPrivateKey as Java does: version, key, public key; no [0].
        let mut reader = SliceReader::new(&info.key).expect("inner");
        let (version, private_key, public_key) = reader
            .sequence(|r| {
                let version = u8::decode(r)?;
                let private_key = OctetString::decode(r)?;
                let mut public_key = Vec::new();
                while !r.is_finished() {
                    let any = der::Any::decode(r)?;
                    if der::Tagged::tag(&any).octet() == 0xA1 {
                        public_key = any.to_der()?;
                    }
                }
                Ok((version, private_key, public_key))
            })
            .expect("inner");
        let inner = tlv(
            0x30,
            &[
                version.to_der().unwrap(),
                private_key.to_der().unwrap(),
                public_key,
            ]
            .concat(),
        );
        let java = tlv(
            0x30,
            &[
                info.version.to_der().unwrap(),
                info.algorithm.to_der().unwrap(),
                tlv(0x04, &inner),
            ]
            .concat(),
        );
        let fixed = pkcs8_with_curve(&java).expect("fixed");
        assert_ne!(fixed, java);
        let fixed_info = PrivateKeyInfo::from_der(&fixed).expect("pkcs8");
        let curve = info
            .algorithm
            .parameters
            .as_ref()
            .unwrap()
            .to_der()
            .unwrap();
        assert!(
            fixed_info
                .key
                .windows(curve.len())
                .any(|w| w == curve.as_slice()),
            "the curve is inside the ECPrivateKey"
        );
        assert_eq!(key_pem_public(&fixed), key_pem_public(&original));
        // A key that has the curve inside already, or is not EC, passes unchanged.
        assert_eq!(pkcs8_with_curve(&fixed), Some(fixed.clone()));
        let rsa = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .expect("keygen")
            .serialize_der();
        assert_eq!(pkcs8_with_curve(&rsa), Some(rsa));
        assert_eq!(pkcs8_with_curve(b"junk"), None);
    }

    #[test]
    fn modified_utf8_aliases() {
        assert_eq!(modified_utf8(b"srv"), "srv");
        assert_eq!(modified_utf8(&[0xC0, 0x80]), "\0");
        assert_eq!(modified_utf8("é€".as_bytes()), "é€");
        // U+1F600 as a CESU-8 surrogate pair.
        assert_eq!(
            modified_utf8(&[0xED, 0xA0, 0xBD, 0xED, 0xB8, 0x80]),
            "\u{1F600}"
        );
        assert_eq!(modified_utf8(&[0xFF, b'a']), "\u{FFFD}a");
    }
}
