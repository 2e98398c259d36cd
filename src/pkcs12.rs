//! PKCS#12 (`.p12`/`.pfx`) decoding for `--keystore` (docs/behaviour.md §3.4), on RustCrypto parts:
//! the `pkcs12` crate's ASN.1 types and KDF, `pkcs5` for PBES2, and des/rc2/cbc/hmac for the legacy
//! PKCS#12 PBE schemes. Owns only byte-level decoding: it returns the certificate and private key
//! DER blobs in file order and never matches keys to certificates (that is `certs.rs`).

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, InnerIvInit, KeyIvInit};
use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use der::asn1::{ContextSpecific, ObjectIdentifier, OctetString};
use der::{Any, Decode, Encode};
use hmac::{Hmac, Mac};
use pkcs12::cert_type::CertBag;
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
use pkcs12::mac_data::MacData;
use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pkcs12PbeParams};
use pkcs12::pfx::Pfx;
use pkcs12::safe_bag::{SafeBag, SafeContents};
use x509_cert::spki::AlgorithmIdentifierOwned;

/// The cause text for a failed MAC check or decryption (docs/behaviour.md §3.4).
pub const INCORRECT_PASSWORD: &str = "pkcs12: decryption password incorrect";

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const ID_X509_CERTIFICATE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");
const ID_PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// The decoded contents of a keystore, in file order.
#[derive(Debug, Default)]
pub struct Contents {
    /// DER certificates; the first one is the leaf (docs/behaviour.md §3.4).
    pub certs: Vec<Vec<u8>>,
    /// PKCS#8 `PrivateKeyInfo` DER blobs.
    pub keys: Vec<Vec<u8>>,
}

/// Why decoding with one password candidate failed.
enum Failure {
    /// Wrong password (bad padding, garbage plaintext).
    Password,
    /// Anything else; the full `pkcs12: …` text.
    Other(String),
}

/// One way of presenting the password: BMP bytes with terminator for the PKCS#12 KDF, UTF-8
/// for PBES2.
struct Password<'a> {
    bmp: Vec<u8>,
    utf8: &'a str,
}

/// Decodes a PKCS#12 file. Errors are full cause texts such as
/// [`INCORRECT_PASSWORD`] or `pkcs12: error reading P12 data: …`.
///
/// An empty password is tried as the two-NUL BMP encoding and as a zero-length password; a
/// file without a MAC is accepted only with the empty password.
pub fn decode(data: &[u8], password: &str) -> Result<Contents, String> {
    let pfx = Pfx::from_der(data).map_err(|e| format!("pkcs12: error reading P12 data: {e}"))?;
    if pfx.auth_safe.content_type != ID_DATA {
        return Err("pkcs12: only password-protected PFX is implemented".to_string());
    }
    let auth_safe = pfx
        .auth_safe
        .content
        .decode_as::<OctetString>()
        .map_err(|e| format!("pkcs12: error reading P12 data: {e}"))?;
    let auth_safe = auth_safe.as_bytes();

    let mut candidates = Vec::new();
    if password.is_empty() {
        candidates.push(Password {
            bmp: vec![0, 0],
            utf8: password,
        });
        candidates.push(Password {
            bmp: Vec::new(),
            utf8: password,
        });
    } else {
        candidates.push(Password {
            bmp: bmp_password(password),
            utf8: password,
        });
    }

    match &pfx.mac_data {
        Some(mac) => {
            let mut verified = None;
            for (i, candidate) in candidates.iter().enumerate() {
                if verify_mac(mac, auth_safe, &candidate.bmp)? {
                    verified = Some(i);
                    break;
                }
            }
            let Some(i) = verified else {
                return Err(INCORRECT_PASSWORD.to_string());
            };
            candidates.swap(0, i);
            candidates.truncate(1);
        }
        None if !password.is_empty() => return Err(INCORRECT_PASSWORD.to_string()),
        None => {}
    }

    for candidate in &candidates {
        match decode_auth_safe(auth_safe, candidate) {
            Ok(contents) => return Ok(contents),
            Err(Failure::Password) => continue,
            Err(Failure::Other(e)) => return Err(e),
        }
    }
    Err(INCORRECT_PASSWORD.to_string())
}

/// UTF-16BE of the password plus the two-byte terminator (RFC 7292 B.1).
fn bmp_password(password: &str) -> Vec<u8> {
    let mut out: Vec<u8> = password.encode_utf16().flat_map(u16::to_be_bytes).collect();
    out.extend([0, 0]);
    out
}

/// Checks the PFX MAC for one password candidate. `Ok(false)` on mismatch.
fn verify_mac(mac: &MacData, data: &[u8], bmp: &[u8]) -> Result<bool, String> {
    if mac.iterations < 1 {
        return Err("pkcs12: invalid MAC iteration count".to_string());
    }
    let salt = mac.mac_salt.as_bytes();
    let expected = mac.mac.digest.as_bytes();
    macro_rules! check {
        ($digest:ty, $len:expr) => {{
            let key = derive_key::<$digest>(bmp, salt, Pkcs12KeyType::Mac, mac.iterations, $len);
            let mut hmac = <Hmac<$digest> as Mac>::new_from_slice(&key)
                .map_err(|_| "pkcs12: invalid MAC key".to_string())?;
            hmac.update(data);
            Ok(hmac.verify_slice(expected).is_ok())
        }};
    }
    match mac.mac.algorithm.oid {
        ID_SHA1 => check!(sha1::Sha1, 20),
        ID_SHA256 => check!(sha2::Sha256, 32),
        ID_SHA384 => check!(sha2::Sha384, 48),
        ID_SHA512 => check!(sha2::Sha512, 64),
        other => Err(format!("pkcs12: unknown digest algorithm: {other}")),
    }
}

fn decode_auth_safe(data: &[u8], password: &Password<'_>) -> Result<Contents, Failure> {
    let infos = Vec::<ContentInfo>::from_der(data).map_err(malformed)?;
    let mut contents = Contents::default();
    for info in infos {
        let plain = if info.content_type == ID_DATA {
            info.content
                .decode_as::<OctetString>()
                .map_err(malformed)?
                .into_bytes()
        } else if info.content_type == ID_ENCRYPTED_DATA {
            let encrypted = info
                .content
                .decode_as::<EncryptedData>()
                .map_err(malformed)?;
            let eci = encrypted.enc_content_info;
            let Some(ciphertext) = eci.encrypted_content else {
                return Err(Failure::Other(
                    "pkcs12: encrypted data has no content".to_string(),
                ));
            };
            decrypt(&eci.content_enc_alg, ciphertext.as_bytes(), password)?
        } else {
            return Err(Failure::Other(format!(
                "pkcs12: unsupported content type {}",
                info.content_type
            )));
        };
        // Garbage after a wrong-password decryption that happened to unpad cleanly.
        let bags = SafeContents::from_der(&plain).map_err(|_| Failure::Password)?;
        collect_bags(&bags, password, &mut contents, 0)?;
    }
    Ok(contents)
}

fn collect_bags(
    bags: &[SafeBag],
    password: &Password<'_>,
    out: &mut Contents,
    depth: usize,
) -> Result<(), Failure> {
    if depth > 8 {
        return Err(Failure::Other(
            "pkcs12: safe contents nested too deeply".to_string(),
        ));
    }
    for bag in bags {
        match bag.bag_id {
            pkcs12::PKCS_12_CERT_BAG_OID => {
                let cert =
                    ContextSpecific::<CertBag>::from_der(&bag.bag_value).map_err(malformed)?;
                if cert.value.cert_id == ID_X509_CERTIFICATE {
                    out.certs.push(cert.value.cert_value.into_bytes());
                }
            }
            pkcs12::PKCS_12_KEY_BAG_OID => {
                let key = ContextSpecific::<Any>::from_der(&bag.bag_value).map_err(malformed)?;
                out.keys.push(key.value.to_der().map_err(malformed)?);
            }
            pkcs12::PKCS_12_PKCS8_KEY_BAG_OID => {
                let key = ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)
                    .map_err(malformed)?;
                let alg = &key.value.encryption_algorithm;
                let plain = decrypt(alg, key.value.encrypted_data.as_bytes(), password)?;
                // A wrong password without a MAC can unpad to garbage.
                Any::from_der(&plain).map_err(|_| Failure::Password)?;
                out.keys.push(plain);
            }
            pkcs12::PKCS_12_SAFE_CONTENTS_BAG_OID => {
                let nested =
                    ContextSpecific::<Vec<SafeBag>>::from_der(&bag.bag_value).map_err(malformed)?;
                collect_bags(&nested.value, password, out, depth + 1)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn malformed(e: der::Error) -> Failure {
    Failure::Other(format!("pkcs12: error reading P12 data: {e}"))
}

/// Decrypts with PBES2 or one of the PKCS#12 PBE schemes (3DES, RC2).
fn decrypt(
    alg: &AlgorithmIdentifierOwned,
    ciphertext: &[u8],
    password: &Password<'_>,
) -> Result<Vec<u8>, Failure> {
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| Failure::Other("pkcs12: missing algorithm parameters".to_string()))?;
    if alg.oid == ID_PBES2 {
        let params_der = params.to_der().map_err(malformed)?;
        let params = pkcs5::pbes2::Parameters::from_der(&params_der).map_err(malformed)?;
        return params
            .decrypt(password.utf8.as_bytes(), ciphertext)
            .map_err(|e| match e {
                // pkcs5 0.7 reports a bad padding after decryption as `EncryptFailed`.
                pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed => Failure::Password,
                other => Failure::Other(format!("pkcs12: {other}")),
            });
    }

    let pbe = params.decode_as::<Pkcs12PbeParams>().map_err(malformed)?;
    if pbe.iterations < 1 {
        return Err(Failure::Other(
            "pkcs12: invalid PBE iteration count".to_string(),
        ));
    }
    let derive = |id, len| {
        derive_key::<sha1::Sha1>(&password.bmp, pbe.salt.as_bytes(), id, pbe.iterations, len)
    };
    let unsupported = || Failure::Other(format!("pkcs12: unknown algorithm: {}", alg.oid));
    let iv = derive(Pkcs12KeyType::Iv, 8);
    let result = match alg.oid {
        pkcs12::PKCS_12_PBE_WITH_SHAAND3_KEY_TRIPLE_DES_CBC => {
            let key = derive(Pkcs12KeyType::EncryptionKey, 24);
            cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
                .map_err(|_| unsupported())?
                .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        }
        pkcs12::PKCS_12_PBE_WITH_SHAAND2_KEY_TRIPLE_DES_CBC => {
            let key = derive(Pkcs12KeyType::EncryptionKey, 16);
            cbc::Decryptor::<des::TdesEde2>::new_from_slices(&key, &iv)
                .map_err(|_| unsupported())?
                .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        }
        pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC
        | pkcs12::PKCS_12_PBE_WITH_SHAAND128_BIT_RC2_CBC => {
            let bytes = if alg.oid == pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC {
                5
            } else {
                16
            };
            let key = derive(Pkcs12KeyType::EncryptionKey, bytes);
            let cipher = rc2::Rc2::new_with_eff_key_len(&key, bytes * 8);
            cbc::Decryptor::<rc2::Rc2>::inner_iv_slice_init(cipher, &iv)
                .map_err(|_| unsupported())?
                .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        }
        _ => return Err(unsupported()),
    };
    result.map_err(|_| Failure::Password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::test_support::{Spec, openssl, scratch_dir, self_signed};

    /// An OpenSSL-made PKCS#12 file with the given password and extra flags.
    fn make(pass: &str, extra: &[&str]) -> Vec<u8> {
        let dir = scratch_dir("p12unit");
        let cert = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &Spec::default());
        let (c, k) = cert.write(&dir, "leaf");
        let out = dir.join("out.p12");
        let passout = format!("pass:{pass}");
        let mut args = vec!["pkcs12", "-export", "-passout", &passout];
        let (c, k, o) = (
            c.display().to_string(),
            k.display().to_string(),
            out.display().to_string(),
        );
        args.extend(["-in", &c, "-inkey", &k, "-out", &o]);
        args.extend(extra);
        openssl(&args);
        std::fs::read(&out).expect("read p12")
    }

    /// Recomputes the MAC of `data` with `bmp` as the raw KDF password.
    fn remac(data: &[u8], bmp: &[u8]) -> Vec<u8> {
        let mut pfx = Pfx::from_der(data).expect("pfx");
        let content = pfx
            .auth_safe
            .content
            .decode_as::<OctetString>()
            .expect("content");
        let mac = pfx.mac_data.as_mut().expect("mac");
        assert_eq!(mac.mac.algorithm.oid, ID_SHA256);
        let key = derive_key::<sha2::Sha256>(
            bmp,
            mac.mac_salt.as_bytes(),
            Pkcs12KeyType::Mac,
            mac.iterations,
            32,
        );
        let mut hmac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("hmac");
        hmac.update(content.as_bytes());
        let digest = hmac.finalize().into_bytes().to_vec();
        mac.mac.digest = OctetString::new(digest).expect("octets");
        pfx.to_der().expect("encode")
    }

    #[test]
    fn empty_password_as_two_nuls_and_as_zero_length() {
        let original = make("", &[]);
        for bmp in [&[0u8, 0][..], &[][..]] {
            let data = remac(&original, bmp);
            let contents = decode(&data, "").expect("decodes");
            assert_eq!(contents.certs.len(), 1);
            assert_eq!(contents.keys.len(), 1);
            assert_eq!(decode(&data, "x").unwrap_err(), INCORRECT_PASSWORD);
        }
        // Neither encoding of the empty password: rejected.
        let data = remac(&original, &bmp_password("other"));
        assert_eq!(decode(&data, "").unwrap_err(), INCORRECT_PASSWORD);
        // The MAC passes but the PBES2 content was encrypted with the empty password.
        assert_eq!(decode(&data, "other").unwrap_err(), INCORRECT_PASSWORD);
    }

    #[test]
    fn macless_only_with_empty_password() {
        let data = make("", &["-keypbe", "NONE", "-certpbe", "NONE", "-nomac"]);
        assert!(decode(&data, "").is_ok());
        assert_eq!(decode(&data, "pw").unwrap_err(), INCORRECT_PASSWORD);
    }

    #[test]
    fn non_ascii_password() {
        let data = make("pässwörd", &[]);
        assert!(decode(&data, "pässwörd").is_ok());
        let data = make("pässwörd", &["-legacy"]);
        assert!(decode(&data, "pässwörd").is_ok());
        assert_eq!(decode(&data, "passwort").unwrap_err(), INCORRECT_PASSWORD);
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let err = decode(b"\x30\x03\x02\x01\x03", "").unwrap_err();
        assert!(err.starts_with("pkcs12: error reading P12 data: "), "{err}");
    }
}
