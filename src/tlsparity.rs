//! The TLS behaviour operators of the reference rely on, where rustls words or does it
//! differently: the log texts of the common handshake failures, the refusal of clients that
//! offer only TLS 1.1 or older (with a `protocol_version` alert), the `bad_certificate` alert for
//! an unauthorized certificate, and the secp521r1 key exchange group.
//!
//! Owns no sockets and no state except a per-thread slot that carries an error text from a
//! certificate verifier to the log line of the same handshake (rustls calls verifiers on the
//! thread that drives the handshake, so the slot is never shared).

use std::cell::RefCell;
use std::time::{Duration, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, Error};

thread_local! {
    static DETAIL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A certificate error whose alert is `bad_certificate` (what the reference sends for a
/// certificate its verification refuses) and whose log text is `text`.
pub fn bad_certificate(text: String) -> Error {
    DETAIL.with(|d| *d.borrow_mut() = Some(text));
    Error::InvalidCertificate(CertificateError::BadEncoding)
}

/// The reference's text for a handshake error, or `None` to keep rustls' own description.
pub fn describe(e: &Error) -> Option<String> {
    let detail = DETAIL.with(|d| d.borrow_mut().take());
    let verify = |why: &str| format!("tls: failed to verify certificate: x509: {why}");
    Some(match e {
        Error::InvalidCertificate(CertificateError::BadEncoding) if detail.is_some() => detail?,
        Error::NoCertificatesPresented => "tls: client didn't provide a certificate".into(),
        Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => verify("certificate signed by unknown authority"),
            CertificateError::ExpiredContext { time, not_after } => verify(&format!(
                "certificate has expired or is not yet valid: current time {} is after {}",
                rfc3339(*time),
                rfc3339(*not_after)
            )),
            CertificateError::NotValidYetContext { time, not_before } => verify(&format!(
                "certificate has expired or is not yet valid: current time {} is before {}",
                rfc3339(*time),
                rfc3339(*not_before)
            )),
            CertificateError::Expired | CertificateError::NotValidYet => {
                verify("certificate has expired or is not yet valid")
            }
            CertificateError::Other(o) if o.0.to_string() == "UnsupportedCertVersion" => verify(
                "X.509 v1 certificate refused: it has no extensions, so its names, key usage \
                 and CA constraints cannot be checked",
            ),
            _ => return None,
        },
        _ => return None,
    })
}

/// Go's `x509.HostnameError` text for `leaf` not matching `host` (the name we dialled).
pub fn hostname_error(leaf: &CertificateDer<'_>, host: &ServerName<'_>) -> String {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::name::GeneralName;
    let host = match host {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    };
    let parsed = x509_cert::Certificate::from_der(leaf).ok();
    let names = parsed
        .as_ref()
        .map(crate::auth::subject_alt_names)
        .unwrap_or_default();
    let has_san_extension = parsed.as_ref().is_some_and(|c| {
        c.tbs_certificate
            .extensions
            .iter()
            .flatten()
            .any(|e| e.extn_id.to_string() == "2.5.29.17")
    });
    if !has_san_extension {
        let cn = crate::certs::subject_string(leaf);
        if cn.split(',').any(|rdn| {
            rdn.strip_prefix("CN=")
                .is_some_and(|v| v.eq_ignore_ascii_case(&host))
        }) {
            return "tls: failed to verify certificate: x509: certificate relies on legacy \
                    Common Name field, use SANs instead"
                .to_string();
        }
    }
    let valid: Vec<String> = if host.parse::<std::net::IpAddr>().is_ok() {
        let ips: Vec<String> = names
            .iter()
            .filter_map(|n| match n {
                GeneralName::IpAddress(b) => crate::auth::ip_from_bytes(b.as_bytes()),
                _ => None,
            })
            .map(|ip| ip.to_string())
            .collect();
        if ips.is_empty() {
            return format!(
                "tls: failed to verify certificate: x509: cannot validate certificate for \
                 {host} because it doesn't contain any IP SANs"
            );
        }
        ips
    } else {
        names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DnsName(d) => Some(d.as_str().to_string()),
                _ => None,
            })
            .collect()
    };
    if valid.is_empty() {
        return format!(
            "tls: failed to verify certificate: x509: certificate is not valid for any names, \
             but wanted to match {host}"
        );
    }
    format!(
        "tls: failed to verify certificate: x509: certificate is valid for {}, not {host}",
        valid.join(", ")
    )
}

/// Checks the leaf's validity period and then its names against the name we dialled, as the
/// reference does before it builds the chain (so a wrong name is reported as such even when
/// the issuer is unknown too). Everything is checked again by the chain verification.
pub fn check_server_name(
    leaf: &CertificateDer<'_>,
    name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), Error> {
    use x509_cert::der::Decode;
    if let Ok(cert) = x509_cert::Certificate::from_der(leaf) {
        let validity = &cert.tbs_certificate.validity;
        let secs = |t: x509_cert::time::Time| UnixTime::since_unix_epoch(t.to_unix_duration());
        let (not_before, not_after) = (secs(validity.not_before), secs(validity.not_after));
        if now.as_secs() > not_after.as_secs() {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after,
            }
            .into());
        }
        if now.as_secs() < not_before.as_secs() {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before,
            }
            .into());
        }
    }
    if is_v1(leaf) {
        // No SANs: the reference's hostname check fails the way it words it.
        return Err(bad_certificate(hostname_error(leaf, name)));
    }
    let parsed = rustls::server::ParsedCertificate::try_from(leaf)?;
    rustls::client::verify_server_name(&parsed, name)
        .map_err(|_| bad_certificate(hostname_error(leaf, name)))
}

fn rfc3339(t: UnixTime) -> String {
    crate::status::rfc3339(UNIX_EPOCH + Duration::from_secs(t.as_secs()))
}

/// A ClientHello that offers nothing newer than TLS 1.1: the versions it offers (newest first,
/// as the reference lists them) when the first bytes of a connection are such a hello, else
/// `None` (not a TLS handshake record, too short to tell, or TLS 1.2 or newer).
///
/// The legacy version field of the hello is authoritative here: clients that can speak TLS 1.2
/// or 1.3 put 0x0303 there, so anything lower offers only older versions.
pub fn old_client_hello(first: &[u8]) -> Option<Vec<u16>> {
    // Record header (type 22, version, length), handshake header (type 1, length), version.
    if first.len() < 11 || first[0] != 0x16 || first[5] != 0x01 {
        return None;
    }
    let version = u16::from_be_bytes([first[9], first[10]]);
    if !(0x0300..0x0303).contains(&version) {
        return None;
    }
    // Go counts down from the client's maximum to TLS 1.0 (SSL 3.0 is not a version it knows).
    Some((0x0301..=version).rev().collect())
}

/// The reference's log text for such a client: `tls: client offered only unsupported
/// versions: [302 301]` (hexadecimal, as Go prints a `[]uint16` with `%x`).
pub fn unsupported_versions_text(versions: &[u16]) -> String {
    let list: Vec<String> = versions.iter().map(|v| format!("{v:x}")).collect();
    format!(
        "tls: client offered only unsupported versions: [{}]",
        list.join(" ")
    )
}

/// A fatal `protocol_version` alert record (TLS 1.0 record version, as sent before any
/// version is agreed).
pub const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];

/// Whether `cert` is an X.509 version 1 certificate (which has no extensions at all).
pub fn is_v1(cert: &[u8]) -> bool {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(cert)
        .is_ok_and(|c| c.tbs_certificate.version == x509_cert::Version::V1)
}

/// One DER element: its tag, its contents, the whole element, and what follows it.
type Element<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// The DER element at the start of `input`.
fn tlv(input: &[u8]) -> Option<Element<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((tag, &rest[..len], &input[..header + len], &rest[len..]))
}

/// The algorithm (contents of its AlgorithmIdentifier) and key bits of an SPKI given as the
/// contents of its SEQUENCE.
fn spki_parts(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, alg, _, rest) = tlv(spki)? else {
        return None;
    };
    let (0x03, bits, _, _) = tlv(rest)? else {
        return None;
    };
    // A BIT STRING starts with its count of unused bits, 0 for keys.
    Some((alg, bits.get(1..)?))
}

/// The raw parts of a certificate the v1 checks need.
struct RawCert<'a> {
    /// The whole tbsCertificate element (what the issuer signed).
    tbs: &'a [u8],
    sig_alg: &'a [u8],
    signature: &'a [u8],
    /// Contents of the issuer Name and of the subjectPublicKeyInfo.
    issuer: &'a [u8],
    spki: &'a [u8],
}

fn raw_cert(der: &[u8]) -> Option<RawCert<'_>> {
    let (0x30, cert, _, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs_contents, tbs, rest) = tlv(cert)? else {
        return None;
    };
    let (0x30, sig_alg, _, rest) = tlv(rest)? else {
        return None;
    };
    let (0x03, sig_bits, _, _) = tlv(rest)? else {
        return None;
    };
    // tbsCertificate: [0] version (absent for v1, tolerated if present), serial, signature,
    // issuer, validity, subject, subjectPublicKeyInfo.
    let mut fields = tbs_contents;
    let mut next = || {
        let (tag, contents, _, rest) = tlv(fields)?;
        fields = rest;
        Some((tag, contents))
    };
    if next()?.0 == 0xa0 {
        // That was the version; the serial number follows.
        next()?;
    }
    let _signature = next()?;
    let (0x30, issuer) = next()? else {
        return None;
    };
    let _validity = next()?;
    let _subject = next()?;
    let (0x30, spki) = next()? else {
        return None;
    };
    Some(RawCert {
        tbs,
        sig_alg,
        signature: sig_bits.get(1..)?,
        issuer,
        spki,
    })
}

/// Verifies a handshake signature (CertificateVerify) by `cert`, as rustls does, and for an
/// X.509 v1 certificate (which rustls' certificate parser refuses) with the public key taken
/// from it directly: the same algorithms, the same checks on the signature.
pub fn verify_handshake_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &rustls::DigitallySignedStruct,
    algorithms: &rustls::crypto::WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
    let normal = if tls13 {
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    } else {
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    };
    if normal.is_ok() || !is_v1(cert) {
        return normal;
    }
    let raw = raw_cert(cert).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
    if tls13 {
        let mut spki = vec![0x30];
        push_len(&mut spki, raw.spki.len());
        spki.extend_from_slice(raw.spki);
        return rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &rustls::pki_types::SubjectPublicKeyInfoDer::from(spki),
            dss,
            algorithms,
        );
    }
    let (key_alg, key) =
        spki_parts(raw.spki).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let candidates = algorithms
        .mapping
        .iter()
        .filter(|(scheme, _)| *scheme == dss.scheme)
        .flat_map(|(_, algs)| algs.iter());
    for alg in candidates {
        if alg.public_key_alg_id().as_ref() == key_alg
            && alg.verify_signature(key, message, dss.signature()).is_ok()
        {
            return Ok(rustls::client::danger::HandshakeSignatureValid::assertion());
        }
    }
    normal
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

/// Chain verification for an X.509 v1 client certificate, which rustls-webpki refuses. The
/// reference accepts such a certificate, and so does this, as long as nothing that a v1
/// certificate cannot express would have been needed to refuse it:
///
/// * it must be issued directly by a `--cacert` certificate (no intermediates: webpki would
///   have to accept the intermediate as an end entity to check it, which it rightly refuses),
///   whose signature over it verifies with the provider's algorithms;
/// * it must be within its validity period;
/// * that CA must carry no name constraints (a v1 certificate has no SANs to check them on);
/// * it has no extended key usage, which means any usage, as for the reference; no
///   basicConstraints, so it can never act as a CA here (it is only ever the leaf); no SANs,
///   so only `--allow-cn`, `--allow-ou`, `--allow-all` and pins can authorize it.
pub fn verify_v1_leaf(
    leaf: &CertificateDer<'_>,
    roots: &rustls::RootCertStore,
    algorithms: &rustls::crypto::WebPkiSupportedAlgorithms,
    now: UnixTime,
) -> Result<(), Error> {
    use x509_cert::der::Decode;
    let bad = || Error::InvalidCertificate(CertificateError::BadEncoding);
    let cert = x509_cert::Certificate::from_der(leaf).map_err(|_| bad())?;
    let raw = raw_cert(leaf).ok_or_else(bad)?;
    let validity = &cert.tbs_certificate.validity;
    let secs = |t: x509_cert::time::Time| UnixTime::since_unix_epoch(t.to_unix_duration());
    let (not_before, not_after) = (secs(validity.not_before), secs(validity.not_after));
    if now.as_secs() > not_after.as_secs() {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after,
        }
        .into());
    }
    if now.as_secs() < not_before.as_secs() {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before,
        }
        .into());
    }
    for anchor in roots
        .roots
        .iter()
        .filter(|a| a.subject.as_ref() == raw.issuer)
    {
        let Some((key_alg, key)) = spki_parts(anchor.subject_public_key_info.as_ref()) else {
            continue;
        };
        let signed = algorithms.all.iter().any(|alg| {
            alg.signature_alg_id().as_ref() == raw.sig_alg
                && alg.public_key_alg_id().as_ref() == key_alg
                && alg.verify_signature(key, raw.tbs, raw.signature).is_ok()
        });
        if !signed {
            continue;
        }
        if anchor.name_constraints.is_some() {
            return Err(bad_certificate(
                "tls: failed to verify certificate: x509: an X.509 v1 certificate cannot be                  checked against its CA's name constraints"
                    .into(),
            ));
        }
        return Ok(());
    }
    Err(CertificateError::UnknownIssuer.into())
}

/// ECDHE on secp521r1, which the reference offers last and rustls' aws-lc-rs provider does not
/// ship. Built on the same aws-lc-rs agreement code rustls uses for P-256 and P-384.
#[cfg(feature = "aws-lc-rs")]
pub mod p521 {
    use aws_lc_rs::agreement;
    use aws_lc_rs::rand::SystemRandom;
    use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
    use rustls::{Error, NamedGroup, PeerMisbehaved};

    #[derive(Debug)]
    struct P521;

    /// The group, for the provider's `kx_groups` list.
    pub static SECP521R1: &dyn SupportedKxGroup = &P521;

    impl SupportedKxGroup for P521 {
        fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
            let rng = SystemRandom::new();
            let priv_key = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P521, &rng)
                .map_err(|_| Error::FailedToGetRandomBytes)?;
            let pub_key = priv_key
                .compute_public_key()
                .map_err(|_| Error::FailedToGetRandomBytes)?
                .as_ref()
                .to_vec();
            Ok(Box::new(Exchange { priv_key, pub_key }))
        }

        fn name(&self) -> NamedGroup {
            NamedGroup::secp521r1
        }
    }

    struct Exchange {
        priv_key: agreement::EphemeralPrivateKey,
        pub_key: Vec<u8>,
    }

    impl ActiveKeyExchange for Exchange {
        fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
            // TLS allows only the uncompressed point form (aws-lc-rs would take others too);
            // aws-lc-rs checks that the point is on the curve.
            if peer.first() != Some(&0x04) {
                return Err(PeerMisbehaved::InvalidKeyShare.into());
            }
            let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P521, peer);
            agreement::agree_ephemeral(self.priv_key, peer, (), |secret| {
                Ok(SharedSecret::from(secret))
            })
            .map_err(|_| PeerMisbehaved::InvalidKeyShare.into())
        }

        fn pub_key(&self) -> &[u8] {
            &self.pub_key
        }

        fn group(&self) -> NamedGroup {
            NamedGroup::secp521r1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_hellos_are_recognised_by_their_version() {
        let hello = |v: [u8; 2]| {
            let mut h = vec![0x16, 0x03, 0x01, 0x00, 0x80, 0x01, 0x00, 0x00, 0x7c];
            h.extend_from_slice(&v);
            h
        };
        assert_eq!(old_client_hello(&hello([3, 2])), Some(vec![0x302, 0x301]));
        assert_eq!(old_client_hello(&hello([3, 1])), Some(vec![0x301]));
        assert_eq!(old_client_hello(&hello([3, 3])), None);
        assert_eq!(old_client_hello(&hello([3, 2])[..10]), None);
        assert_eq!(old_client_hello(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(
            unsupported_versions_text(&[0x302, 0x301]),
            "tls: client offered only unsupported versions: [302 301]"
        );
    }

    #[test]
    fn texts_of_common_failures() {
        assert_eq!(
            describe(&Error::NoCertificatesPresented).unwrap(),
            "tls: client didn't provide a certificate"
        );
        assert_eq!(
            describe(&CertificateError::UnknownIssuer.into()).unwrap(),
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
        );
        let expired = CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_796_354_277)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_580_515_200)),
        };
        assert_eq!(
            describe(&expired.into()).unwrap(),
            "tls: failed to verify certificate: x509: certificate has expired or is not yet \
             valid: current time 2026-12-04T03:17:57Z is after 2020-02-01T00:00:00Z"
        );
        let e = bad_certificate("unauthorized: nope".into());
        assert_eq!(describe(&e).unwrap(), "unauthorized: nope");
        // The slot is emptied by the read: a later plain BadEncoding keeps rustls' text.
        assert_eq!(describe(&e), None);
    }
}
