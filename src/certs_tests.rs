//! Unit tests of `certs.rs`.

use super::test_support::*;
use super::*;

fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

fn keystore(path: &Path, password: &str) -> IdentitySource {
    IdentitySource::Keystore {
        path: path.to_path_buf(),
        password: password.to_string(),
    }
}

fn load(source: &IdentitySource) -> Result<Arc<CertifiedKey>, String> {
    load_identity(source, &provider()).map(|k| k.expect("an identity"))
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

const ALGS: &[(&str, &rcgen::SignatureAlgorithm)] = &[
    ("rsa", &rcgen::PKCS_RSA_SHA256),
    ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
    ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
    ("p521", &rcgen::PKCS_ECDSA_P521_SHA512),
    ("ed25519", &rcgen::PKCS_ED25519),
];

fn leaf_spec() -> Spec<'static> {
    Spec {
        cn: Some("server"),
        dns: &["localhost"],
        ..Spec::default()
    }
}

#[test]
fn none_source_has_no_identity() {
    assert!(
        load_identity(&IdentitySource::None, &provider())
            .unwrap()
            .is_none()
    );
}

#[test]
fn pem_keystore_and_cert_key_every_key_type() {
    let dir = scratch_dir("pem");
    for (name, alg) in ALGS {
        let (ca, leaf) = ca_and_leaf(alg, &leaf_spec());
        // Combined keystore: leaf, CA, key, with comments around.
        let combined = dir.join(format!("{name}.pem"));
        let text = format!("# leaf\n{}junk\n{}{}", leaf.pem, ca.pem, leaf.key_pem);
        std::fs::write(&combined, text).unwrap();
        let key = load(&keystore(&combined, "ignored")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.cert.len(), 2, "{name}");
        assert_eq!(key.cert[0].as_ref(), leaf.der.as_slice(), "{name}");
        assert_eq!(key.cert[1].as_ref(), ca.der.as_slice(), "{name}");

        let (cert_path, key_path) = leaf.write(&dir, name);
        let source = IdentitySource::CertKey {
            cert: cert_path,
            key: key_path,
        };
        let key = load(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.cert.len(), 1);
        // Reload: a second call re-reads and succeeds again.
        load(&source).unwrap();
    }
}

#[test]
fn pkcs8_v2_ed25519_key() {
    let dir = scratch_dir("v2");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = params(&leaf_spec()).self_signed(&key).unwrap();
    let combined = dir.join("ed.pem");
    std::fs::write(&combined, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    load(&keystore(&combined, "")).unwrap();
}

#[test]
fn traditional_pem_keys() {
    let dir = scratch_dir("trad");
    for (name, alg, label) in [
        ("rsa", &rcgen::PKCS_RSA_SHA256, "RSA PRIVATE KEY"),
        ("p256", &rcgen::PKCS_ECDSA_P256_SHA256, "EC PRIVATE KEY"),
        ("p384", &rcgen::PKCS_ECDSA_P384_SHA384, "EC PRIVATE KEY"),
    ] {
        let leaf = self_signed(alg, &leaf_spec());
        let (cert_path, key_path) = leaf.write(&dir, name);
        let trad = dir.join(format!("{name}.trad.key"));
        openssl(&[
            "pkey",
            "-in",
            &p(&key_path),
            "-traditional",
            "-out",
            &p(&trad),
        ]);
        let text = std::fs::read_to_string(&trad).unwrap();
        assert!(text.contains(&format!("BEGIN {label}")), "{text}");
        let source = IdentitySource::CertKey {
            cert: cert_path,
            key: trad,
        };
        load(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Builds a PKCS#12 file with openssl; `extra` selects the flavour.
fn p12(dir: &Path, name: &str, leaf: &Cert, ca: &Cert, pass: &str, extra: &[&str]) -> PathBuf {
    let (cert_path, key_path) = leaf.write(dir, name);
    let (ca_path, _) = ca.write(dir, &format!("{name}-ca"));
    let out = dir.join(format!("{name}.p12"));
    let passout = format!("pass:{pass}");
    let mut args = vec![
        "pkcs12",
        "-export",
        "-in",
        &p(&cert_path),
        "-inkey",
        &p(&key_path),
        "-certfile",
        &p(&ca_path),
        "-out",
        &p(&out),
        "-passout",
        &passout,
    ]
    .into_iter()
    .map(str::to_string)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(&args);
    out
}

#[test]
fn pkcs12_every_key_type_and_flavour() {
    let dir = scratch_dir("p12");
    let flavours: &[(&str, &str, &[&str])] = &[
        ("modern", "secret", &[]),
        ("legacy", "secret", &["-legacy"]),
        (
            "3des",
            "secret",
            &[
                "-keypbe",
                "PBE-SHA1-3DES",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
            ],
        ),
        (
            "rc2-128",
            "secret",
            &[
                "-legacy",
                "-keypbe",
                "PBE-SHA1-RC2-128",
                "-certpbe",
                "PBE-SHA1-RC2-128",
                "-macalg",
                "sha1",
            ],
        ),
        ("sha512-mac", "secret", &["-macalg", "sha512"]),
        ("empty", "", &[]),
        ("empty-legacy", "", &["-legacy"]),
        (
            "nomac",
            "",
            &["-keypbe", "NONE", "-certpbe", "NONE", "-nomac"],
        ),
    ];
    for (name, alg) in ALGS {
        let (ca, leaf) = ca_and_leaf(alg, &leaf_spec());
        for (flavour, pass, extra) in flavours {
            let file = p12(&dir, &format!("{name}-{flavour}"), &leaf, &ca, pass, extra);
            let key =
                load(&keystore(&file, pass)).unwrap_or_else(|e| panic!("{name} {flavour}: {e}"));
            assert_eq!(key.cert.len(), 2, "{name} {flavour}");
            assert_eq!(
                key.cert[0].as_ref(),
                leaf.der.as_slice(),
                "{name} {flavour}"
            );
            assert_eq!(key.cert[1].as_ref(), ca.der.as_slice(), "{name} {flavour}");
        }
    }
}

#[test]
fn pkcs12_wrong_password() {
    let dir = scratch_dir("p12pw");
    let (ca, leaf) = ca_and_leaf(&rcgen::PKCS_ECDSA_P256_SHA256, &leaf_spec());
    for (flavour, pass, extra) in [
        ("modern", "secret", &[][..]),
        ("legacy", "secret", &["-legacy"][..]),
        ("empty", "", &[][..]),
        (
            "nomac",
            "",
            &["-keypbe", "NONE", "-certpbe", "NONE", "-nomac"][..],
        ),
    ] {
        let file = p12(&dir, flavour, &leaf, &ca, pass, extra);
        let wrong = if pass.is_empty() { "x" } else { "wrong" };
        let err = load(&keystore(&file, wrong)).unwrap_err();
        let f = p(&file);
        assert_eq!(
            err,
            format!(
                "reading certificate file \"{f}\": failed to parse '{f}': unable to read \
                 keystore: pkcs12: decryption password incorrect"
            ),
            "{flavour}"
        );
    }
    // A password-protected file opened with no password.
    let file = p12(&dir, "nopass", &leaf, &ca, "secret", &[]);
    let err = load(&keystore(&file, "")).unwrap_err();
    assert!(
        err.ends_with("pkcs12: decryption password incorrect"),
        "{err}"
    );
}

#[test]
fn pkcs12_detected_by_magic_bytes() {
    let dir = scratch_dir("p12magic");
    let (ca, leaf) = ca_and_leaf(&rcgen::PKCS_RSA_SHA256, &leaf_spec());
    let file = p12(&dir, "k", &leaf, &ca, "pw", &[]);
    let renamed = dir.join("keystore.bin");
    std::fs::rename(&file, &renamed).unwrap();
    load(&keystore(&renamed, "pw")).unwrap();
}

#[test]
fn mismatched_key() {
    let dir = scratch_dir("mismatch");
    let a = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &leaf_spec());
    let b = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &leaf_spec());
    let rsa = self_signed(&rcgen::PKCS_RSA_SHA256, &leaf_spec());
    let (cert, _) = a.write(&dir, "a");
    let (_, key_b) = b.write(&dir, "b");
    let (_, key_rsa) = rsa.write(&dir, "rsa");
    let err = load(&IdentitySource::CertKey {
        cert: cert.clone(),
        key: key_b,
    })
    .unwrap_err();
    assert_eq!(
        err,
        "parsing X509 key pair: tls: private key does not match public key"
    );
    let err = load(&IdentitySource::CertKey { cert, key: key_rsa }).unwrap_err();
    assert_eq!(
        err,
        "parsing X509 key pair: tls: private key type does not match public key type"
    );
    // The same through a combined PEM keystore.
    let combined = dir.join("combined.pem");
    std::fs::write(&combined, format!("{}{}", a.pem, b.key_pem)).unwrap();
    let err = load(&keystore(&combined, "")).unwrap_err();
    assert_eq!(
        err,
        "parsing X509 key pair: tls: private key does not match public key"
    );
}

#[test]
fn certificate_only_files() {
    let dir = scratch_dir("certonly");
    let (ca, leaf) = ca_and_leaf(&rcgen::PKCS_ECDSA_P256_SHA256, &leaf_spec());
    let one = dir.join("one.pem");
    std::fs::write(&one, &leaf.pem).unwrap();
    assert_eq!(
        load(&keystore(&one, "")).unwrap_err(),
        "parsing X509 key pair: tls: found a certificate rather than a key in the PEM for \
         the private key"
    );
    let two = dir.join("two.pem");
    std::fs::write(&two, format!("{}{}", leaf.pem, ca.pem)).unwrap();
    assert_eq!(
        load(&keystore(&two, "")).unwrap_err(),
        "parsing X509 key pair: tls: failed to find PEM block with type ending in \"PRIVATE \
         KEY\" in key input after skipping PEM blocks of the following types: [CERTIFICATE \
         CERTIFICATE]"
    );
    // DER certificate keystore: one certificate, no key.
    let der = dir.join("leaf.der");
    std::fs::write(&der, &leaf.der).unwrap();
    assert_eq!(
        load(&keystore(&der, "")).unwrap_err(),
        "parsing X509 key pair: tls: found a certificate rather than a key in the PEM for \
         the private key"
    );
    // A DER certificate named .crt is read as PEM: no blocks.
    let crt = dir.join("leaf.crt");
    std::fs::write(&crt, &leaf.der).unwrap();
    assert_eq!(
        load(&keystore(&crt, "")).unwrap_err(),
        format!("error reading file '{}', no certificates found", p(&crt))
    );
    // Key only: certificates missing.
    let key_only = dir.join("key.pem");
    std::fs::write(&key_only, &leaf.key_pem).unwrap();
    assert_eq!(
        load(&keystore(&key_only, "")).unwrap_err(),
        "parsing X509 key pair: tls: failed to find certificate PEM data in certificate \
         input, but did find a private key; PEM inputs may have been switched"
    );
}

#[test]
fn unreadable_empty_and_unknown_files() {
    let dir = scratch_dir("files");
    let missing = dir.join("missing.pem");
    let m = p(&missing);
    assert_eq!(
        load(&keystore(&missing, "")).unwrap_err(),
        format!("reading certificate file \"{m}\": open {m}: no such file or directory")
    );
    let (cert, key) = self_signed(&rcgen::PKCS_ED25519, &leaf_spec()).write(&dir, "ok");
    assert_eq!(
        load(&IdentitySource::CertKey {
            cert: cert.clone(),
            key: missing.clone(),
        })
        .unwrap_err(),
        format!("reading certificate file \"{m}\": open {m}: no such file or directory")
    );
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "just a comment\n").unwrap();
    assert_eq!(
        load(&IdentitySource::CertKey {
            cert: cert.clone(),
            key: empty.clone(),
        })
        .unwrap_err(),
        format!("error reading file '{}', no certificates found", p(&empty))
    );
    assert_eq!(
        load(&IdentitySource::CertKey {
            cert: empty.clone(),
            key,
        })
        .unwrap_err(),
        format!("error reading file '{}', no certificates found", p(&empty))
    );
    let unknown = dir.join("keystore.bin");
    std::fs::write(&unknown, b"\x00\x01\x02\x03hello").unwrap();
    let u = p(&unknown);
    assert_eq!(
        load(&keystore(&unknown, "")).unwrap_err(),
        format!(
            "reading certificate file \"{u}\": failed to detect format for '{u}': unable to \
             guess file format"
        )
    );
    let directory = p(&dir);
    let err = load(&keystore(&dir, "")).unwrap_err();
    assert_eq!(
        err,
        format!("reading certificate file \"{directory}\": read {directory}: is a directory")
    );
}

#[test]
fn format_detection() {
    let f = |name: &str, data: &[u8]| detect_format(Path::new(name), data);
    assert_eq!(f("a.PEM", b""), Ok(Format::Pem));
    assert_eq!(f("a.crt", b"\x30\x82"), Ok(Format::Pem));
    assert_eq!(f("a.p7b", b""), Ok(Format::Pem));
    assert_eq!(f("a.P12", b""), Ok(Format::Pkcs12));
    assert_eq!(f("a.pfx", b""), Ok(Format::Pkcs12));
    assert_eq!(f("a.jks", b""), Ok(Format::Jceks));
    assert_eq!(f("a.der", b""), Ok(Format::Der));
    assert_eq!(f("a", b"\xce\xce\xce\xce"), Ok(Format::Jceks));
    assert_eq!(f("a", b"\xfe\xed\xfe\xed"), Ok(Format::Jceks));
    assert_eq!(f("a", b"-----BEGIN"), Ok(Format::Pem));
    assert_eq!(f("a", b"CONNECT"), Ok(Format::Pem));
    assert_eq!(f("a", b"\x30\x82\x03\x10"), Ok(Format::Der));
    assert_eq!(f("a", b"\x30\x82\x0a\x10"), Ok(Format::Pkcs12));
    assert_eq!(
        f("x.bin", b"\x30\x81"),
        Err("failed to detect format for 'x.bin': unable to guess file format".to_string())
    );
}

#[test]
fn jceks_goes_to_the_jceks_decoder() {
    let dir = scratch_dir("jceks");
    let file = dir.join("store.jceks");
    std::fs::write(&file, b"\xce\xce\xce\xce\x00\x00\x00\x01").unwrap();
    let err = load(&keystore(&file, "pw")).unwrap_err();
    let f = p(&file);
    let expected = match cfg!(feature = "jceks") {
        true => "unable to parse keystore: invalid JCEKS data: unexpected version: 1 != 2",
        false => "JCEKS/JKS keystores are not supported by this build; convert to PKCS#12",
    };
    assert_eq!(
        err,
        format!("reading certificate file \"{f}\": failed to parse '{f}': {expected}")
    );
}

#[test]
fn pkcs11_chain_files() {
    let dir = scratch_dir("chain");
    let (ca, leaf) = ca_and_leaf(&rcgen::PKCS_ECDSA_P256_SHA256, &leaf_spec());
    let file = dir.join("chain.p12");
    // Read as PEM whatever the name; keys and other blocks are skipped.
    std::fs::write(&file, format!("{}{}{}", leaf.pem, leaf.key_pem, ca.pem)).unwrap();
    let chain = read_pem_chain(&file).unwrap();
    assert_eq!(
        chain,
        [CertificateDer::from(leaf.der), CertificateDer::from(ca.der)]
    );
    let f = p(&file);
    std::fs::write(&file, "no PEM here\n").unwrap();
    assert_eq!(
        read_pem_chain(&file).unwrap_err(),
        format!("error reading file '{f}', no certificates found")
    );
    std::fs::write(&file, &leaf.key_pem).unwrap();
    assert_eq!(
        read_pem_chain(&file).unwrap_err(),
        format!("no certificates found in file '{f}'")
    );
    std::fs::write(
        &file,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert_eq!(
        read_pem_chain(&file).unwrap_err(),
        format!("error reading file '{f}': x509: malformed certificate")
    );
    let missing = dir.join("missing.pem");
    assert_eq!(
        read_pem_chain(&missing).unwrap_err(),
        format!("open {}: no such file or directory", p(&missing))
    );
}

#[test]
fn expired_and_future_leaf() {
    let dir = scratch_dir("expired");
    let spec = Spec {
        cn: Some("old"),
        expired: true,
        ..Spec::default()
    };
    let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &spec).write(&dir, "old");
    let err = load(&IdentitySource::CertKey {
        cert: cert.clone(),
        key,
    })
    .unwrap_err();
    assert_eq!(
        err,
        format!(
            "certificate \"{}\" has expired (not after 2001-01-01T00:00:00Z)",
            p(&cert)
        )
    );

    let mut params = params(&leaf_spec());
    params.not_before = rcgen::date_time_ymd(3000, 1, 1);
    params.not_after = rcgen::date_time_ymd(3001, 1, 1);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let err = check_validity(cert.der(), Path::new("f.pem"), SystemTime::now()).unwrap_err();
    assert_eq!(
        err,
        "certificate \"f.pem\" is not yet valid (not before 3000-01-01T00:00:00Z)"
    );
}

#[test]
fn encrypted_pem_key_fails_to_parse() {
    let dir = scratch_dir("encpem");
    let leaf = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, &leaf_spec());
    let (cert, key) = leaf.write(&dir, "leaf");
    let enc = dir.join("enc.key");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        &p(&key),
        "-out",
        &p(&enc),
        "-passout",
        "pass:pw",
    ]);
    let err = load(&IdentitySource::CertKey { cert, key: enc }).unwrap_err();
    assert_eq!(
        err,
        "parsing X509 key pair: tls: failed to parse private key"
    );
}

#[test]
fn pem_scanner() {
    let text = b"hello\n-----BEGIN FOO-----\nAAEC\n-----END FOO-----\n\
        -----BEGIN BAD-----\n!!!!\n-----END BAD-----\n\
        x -----BEGIN NOTATLINESTART-----\nAA==\n-----END NOTATLINESTART-----\n\
        -----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: x\n\nAAEC\n\
        -----END RSA PRIVATE KEY-----\r\n-----BEGIN UNTERMINATED-----\nAAEC\n";
    let blocks = pem_blocks(text);
    let labels: Vec<&str> = blocks.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["FOO", "RSA PRIVATE KEY"]);
    assert_eq!(blocks[0].der, [0, 1, 2]);
    assert_eq!(blocks[1].der, [0, 1, 2]);
}

#[test]
fn trust_bundle() {
    let dir = scratch_dir("trust");
    let (ca, leaf) = ca_and_leaf(&rcgen::PKCS_ECDSA_P256_SHA256, &leaf_spec());
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, format!("{}{}{}", ca.key_pem, ca.pem, leaf.pem)).unwrap();
    let certs = load_trust(Some(&bundle), &SystemTrust::default()).unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0].as_ref(), ca.der.as_slice());

    let keys = dir.join("keys.pem");
    std::fs::write(&keys, &ca.key_pem).unwrap();
    assert_eq!(
        load_trust(Some(&keys), &SystemTrust::default()).unwrap_err(),
        "loading trust store: unable to read certificates from CA bundle"
    );
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert_eq!(
        load_trust(Some(&garbage), &SystemTrust::default()).unwrap_err(),
        "loading trust store: unable to read certificates from CA bundle"
    );
    assert_eq!(
        load_trust(Some(Path::new("/nonexist")), &SystemTrust::default()).unwrap_err(),
        "loading trust store: open /nonexist: no such file or directory"
    );
}

#[test]
fn system_trust_store_lookup() {
    let dir = scratch_dir("systrust");
    let (ca, leaf) = ca_and_leaf(&rcgen::PKCS_ECDSA_P256_SHA256, &leaf_spec());
    let other = self_signed(&rcgen::PKCS_ED25519, &leaf_spec());
    let file = dir.join("bundle.pem");
    std::fs::write(&file, &ca.pem).unwrap();
    let certdir = dir.join("certs");
    std::fs::create_dir(&certdir).unwrap();
    std::fs::write(certdir.join("a.pem"), format!("{}{}", leaf.pem, ca.pem)).unwrap();
    std::fs::write(certdir.join("b.pem"), &other.pem).unwrap();
    std::os::unix::fs::symlink("b.pem", certdir.join("1234abcd.0")).unwrap();

    let dirs = format!("{}:{}", p(&certdir), p(&dir.join("missing")));
    let roots = system_trust(Some(file.clone().into()), Some(dirs.into())).unwrap();
    let ders: Vec<&[u8]> = roots.iter().map(|c| c.as_ref()).collect();
    assert_eq!(
        ders,
        [ca.der.as_slice(), leaf.der.as_slice(), other.der.as_slice()]
    );

    // A missing SSL_CERT_FILE and directories: empty, no error (Go ignores ENOENT).
    let none = system_trust(
        Some(dir.join("nope").into()),
        Some(p(&dir.join("no")).into()),
    );
    assert_eq!(none.unwrap().len(), 0);

    // The real system store, when this machine has one.
    if Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        assert!(system_trust(None, None).unwrap().len() > 10);
    }
}

fn name(s: &str) -> x509_cert::name::Name {
    s.parse().expect("RFC 4514 name")
}

#[test]
fn subject_rendering() {
    // Fixed order regardless of the certificate's; multi-valued OU joined by '+'.
    assert_eq!(
        render_name(&name("C=US,O=Acme,OU=servers,CN=server")),
        "CN=server,OU=servers,O=Acme,C=US"
    );
    assert_eq!(
        render_name(&name("CN=server,OU=a,OU=b,L=Town,ST=State,C=US,O=Acme")),
        "CN=server,OU=b+OU=a,O=Acme,L=Town,ST=State,C=US"
    );
    // The last CN only.
    assert_eq!(render_name(&name("CN=second,CN=first")), "CN=second");
    // Escaping.
    assert_eq!(
        render_name(&name("CN=a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h")),
        "CN=a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h"
    );
    assert_eq!(
        render_name(&name("CN=\\ lead and trail\\ ")),
        "CN=\\ lead and trail\\ "
    );
    assert_eq!(render_name(&name("CN=\\#hash#")), "CN=\\#hash#");
    // Non-standard attributes last, in reverse order, re-marshalled as Go does.
    let rendered = render_name(&name(
        "CN=x,0.9.2342.19200300.100.1.25=#160363646d,1.2.840.113549.1.9.1=#1603614062",
    ));
    assert_eq!(
        rendered,
        "CN=x,0.9.2342.19200300.100.1.25=#130363646d,1.2.840.113549.1.9.1=#0c03614062"
    );
}

#[test]
fn subject_rendering_from_openssl_certificate() {
    let dir = scratch_dir("subj");
    let cert = dir.join("c.pem");
    let key = dir.join("k.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p(&key),
        "-out",
        &p(&cert),
        "-days",
        "1",
        "-subj",
        "/C=US/ST=CA/L=SF/O=Acme/OU=b+OU=a/CN=server, inc/emailAddress=x@y.z",
    ]);
    let der = openssl(&["x509", "-in", &p(&cert), "-outform", "DER"]);
    assert_eq!(
        subject_string(&der),
        "CN=server\\, inc,OU=a+OU=b,O=Acme,L=SF,ST=CA,C=US,\
         1.2.840.113549.1.9.1=#0c057840792e7a"
    );
    assert_eq!(subject_string(b"not a certificate"), "");
}
