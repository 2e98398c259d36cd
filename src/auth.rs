//! Authorization of the peer's leaf certificate: the `--allow-*`/`--verify-*` ACL
//! (docs/behaviour.md §5.1, 5.2), SPKI pins (5.3) and URI wildcard patterns (5.4). Pure functions
//! over DER bytes; owns no TLS state and no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64ct::{Base64, Encoding};
use der::{Decode, Encode};
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::config::Acl;

/// The rejection text for a failed ACL check (docs/behaviour.md §5.1).
pub const UNAUTHORIZED: &str = "unauthorized: invalid principal, or principal not allowed";

const OID_CN: &str = "2.5.4.3";
const OID_OU: &str = "2.5.4.11";
const OID_SAN: &str = "2.5.29.17";

/// One `<algo>:<base64>` SPKI pin.
#[derive(Debug, Clone)]
pub struct SpkiPin {
    algo: PinAlgo,
    digest: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PinAlgo {
    Sha256,
    Sha384,
    Sha512,
}

impl PinAlgo {
    fn len(self) -> usize {
        match self {
            PinAlgo::Sha256 => 32,
            PinAlgo::Sha384 => 48,
            PinAlgo::Sha512 => 64,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PinAlgo::Sha256 => "sha256",
            PinAlgo::Sha384 => "sha384",
            PinAlgo::Sha512 => "sha512",
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            PinAlgo::Sha256 => Sha256::digest(data).to_vec(),
            PinAlgo::Sha384 => Sha384::digest(data).to_vec(),
            PinAlgo::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

impl SpkiPin {
    /// Parses a pin; errors read `invalid pin "<s>": …` (the caller adds the flag prefix).
    pub fn parse(s: &str) -> Result<SpkiPin, String> {
        let Some((algo_text, b64)) = s.split_once(':') else {
            return Err(format!(
                "invalid pin {s:?}: expected format <algo>:<base64-digest>"
            ));
        };
        let algo = match algo_text.to_ascii_lowercase().as_str() {
            "sha256" => PinAlgo::Sha256,
            "sha384" => PinAlgo::Sha384,
            "sha512" => PinAlgo::Sha512,
            _ => {
                return Err(format!(
                    "invalid pin {s:?}: unsupported hash algorithm {algo_text:?} (supported: \
                     sha256, sha384, sha512)"
                ));
            }
        };
        let digest = Base64::decode_vec(b64).map_err(|_| {
            format!(
                "invalid pin {s:?}: base64 decode failed: illegal base64 data at input byte {}",
                base64_error_offset(b64)
            )
        })?;
        if digest.len() != algo.len() {
            return Err(format!(
                "invalid pin {s:?}: expected {} bytes for {}, got {}",
                algo.len(),
                algo.name(),
                digest.len()
            ));
        }
        Ok(SpkiPin { algo, digest })
    }
}

/// Where Go's decoder would report a bad base64 string: the first character outside the
/// alphabet, else the start of the last (incomplete or badly padded) quantum.
fn base64_error_offset(s: &str) -> usize {
    let bytes = s.as_bytes();
    let data_end = bytes.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    if let Some(i) = bytes[..data_end].iter().position(|&b| !valid(b)) {
        return i;
    }
    data_end - data_end % 4
}

/// Checks the leaf against the pins: `Ok` if any matches, else the docs/behaviour.md §5.3 runtime
/// text (`unauthorized: pin verification failed`, `unauthorized: failed to parse certificate: …`).
pub fn check_pins(pins: &[SpkiPin], leaf_der: &[u8]) -> Result<(), String> {
    if leaf_der.is_empty() {
        return Err("unauthorized: no certificate presented".to_string());
    }
    let spki = leaf_spki_der(leaf_der)
        .map_err(|e| format!("unauthorized: failed to parse certificate: {e}"))?;
    let mut matched = false;
    for pin in pins {
        // Evaluate every pin so timing does not reveal which one matched.
        matched |= constant_time_eq(&pin.algo.hash(&spki), &pin.digest);
    }
    match matched {
        true => Ok(()),
        false => Err("unauthorized: pin verification failed".to_string()),
    }
}

/// The DER `SubjectPublicKeyInfo` of a DER certificate (what pins hash).
pub fn leaf_spki_der(leaf_der: &[u8]) -> Result<Vec<u8>, String> {
    let cert = Certificate::from_der(leaf_der).map_err(|e| format!("x509: {e}"))?;
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("x509: {e}"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A compiled `--allow-uri`/`--verify-uri` pattern.
#[derive(Debug, Clone)]
pub struct UriPattern {
    /// The pattern as written.
    #[cfg_attr(not(test), allow(dead_code))]
    source: String,
    matcher: UriMatcher,
}

#[derive(Debug, Clone)]
enum UriMatcher {
    /// `**` alone: every string.
    Any,
    Segments {
        segments: Vec<Segment>,
        /// Ends in `/**`: nothing, or `/` followed by anything.
        tail: bool,
    },
}

#[derive(Debug, Clone)]
enum Segment {
    /// `*`: one or more characters other than `/`.
    Star,
    Literal(String),
}

impl UriPattern {
    /// Compiles a pattern; errors are the docs/behaviour.md §5.4 texts (e.g. `input pattern was
    /// empty string`).
    pub fn compile(s: &str) -> Result<UriPattern, String> {
        if s.is_empty() {
            return Err("input pattern was empty string".to_string());
        }
        let pattern = match s.len() > 1 {
            true => s.strip_suffix('/').unwrap_or(s),
            false => s,
        };
        let matcher = if pattern == "**" {
            UriMatcher::Any
        } else {
            let parts: Vec<&str> = pattern.split('/').collect();
            let mut segments = Vec::new();
            let mut tail = false;
            for (i, part) in parts.iter().enumerate() {
                if *part == "**" {
                    if i + 1 != parts.len() {
                        return Err("wildcard '**' can only appear at end of pattern".to_string());
                    }
                    tail = true;
                } else if *part == "*" {
                    segments.push(Segment::Star);
                } else if part.contains('*') {
                    return Err("wildcard '*' can only appear between two separators".to_string());
                } else {
                    segments.push(Segment::Literal((*part).to_string()));
                }
            }
            UriMatcher::Segments { segments, tail }
        };
        Ok(UriPattern {
            source: s.to_string(),
            matcher,
        })
    }

    /// The pattern as written.
    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole input matches.
    pub fn matches(&self, input: &str) -> bool {
        let (segments, tail) = match &self.matcher {
            UriMatcher::Any => return true,
            UriMatcher::Segments { segments, tail } => (segments, *tail),
        };
        let mut rest = input;
        for (i, segment) in segments.iter().enumerate() {
            if i > 0 {
                let Some(r) = rest.strip_prefix('/') else {
                    return false;
                };
                rest = r;
            }
            match segment {
                Segment::Literal(lit) => {
                    let Some(r) = rest.strip_prefix(lit.as_str()) else {
                        return false;
                    };
                    rest = r;
                }
                // `[^/]+` can only be followed by `/` or the end, so greedy is exact.
                Segment::Star => {
                    let n = rest.find('/').unwrap_or(rest.len());
                    if n == 0 {
                        return false;
                    }
                    rest = &rest[n..];
                }
            }
        }
        match tail {
            true => rest.is_empty() || rest.starts_with('/'),
            false => rest.is_empty() || rest == "/",
        }
    }
}

/// Applies the ACL to a verified leaf: CN, OU, DNS SAN, IP SAN, URI SAN in that order; the first
/// match accepts. `Err(UNAUTHORIZED)` when nothing matches (an empty ACL rejects everything).
pub fn check_acl(acl: &Acl, leaf_der: &[u8]) -> Result<(), String> {
    let denied = || UNAUTHORIZED.to_string();
    let cert = Certificate::from_der(leaf_der).map_err(|_| denied())?;
    let names = Names::of(&cert);

    if let Some(cn) = &names.cn {
        if acl.cn.iter().any(|allowed| allowed == cn) {
            return Ok(());
        }
    }
    if names.ou.iter().any(|ou| acl.ou.contains(ou)) {
        return Ok(());
    }
    if names.dns.iter().any(|dns| acl.dns.contains(dns)) {
        return Ok(());
    }
    if names.ip.iter().any(|ip| {
        acl.ip
            .iter()
            .any(|allowed| allowed.to_canonical() == ip.to_canonical())
    }) {
        return Ok(());
    }
    if names
        .uri
        .iter()
        .any(|uri| acl.uri.iter().any(|pattern| pattern.matches(uri)))
    {
        return Ok(());
    }
    Err(denied())
}

/// The names of a leaf that the ACL looks at.
#[derive(Debug, Default)]
struct Names {
    /// The last CommonName, as Go keeps it.
    cn: Option<String>,
    ou: Vec<String>,
    dns: Vec<String>,
    ip: Vec<IpAddr>,
    /// URI SANs in normalized form (scheme lowercased).
    uri: Vec<String>,
}

impl Names {
    fn of(cert: &Certificate) -> Names {
        let mut names = Names::default();
        for atv in cert
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
        {
            let oid = atv.oid.to_string();
            if oid != OID_CN && oid != OID_OU {
                continue;
            }
            let Some(value) = crate::certs::attribute_string(&atv.value) else {
                continue;
            };
            match oid == OID_CN {
                true => names.cn = Some(value),
                false => names.ou.push(value),
            }
        }
        for name in subject_alt_names(cert) {
            match name {
                GeneralName::DnsName(dns) => names.dns.push(dns.to_string()),
                GeneralName::IpAddress(ip) => {
                    if let Some(ip) = ip_from_bytes(ip.as_bytes()) {
                        names.ip.push(ip);
                    }
                }
                GeneralName::UniformResourceIdentifier(uri) => {
                    names.uri.push(normalize_uri(uri.as_ref()));
                }
                _ => {}
            }
        }
        names
    }
}

/// The names of every subjectAltName extension of `cert`, in certificate order; an extension
/// that does not decode is skipped (as Go's parser would have refused it before we got here).
pub fn subject_alt_names(cert: &Certificate) -> Vec<GeneralName> {
    let extensions = cert.tbs_certificate.extensions.iter().flatten();
    extensions
        .filter(|e| e.extn_id.to_string() == OID_SAN)
        .filter_map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
        .flat_map(|san| san.0)
        .collect()
}

/// A SAN iPAddress: 4 octets for IPv4, 16 for IPv6, anything else is not an address.
pub fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
}

/// Go re-serializes URI SANs through `url.Parse`, which lowercases the scheme; the rest of
/// the string is kept as written.
fn normalize_uri(uri: &str) -> String {
    match uri.split_once(':') {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            format!("{}:{rest}", scheme.to_ascii_lowercase())
        }
        _ => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::test_support::{Spec, openssl, scratch_dir, self_signed, sh};

    // ---- pins ------------------------------------------------------------------------------

    #[test]
    fn pin_parse_errors() {
        assert_eq!(
            SpkiPin::parse("abc").unwrap_err(),
            "invalid pin \"abc\": expected format <algo>:<base64-digest>"
        );
        assert_eq!(
            SpkiPin::parse("md5:AAAA").unwrap_err(),
            "invalid pin \"md5:AAAA\": unsupported hash algorithm \"md5\" (supported: sha256, \
             sha384, sha512)"
        );
        assert_eq!(
            SpkiPin::parse("sha256:AA*A").unwrap_err(),
            "invalid pin \"sha256:AA*A\": base64 decode failed: illegal base64 data at input byte 2"
        );
        // Padding is required (strict standard base64).
        let unpadded = "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
        assert!(
            SpkiPin::parse(unpadded)
                .unwrap_err()
                .contains("base64 decode failed: ")
        );
        // URL-safe alphabet is not standard base64.
        let url = "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert!(
            SpkiPin::parse(url)
                .unwrap_err()
                .contains("illegal base64 data at input byte 12")
        );
        assert_eq!(
            SpkiPin::parse("sha384:AAAA").unwrap_err(),
            "invalid pin \"sha384:AAAA\": expected 48 bytes for sha384, got 3"
        );
        assert_eq!(
            SpkiPin::parse("sha256:").unwrap_err(),
            "invalid pin \"sha256:\": expected 32 bytes for sha256, got 0"
        );
        // Case-insensitive algorithm; split at the first colon.
        assert!(SpkiPin::parse("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").is_ok());
        assert!(SpkiPin::parse("sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:").is_err());
    }

    /// The docs/behaviour.md §5.3 openssl pipeline for `algo` over the certificate in `cert`.
    fn openssl_pin(cert: &std::path::Path, algo: &str) -> String {
        sh(&format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | \
             openssl dgst -{algo} -binary | base64 -w0",
            cert.display()
        ))
    }

    #[test]
    fn pins_match_the_openssl_pipeline() {
        let dir = scratch_dir("pins");
        for (name, alg) in [
            ("rsa", &rcgen::PKCS_RSA_SHA256),
            ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
            ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
            ("ed25519", &rcgen::PKCS_ED25519),
        ] {
            let cert = self_signed(alg, &Spec::default());
            let other = self_signed(alg, &Spec::default());
            let (path, _) = cert.write(&dir, name);
            for algo in ["sha256", "sha384", "sha512"] {
                let pin = SpkiPin::parse(&format!("{algo}:{}", openssl_pin(&path, algo)))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    check_pins(std::slice::from_ref(&pin), &cert.der),
                    Ok(()),
                    "{name} {algo}"
                );
                assert_eq!(
                    check_pins(std::slice::from_ref(&pin), &other.der).unwrap_err(),
                    "unauthorized: pin verification failed"
                );
                // Any of several pins.
                let wrong = SpkiPin::parse(&format!("{algo}:{}", openssl_pin(&path, algo)))
                    .map(|mut p| {
                        p.digest[0] ^= 1;
                        p
                    })
                    .unwrap();
                assert_eq!(check_pins(&[wrong.clone(), pin], &cert.der), Ok(()));
                assert!(check_pins(&[wrong], &cert.der).is_err());
            }
        }
    }

    #[test]
    fn pin_runtime_errors() {
        let pin = SpkiPin::parse("sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").unwrap();
        assert_eq!(
            check_pins(std::slice::from_ref(&pin), &[]).unwrap_err(),
            "unauthorized: no certificate presented"
        );
        let err = check_pins(&[pin], b"garbage").unwrap_err();
        assert!(
            err.starts_with("unauthorized: failed to parse certificate: "),
            "{err}"
        );
    }

    // ---- URI patterns ----------------------------------------------------------------------

    fn uri(pattern: &str) -> UriPattern {
        UriPattern::compile(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
    }

    #[test]
    fn uri_pattern_table() {
        let table: &[(&str, &[&str], &[&str])] = &[
            (
                "spiffe://foo/*/bar",
                &["spiffe://foo/baz/bar", "spiffe://foo/baz/bar/"],
                &[
                    "spiffe://foo/bar",
                    "spiffe://foo//bar",
                    "spiffe://foo/baz/bar/x",
                    "spiffe://foox/baz/bar",
                ],
            ),
            (
                "spiffe://foo/*/bar/**",
                &[
                    "spiffe://foo/a/bar",
                    "spiffe://foo/a/bar/",
                    "spiffe://foo/a/bar/x/y",
                ],
                &["spiffe://foo/a/barf", "spiffe://foo//bar/x"],
            ),
            (
                "spiffe://example.com/*",
                &["spiffe://example.com/client1"],
                &["spiffe://example.com/a/b", "spiffe://examplexcom/a"],
            ),
            (
                "spiffe://foo/./bar",
                &["spiffe://foo/./bar"],
                &["spiffe://foo/x/bar"],
            ),
            (".+", &[".+"], &["invalid"]),
        ];
        for (pattern, yes, no) in table {
            let compiled = uri(pattern);
            for input in *yes {
                assert!(compiled.matches(input), "{pattern} should match {input}");
            }
            for input in *no {
                assert!(
                    !compiled.matches(input),
                    "{pattern} should not match {input}"
                );
            }
        }
    }

    #[test]
    fn uri_pattern_rules() {
        assert!(uri("**").matches(""));
        assert!(uri("**").matches("anything/at/all"));
        assert!(uri("**/").matches("x"));
        // A trailing '/' in the pattern is dropped.
        assert!(uri("spiffe://foo/bar/").matches("spiffe://foo/bar"));
        assert!(uri("spiffe://foo/bar/").matches("spiffe://foo/bar/"));
        assert!(!uri("spiffe://foo/bar").matches("spiffe://foo/bar//"));
        // `**` matches zero further segments.
        assert!(uri("spiffe://foo/**").matches("spiffe://foo"));
        assert!(!uri("spiffe://foo/**").matches("spiffe://foox"));
        // Anchored at both ends.
        assert!(!uri("spiffe://foo/bar").matches("xspiffe://foo/bar"));
        assert!(!uri("spiffe://foo/bar").matches("spiffe://foo/barx"));
        // Literal segments: nothing is special.
        assert!(uri("a?b/[c]/d$").matches("a?b/[c]/d$"));
        assert!(!uri("a?b").matches("ab"));
        assert!(uri("*").matches("x/"));
        assert!(!uri("*").matches(""));
    }

    #[test]
    fn uri_pattern_errors() {
        let err = |p: &str| UriPattern::compile(p).unwrap_err();
        assert_eq!(err(""), "input pattern was empty string");
        assert_eq!(
            err("spiffe://**/foo"),
            "wildcard '**' can only appear at end of pattern"
        );
        assert_eq!(
            err("**/**"),
            "wildcard '**' can only appear at end of pattern"
        );
        assert_eq!(
            err("spiffe://foo/a*"),
            "wildcard '*' can only appear between two separators"
        );
        assert_eq!(
            err("spiffe://foo/***"),
            "wildcard '*' can only appear between two separators"
        );
        assert_eq!(
            err("spiffe://*.foo/"),
            "wildcard '*' can only appear between two separators"
        );
        assert_eq!(uri("spiffe://foo/").as_str(), "spiffe://foo/");
    }

    // ---- ACL -------------------------------------------------------------------------------

    fn acl() -> Acl {
        Acl::default()
    }

    fn leaf() -> Vec<u8> {
        self_signed(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &Spec {
                cn: Some("client"),
                ou: Some("team-a"),
                dns: &["client.example.com"],
                ips: &["10.0.0.7", "::ffff:192.0.2.1", "2001:db8::1"],
                uris: &["SPIFFE://example.com/ns/prod/svc"],
                ..Spec::default()
            },
        )
        .der
    }

    #[test]
    fn acl_empty_rejects() {
        assert_eq!(check_acl(&acl(), &leaf()).unwrap_err(), UNAUTHORIZED);
        assert_eq!(check_acl(&acl(), b"junk").unwrap_err(), UNAUTHORIZED);
    }

    #[test]
    fn acl_cn() {
        let der = leaf();
        let ok = Acl {
            cn: vec!["other".into(), "client".into()],
            ..acl()
        };
        assert_eq!(check_acl(&ok, &der), Ok(()));
        for wrong in ["Client", "client ", "clien", "team-a", "client.example.com"] {
            let no = Acl {
                cn: vec![wrong.into()],
                ..acl()
            };
            assert_eq!(check_acl(&no, &der).unwrap_err(), UNAUTHORIZED, "{wrong}");
        }
    }

    /// The leaf of `leaf()` with its CN replaced by a BMPString of `bytes` (the signature no
    /// longer matches, which the ACL never looks at).
    fn leaf_with_bmp_cn(bytes: &[u8]) -> Vec<u8> {
        let mut cert = Certificate::from_der(&leaf()).unwrap();
        for rdn in cert.tbs_certificate.subject.0.iter_mut() {
            let mut atvs: Vec<_> = rdn.0.iter().cloned().collect();
            for atv in atvs.iter_mut().filter(|a| a.oid.to_string() == OID_CN) {
                atv.value = der::Any::new(der::Tag::BmpString, bytes).unwrap();
            }
            rdn.0 = der::asn1::SetOfVec::try_from(atvs).unwrap();
        }
        cert.to_der().unwrap()
    }

    /// Go refuses a BMPString of odd length, so such a CN never matches `--allow-cn`; the ACL
    /// used to drop the stray byte and accept "ab".
    #[test]
    fn acl_cn_odd_length_bmp_string_is_not_a_name() {
        let allow_ab = Acl {
            cn: vec!["ab".into()],
            ..acl()
        };
        assert_eq!(
            check_acl(&allow_ab, &leaf_with_bmp_cn(&[0, b'a', 0, b'b'])),
            Ok(())
        );
        assert_eq!(
            check_acl(&allow_ab, &leaf_with_bmp_cn(&[0, b'a', 0, b'b', 0])).unwrap_err(),
            UNAUTHORIZED
        );
    }

    #[test]
    fn acl_cn_uses_the_last_one_and_ou_any() {
        let dir = scratch_dir("acl");
        let cert = dir.join("c.pem");
        let key = dir.join("k.pem");
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &k,
            "-out",
            &c,
            "-days",
            "1",
            "-subj",
            "/CN=first/OU=x/OU=y/CN=second",
        ]);
        let der = openssl(&["x509", "-in", &c, "-outform", "DER"]);
        assert_eq!(
            check_acl(
                &Acl {
                    cn: vec!["second".into()],
                    ..acl()
                },
                &der
            ),
            Ok(())
        );
        assert!(
            check_acl(
                &Acl {
                    cn: vec!["first".into()],
                    ..acl()
                },
                &der
            )
            .is_err()
        );
        assert_eq!(
            check_acl(
                &Acl {
                    ou: vec!["y".into()],
                    ..acl()
                },
                &der
            ),
            Ok(())
        );
        assert_eq!(
            check_acl(
                &Acl {
                    ou: vec!["x".into()],
                    ..acl()
                },
                &der
            ),
            Ok(())
        );
        assert!(
            check_acl(
                &Acl {
                    ou: vec!["X".into()],
                    ..acl()
                },
                &der
            )
            .is_err()
        );
    }

    #[test]
    fn acl_ou() {
        let der = leaf();
        assert_eq!(
            check_acl(
                &Acl {
                    ou: vec!["team-a".into()],
                    ..acl()
                },
                &der
            ),
            Ok(())
        );
        assert!(
            check_acl(
                &Acl {
                    ou: vec!["team-b".into()],
                    ..acl()
                },
                &der
            )
            .is_err()
        );
        assert!(
            check_acl(
                &Acl {
                    ou: vec!["client".into()],
                    ..acl()
                },
                &der
            )
            .is_err()
        );
    }

    #[test]
    fn acl_dns() {
        let der = leaf();
        let ok = Acl {
            dns: vec!["client.example.com".into()],
            ..acl()
        };
        assert_eq!(check_acl(&ok, &der), Ok(()));
        for wrong in [
            "*.example.com",
            "CLIENT.example.com",
            "example.com",
            "client",
        ] {
            let no = Acl {
                dns: vec![wrong.into()],
                ..acl()
            };
            assert!(check_acl(&no, &der).is_err(), "{wrong}");
        }
    }

    #[test]
    fn acl_ip() {
        let der = leaf();
        for good in [
            "10.0.0.7",
            "::ffff:10.0.0.7",
            "192.0.2.1",
            "::ffff:192.0.2.1",
            "2001:db8::1",
        ] {
            let ok = Acl {
                ip: vec![good.parse().unwrap()],
                ..acl()
            };
            assert_eq!(check_acl(&ok, &der), Ok(()), "{good}");
        }
        for wrong in ["10.0.0.8", "2001:db8::2", "::1"] {
            let no = Acl {
                ip: vec![wrong.parse().unwrap()],
                ..acl()
            };
            assert!(check_acl(&no, &der).is_err(), "{wrong}");
        }
    }

    #[test]
    fn acl_uri() {
        let der = leaf();
        // The SAN's scheme is lowercased before matching.
        for good in [
            "spiffe://example.com/ns/prod/svc",
            "spiffe://example.com/ns/*/svc",
            "spiffe://example.com/**",
        ] {
            let ok = Acl {
                uri: vec![uri(good)],
                ..acl()
            };
            assert_eq!(check_acl(&ok, &der), Ok(()), "{good}");
        }
        for wrong in [
            "spiffe://example.com/ns/*",
            "SPIFFE://example.com/ns/prod/svc",
        ] {
            let no = Acl {
                uri: vec![uri(wrong)],
                ..acl()
            };
            assert!(check_acl(&no, &der).is_err(), "{wrong}");
        }
    }

    #[test]
    fn acl_without_sans() {
        let der = self_signed(
            &rcgen::PKCS_ED25519,
            &Spec {
                cn: Some("only"),
                ..Spec::default()
            },
        )
        .der;
        let all = Acl {
            cn: vec!["x".into()],
            ou: vec!["only".into()],
            dns: vec!["only".into()],
            ip: vec!["127.0.0.1".parse().unwrap()],
            uri: vec![uri("**")],
            policy: None,
        };
        assert_eq!(check_acl(&all, &der).unwrap_err(), UNAUTHORIZED);
        assert_eq!(
            check_acl(
                &Acl {
                    cn: vec!["only".into()],
                    ..acl()
                },
                &der
            ),
            Ok(())
        );
    }

    #[test]
    fn uri_normalization() {
        assert_eq!(
            normalize_uri("SPIFFE://Example.com/A"),
            "spiffe://Example.com/A"
        );
        assert_eq!(normalize_uri("no-scheme"), "no-scheme");
        assert_eq!(normalize_uri("1x:y"), "1x:y");
    }
}
