//! Test PKI: a CA, a server identity and client identities generated with rcgen into a fresh
//! temporary directory, written as PEM files and, on demand, as PKCS#12 via `openssl`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64ct::{Base64, Encoding};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, date_time_ymd,
};
use sha2::{Digest, Sha256};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Keep paths short: UNIX socket paths are limited to 108 bytes.
        let path = std::env::temp_dir().join(format!("gt-it-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns the full path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Key algorithms used for generated identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyAlg {
    fn generate(self) -> KeyPair {
        let alg = match self {
            KeyAlg::Rsa => &rcgen::PKCS_RSA_SHA256,
            KeyAlg::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlg::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlg::Ed25519 => &rcgen::PKCS_ED25519,
        };
        if self == KeyAlg::Ed25519 {
            // rcgen writes Ed25519 keys as PKCS#8 v2, which the OpenSSL 3.0 CLI cannot read
            // for the PKCS#12 fixtures; a PKCS#8 v1 key from OpenSSL works for both.
            let out = std::process::Command::new("openssl")
                .args(["genpkey", "-algorithm", "ed25519"])
                .output()
                .expect("run openssl genpkey");
            assert!(out.status.success(), "openssl genpkey failed");
            let pem = String::from_utf8(out.stdout).expect("PEM is UTF-8");
            return KeyPair::from_pem_and_sign_algo(&pem, alg).expect("load Ed25519 key");
        }
        KeyPair::generate_for(alg).expect("generate key")
    }
}

/// PKCS#12 flavours produced by `openssl pkcs12 -export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P12Kind {
    /// OpenSSL 3 default: PBES2/AES-256-CBC, SHA-256 MAC.
    Modern,
    /// `-legacy`: 3DES/RC2, SHA-1 MAC.
    Legacy,
}

/// What a leaf certificate should contain.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub cn: Option<String>,
    pub ou: Vec<String>,
    pub o: Option<String>,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub alg: KeyAlg,
    pub expired: bool,
    /// Expires this many days from today (overrides the default far-future expiry).
    pub expires_in_days: Option<u64>,
    pub server: bool,
    /// Bytes of a private non-critical extension, to make the certificate this much larger.
    pub padding: usize,
}

impl LeafSpec {
    pub fn client(cn: &str) -> LeafSpec {
        LeafSpec {
            cn: Some(cn.to_string()),
            ou: vec![],
            o: None,
            dns: vec![],
            uris: vec![],
            ips: vec![],
            alg: KeyAlg::P256,
            expired: false,
            expires_in_days: None,
            server: false,
            padding: 0,
        }
    }

    /// A server leaf valid for localhost, 127.0.0.1 and ::1.
    pub fn server(cn: &str) -> LeafSpec {
        LeafSpec {
            dns: vec!["localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            server: true,
            ..LeafSpec::client(cn)
        }
    }

    pub fn ou(mut self, ou: &str) -> LeafSpec {
        self.ou.push(ou.into());
        self
    }
    pub fn o(mut self, o: &str) -> LeafSpec {
        self.o = Some(o.into());
        self
    }
    pub fn dns(mut self, d: &str) -> LeafSpec {
        self.dns.push(d.into());
        self
    }
    pub fn uri(mut self, u: &str) -> LeafSpec {
        self.uris.push(u.into());
        self
    }
    pub fn ip(mut self, ip: &str) -> LeafSpec {
        self.ips.push(ip.parse().expect("ip"));
        self
    }
    pub fn alg(mut self, alg: KeyAlg) -> LeafSpec {
        self.alg = alg;
        self
    }
    pub fn expires_in_days(mut self, days: u64) -> LeafSpec {
        self.expires_in_days = Some(days);
        self
    }
    pub fn padding(mut self, bytes: usize) -> LeafSpec {
        self.padding = bytes;
        self
    }
    pub fn expired(mut self) -> LeafSpec {
        self.expired = true;
        self
    }
}

/// A certificate authority able to issue leaves.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// Path of the CA certificate PEM file (usable as `--cacert`).
    pub cert_path: PathBuf,
    /// The CA's private key (PEM), for issuing with other tools (the `openssl` CLI).
    pub key_pem: String,
}

impl Ca {
    fn new(dir: &TempDir, name: &str) -> Ca {
        let key = KeyAlg::P256.generate();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "Acme");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let cert_pem = cert.pem();
        let cert_path = dir.write(&format!("{name}.ca.pem"), &cert_pem);
        Ca {
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            cert_pem,
            cert_der: cert.der().to_vec(),
            cert_path,
        }
    }

    /// Issues a leaf and writes `<name>.crt`, `<name>.key`, `<name>.pem` (cert + key + CA).
    pub fn issue(&self, dir: &TempDir, name: &str, spec: &LeafSpec) -> Identity {
        let key = spec.alg.generate();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = &spec.cn {
            dn.push(DnType::CommonName, cn.as_str());
        }
        for ou in &spec.ou {
            dn.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        if let Some(o) = &spec.o {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        params.distinguished_name = dn;
        for d in &spec.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(d.as_str().try_into().expect("dns san")));
        }
        for u in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(u.as_str().try_into().expect("uri san")));
        }
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.alg == KeyAlg::Rsa {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![if spec.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if spec.expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        } else {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2090, 1, 1);
        }
        if let Some(days) = spec.expires_in_days {
            let (y, m, d) = date_from_today(days);
            params.not_after = date_time_ymd(y, m, d);
        }
        if spec.padding > 0 {
            // An OCTET STRING of zeros under a private OID; verifiers ignore it.
            let len = (spec.padding as u32).to_be_bytes();
            let skip = len.iter().take_while(|&&b| b == 0).count();
            let mut content = vec![0x04];
            if spec.padding >= 0x80 {
                content.push(0x80 | (4 - skip) as u8);
            }
            content.extend_from_slice(&len[skip.min(3)..]);
            content.resize(content.len() + spec.padding, 0);
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 55555, 1],
                    content,
                ));
        }
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let spki = key.subject_public_key_info();
        let pin = Base64::encode_string(&Sha256::digest(&spki));
        Identity {
            cert_path: dir.write(&format!("{name}.crt"), &cert_pem),
            key_path: dir.write(&format!("{name}.key"), &key_pem),
            combined_path: dir.write(
                &format!("{name}.pem"),
                format!("{cert_pem}{key_pem}{}", self.cert_pem),
            ),
            cert_der: cert.der().to_vec(),
            key_der: key.serialized_der().to_vec(),
            ca_path: self.cert_path.clone(),
            spki_pin: format!("sha256:{pin}"),
            alg: spec.alg,
            name: name.to_string(),
        }
    }
}

/// A leaf certificate with its key, in several on-disk forms.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Leaf, key and issuing CA concatenated (usable as a PEM `--keystore`).
    pub combined_path: PathBuf,
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER.
    pub key_der: Vec<u8>,
    pub ca_path: PathBuf,
    /// `sha256:<base64>` over the leaf's SubjectPublicKeyInfo.
    pub spki_pin: String,
    pub alg: KeyAlg,
    name: String,
}

impl Identity {
    /// `--keystore <combined pem>`.
    pub fn keystore_args(&self) -> Vec<String> {
        vec![
            "--keystore".into(),
            self.combined_path.display().to_string(),
        ]
    }

    /// `--cert <crt> --key <key>`.
    pub fn cert_key_args(&self) -> Vec<String> {
        vec![
            "--cert".into(),
            self.cert_path.display().to_string(),
            "--key".into(),
            self.key_path.display().to_string(),
        ]
    }

    /// Exports the identity (with the CA as chain) as PKCS#12 with `openssl pkcs12 -export`.
    pub fn p12(&self, dir: &TempDir, kind: P12Kind, password: &str) -> PathBuf {
        let tag = match kind {
            P12Kind::Modern => "modern",
            P12Kind::Legacy => "legacy",
        };
        let out = dir.join(&format!(
            "{}.{tag}.{}.p12",
            self.name,
            if password.is_empty() {
                "nopass"
            } else {
                "pass"
            }
        ));
        let mut cmd = Command::new("openssl");
        cmd.args(["pkcs12", "-export", "-in"])
            .arg(&self.cert_path)
            .arg("-inkey")
            .arg(&self.key_path)
            .arg("-certfile")
            .arg(&self.ca_path)
            .arg("-out")
            .arg(&out)
            .arg("-passout")
            .arg(format!("pass:{password}"));
        if kind == P12Kind::Legacy {
            cmd.arg("-legacy");
        }
        let o = cmd.output().expect("run openssl pkcs12");
        assert!(
            o.status.success(),
            "openssl pkcs12 failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }
}

/// CA + server identity + the default client identity, plus an unrelated second CA.
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    pub server: Identity,
    /// CN=client, OU=clients, O=Acme, DNS client.example.com, URI
    /// spiffe://example.com/client1, IP 127.0.0.1.
    pub client: Identity,
    /// An unrelated CA (for wrong-CA tests).
    pub other_ca: Ca,
}

impl Pki {
    pub fn new() -> Pki {
        Pki::with_server_alg(KeyAlg::P256)
    }

    pub fn with_server_alg(alg: KeyAlg) -> Pki {
        let dir = TempDir::new();
        let ca = Ca::new(&dir, "root");
        let other_ca = Ca::new(&dir, "other");
        let server = ca.issue(
            &dir,
            "server",
            &LeafSpec::server("server").ou("servers").o("Acme").alg(alg),
        );
        let client = ca.issue(&dir, "client", &Pki::client_spec());
        Pki {
            dir,
            ca,
            server,
            client,
            other_ca,
        }
    }

    /// The spec of the default client identity.
    pub fn client_spec() -> LeafSpec {
        LeafSpec::client("client")
            .ou("clients")
            .o("Acme")
            .dns("client.example.com")
            .uri("spiffe://example.com/client1")
            .ip("127.0.0.1")
    }

    /// Issues another leaf from the main CA.
    pub fn issue(&self, name: &str, spec: &LeafSpec) -> Identity {
        self.ca.issue(&self.dir, name, spec)
    }

    /// Issues a leaf from the unrelated CA.
    pub fn issue_other(&self, name: &str, spec: &LeafSpec) -> Identity {
        self.other_ca.issue(&self.dir, name, spec)
    }

    pub fn cacert_args(&self) -> Vec<String> {
        vec!["--cacert".into(), self.ca.cert_path.display().to_string()]
    }

    /// `--keystore <server.pem> --cacert <ca>`.
    pub fn server_cred_args(&self) -> Vec<String> {
        let mut v = self.server.keystore_args();
        v.extend(self.cacert_args());
        v
    }

    /// `--keystore <client.pem> --cacert <ca>`.
    pub fn client_cred_args(&self) -> Vec<String> {
        let mut v = self.client.keystore_args();
        v.extend(self.cacert_args());
        v
    }
}

/// The UTC date `days` after today, as (year, month, day).
fn date_from_today(days: u64) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    // Howard Hinnant's civil_from_days.
    let z = (now.as_secs() / 86_400 + days) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}
