//! `--check`: the report printed once a start's loading steps succeeded, and the listener
//! checks that need no bind. `main.rs` runs parsing, mode validation and the certificate, key
//! and CA loading of a real start, then calls this instead of binding. Reads files and
//! resolves names; never binds, never starts a thread, never touches systemd or the sandbox.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use der::Decode;
use der::asn1::{ObjectIdentifier, UintRef};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;

use crate::authz::Authorizer;
use crate::certs::CertError;
use crate::config::{Config, Mode};
use crate::identity::IdentitySource;
use crate::net::{self, Addr, AddrKind};
use crate::{auth, certs};

/// Certificates expiring sooner than this get a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 60 * 60);

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";
const CURVES: &[(&str, &str)] = &[
    ("1.2.840.10045.3.1.7", "P-256"),
    ("1.3.132.0.34", "P-384"),
    ("1.3.132.0.35", "P-521"),
];

/// What `--check` prints: report lines for stdout (the last is `ok`) and warnings for stderr.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks what a start could only find out by binding `addr`, without binding: a TCP host
/// must resolve, a UNIX socket's directory must exist, `launchd:` fails. The error is the one
/// the bind would have returned. `Ok(Some(w))` is a warning: a UNIX socket file already exists
/// (a start fails unless it is gone by then, e.g. when the running instance stops first).
pub fn probe_listen(addr: &Addr) -> io::Result<Option<String>> {
    match &addr.kind {
        AddrKind::Tcp { host, port } => net::resolve(host, port).map(|_| None),
        AddrKind::Unix(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                let errno = if dir.exists() {
                    libc::ENOTDIR
                } else {
                    libc::ENOENT
                };
                let e = io::Error::from_raw_os_error(errno);
                return Err(net::op_error(
                    "listen unix",
                    &path.display().to_string(),
                    "bind",
                    e,
                ));
            }
            Ok(path.symlink_metadata().is_ok().then(|| {
                format!(
                    "{} exists: a start fails with \"address already in use\" unless it is removed first",
                    path.display()
                )
            }))
        }
        // Only the started service receives its sockets; nothing to check here.
        AddrKind::Systemd(_) => Ok(None),
        AddrKind::Launchd(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "launchd socket activation is only supported on darwin",
        )),
    }
}

/// The report for a configuration whose start-up loading already succeeded. Re-reads the
/// identity and trust files with the same loaders to describe them. `now` decides expiry. The
/// listener probes and their warnings are the caller's (`probe_listen`).
pub fn report(
    config: &Config,
    source: &dyn IdentitySource,
    authz: &dyn Authorizer,
    now: SystemTime,
) -> Result<Report, CertError> {
    let mut r = Report::default();
    let mode = match config.mode {
        Mode::Server(_) => "server",
        Mode::Client(_) => "client",
    };
    r.lines.push(format!("mode: {mode}"));
    r.lines
        .push(format!("listen: {}{}", config.listen, note(&config.listen)));
    r.lines.push(format!("target: {}", config.target));
    if let Some(status) = &config.status {
        r.lines
            .push(format!("status: {}{}", status.addr, note(&status.addr)));
    }

    let provider = crate::tls::provider(&config.tls);
    let location = source.location();
    let path = location
        .rsplit_once(" (")
        .map_or(location.as_str(), |(path, _)| path);
    r.lines.push(format!("identity: {location}"));
    match source.load(&provider)? {
        None => {}
        Some(identity) => {
            let leaf = Certificate::from_der(&identity.cert[0])
                .map_err(|e| CertError::Identity(format!("x509: {e}")))?;
            describe_leaf(&mut r.lines, &leaf, now);
            r.lines
                .push(format!("  chain: {} certificate(s)", identity.cert.len()));
            r.lines
                .extend(source.check_lines().into_iter().map(|l| format!("  {l}")));
            for (i, der) in identity.cert.iter().enumerate() {
                let Ok(cert) = Certificate::from_der(der) else {
                    continue;
                };
                let what = match i {
                    0 => format!("certificate \"{path}\""),
                    _ => format!("chain certificate {i} of \"{path}\""),
                };
                expiry_warning(&mut r.warnings, &what, &cert, now);
            }
        }
    }

    let trust = match source.trust_anchors() {
        Some(anchors) => anchors,
        None => certs::load_trust(config.cacert.as_deref(), &config.system_trust)
            .map_err(CertError::Trust)?,
    };
    match &config.cacert {
        Some(ca) => {
            r.lines.push(format!(
                "ca: {} ({} certificate(s))",
                ca.display(),
                trust.len()
            ));
            for der in &trust {
                let Ok(cert) = Certificate::from_der(der) else {
                    continue;
                };
                let what = format!(
                    "CA certificate \"{}\" in \"{}\"",
                    certs::render_name(&cert.tbs_certificate.subject),
                    ca.display()
                );
                expiry_warning(&mut r.warnings, &what, &cert, now);
            }
        }
        None => r.lines.push(format!(
            "ca: system trust store ({} certificate(s))",
            trust.len()
        )),
    }

    r.lines.extend(authz.check_lines());
    r.lines.push("ok".to_string());
    Ok(r)
}

/// A note after an address that `--check` cannot fully check.
fn note(addr: &Addr) -> &'static str {
    match addr.kind {
        AddrKind::Systemd(_) => " (passed by systemd at start; not checked)",
        _ => "",
    }
}

/// Subject, issuer, SANs, validity and key type, indented under `identity:`.
fn describe_leaf(lines: &mut Vec<String>, leaf: &Certificate, now: SystemTime) {
    let tbs = &leaf.tbs_certificate;
    lines.push(format!("  subject: {}", certs::render_name(&tbs.subject)));
    lines.push(format!("  issuer: {}", certs::render_name(&tbs.issuer)));
    let sans = sans(leaf);
    if !sans.is_empty() {
        lines.push(format!("  sans: {}", sans.join(", ")));
    }
    lines.push(format!(
        "  not before: {}",
        tbs.validity.not_before.to_date_time()
    ));
    let left = tbs
        .validity
        .not_after
        .to_unix_duration()
        .saturating_sub(since_epoch(now));
    lines.push(format!(
        "  not after: {} (in {} days)",
        tbs.validity.not_after.to_date_time(),
        left.as_secs() / 86_400
    ));
    lines.push(format!("  key: {}", key_type(leaf)));
}

/// `DNS:x`, `IP:x`, `URI:x` and `email:x` names, in certificate order.
fn sans(cert: &Certificate) -> Vec<String> {
    let mut out = Vec::new();
    for name in auth::subject_alt_names(cert) {
        match name {
            GeneralName::DnsName(n) => out.push(format!("DNS:{n}")),
            GeneralName::UniformResourceIdentifier(u) => out.push(format!("URI:{u}")),
            GeneralName::Rfc822Name(m) => out.push(format!("email:{m}")),
            GeneralName::IpAddress(ip) => match auth::ip_from_bytes(ip.as_bytes()) {
                Some(ip) => out.push(format!("IP:{ip}")),
                None => out.push(format!("IP:{:02x?}", ip.as_bytes())),
            },
            _ => {}
        }
    }
    out
}

/// `RSA 2048`, `ECDSA P-256`, `Ed25519`, or the algorithm's OID.
fn key_type(cert: &Certificate) -> String {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    match spki.algorithm.oid.to_string().as_str() {
        OID_RSA => {
            let bits = spki
                .subject_public_key
                .as_bytes()
                .and_then(|der| rsa_modulus_bits(der).ok());
            match bits {
                Some(bits) => format!("RSA {bits}"),
                None => "RSA".to_string(),
            }
        }
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .map(|oid| oid.to_string());
            let name = curve
                .as_deref()
                .and_then(|c| CURVES.iter().find(|(oid, _)| *oid == c))
                .map_or_else(|| curve.clone().unwrap_or_default(), |(_, n)| n.to_string());
            format!("ECDSA {name}")
        }
        OID_ED25519 => "Ed25519".to_string(),
        other => other.to_string(),
    }
}

/// The bit length of the modulus of a DER `RSAPublicKey`.
fn rsa_modulus_bits(der: &[u8]) -> der::Result<usize> {
    use der::{Reader, SliceReader};
    let mut reader = SliceReader::new(der)?;
    reader.sequence(|r| {
        let n = UintRef::decode(r)?;
        let _e = UintRef::decode(r)?;
        let bytes = n.as_bytes();
        let lead = bytes.first().map_or(8, |b| b.leading_zeros() as usize);
        Ok(bytes.len() * 8 - lead)
    })
}

/// Warns about `cert` when it expired or expires within [`EXPIRY_WARNING`] of `now`.
fn expiry_warning(warnings: &mut Vec<String>, what: &str, cert: &Certificate, now: SystemTime) {
    let not_after = &cert.tbs_certificate.validity.not_after;
    let now = since_epoch(now);
    let end = not_after.to_unix_duration();
    if end < now {
        warnings.push(format!(
            "{what} has expired (not after {})",
            not_after.to_date_time()
        ));
    } else if end - now < EXPIRY_WARNING {
        warnings.push(format!(
            "{what} expires in {} days (not after {})",
            (end - now).as_secs() / 86_400,
            not_after.to_date_time()
        ));
    }
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}
