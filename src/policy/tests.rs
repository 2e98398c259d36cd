//! Module tests: real bundles (directories, `tar`-made archives, single files) loaded by the
//! real engine, the `input` document against the reference's capture, and the decision,
//! error and time-bound rules.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

use super::input::{Json, certificate, input_document};
use super::{Denial, Policy, sandbox_paths};

const SECOND: Duration = Duration::from_secs(1);

/// A fresh scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gt-policy-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn path(&self, rel: &str) -> String {
        self.0.join(rel).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tar czf <out> -C <dir> <members…>`, as an operator would build a bundle by hand.
fn tar_gz(dir: &Path, out: &str, members: &[&str]) {
    let status = Command::new("tar")
        .arg("czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .args(members)
        .status()
        .expect("the tar command is needed to build bundles");
    assert!(status.success());
}

struct Leaf {
    der: Vec<u8>,
}

fn leaf(f: impl FnOnce(&mut CertificateParams)) -> Leaf {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    f(&mut p);
    let _ = ca_cert;
    Leaf {
        der: p.signed_by(&key, &issuer).unwrap().der().to_vec(),
    }
}

fn client_leaf() -> Leaf {
    leaf(|p| {
        p.distinguished_name
            .push(DnType::OrganizationName, "Example Org");
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "Payments");
        p.distinguished_name.push(DnType::CommonName, "client");
        p.subject_alt_names = vec![
            SanType::DnsName("client.example.com".try_into().unwrap()),
            SanType::URI(
                "spiffe://example.com/ns/default/sa/client"
                    .try_into()
                    .unwrap(),
            ),
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
            SanType::IpAddress("2001:db8::1".parse().unwrap()),
            SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
        ];
        p.serial_number = Some(SerialNumber::from_slice(&[0x12, 0x34]));
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    })
}

fn other_leaf() -> Leaf {
    leaf(|p| {
        p.distinguished_name.push(DnType::CommonName, "other");
        p.subject_alt_names = vec![SanType::DnsName("other.example.com".try_into().unwrap())];
    })
}

/// A bundle directory holding one module.
fn dir_policy(s: &Scratch, rego: &str) -> String {
    s.write("bundle/policy.rego", rego);
    s.path("bundle")
}

fn allowed(p: &Policy, l: &Leaf) -> Result<(), Denial> {
    p.evaluate(&l.der, 5 * SECOND)
}

#[test]
fn worked_example_input_matches_the_reference_capture() {
    let pem = include_str!("testdata/worked-example.pem");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = super::der_from_base64(&b64);
    let expected = include_str!("testdata/worked-example.json").trim_end();
    assert_eq!(input_document(&der).to_json(), expected);
}

/// A leaf with every decoded extension family (policies, mappings, policy constraints,
/// name constraints, CRL distribution points, AIA, unknown EKU, URIs of every shape, a
/// multi-valued subject with repeated CNs), RSA key, 136-bit serial, captured from the
/// reference the same way.
#[test]
fn extensions_input_matches_the_reference_capture() {
    let pem = include_str!("testdata/extensions.pem");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = super::der_from_base64(&b64);
    let expected = include_str!("testdata/extensions.json").trim_end();
    let got = input_document(&der).to_json();
    if got != expected {
        // Name the first differing field before failing on the whole document.
        let (Json::Obj(ours), theirs) = (certificate(&der), expected) else {
            unreachable!()
        };
        for (k, v) in ours {
            let needle = format!("\"{k}\":{}", v.to_json());
            assert!(theirs.contains(&needle), "{k} differs: ours {needle}");
        }
    }
    assert_eq!(got, expected);
}

fn field<'a>(j: &'a Json, key: &str) -> &'a Json {
    match j {
        Json::Obj(fields) => &fields.iter().find(|(k, _)| *k == key).unwrap().1,
        _ => panic!("not an object"),
    }
}

#[test]
fn input_has_every_field_family() {
    let cert = certificate(&client_leaf().der);
    let Json::Obj(fields) = &cert else { panic!() };
    assert_eq!(fields.len(), 53);
    assert_eq!(
        field(field(&cert, "Subject"), "CommonName"),
        &Json::Str("client".into())
    );
    assert_eq!(
        field(field(&cert, "Subject"), "OrganizationalUnit").to_json(),
        r#"["Payments"]"#
    );
    assert_eq!(field(field(&cert, "Subject"), "Country"), &Json::Null);
    assert_eq!(
        field(field(&cert, "Issuer"), "CommonName"),
        &Json::Str("Test CA".into())
    );
    assert_eq!(field(&cert, "SerialNumber"), &Json::Num("4660".into()));
    assert_eq!(
        field(&cert, "DNSNames").to_json(),
        r#"["client.example.com"]"#
    );
    assert_eq!(
        field(&cert, "IPAddresses").to_json(),
        r#"["127.0.0.1","2001:db8::1"]"#
    );
    assert_eq!(
        field(&cert, "EmailAddresses").to_json(),
        r#"["ops@example.com"]"#
    );
    assert_eq!(field(&cert, "KeyUsage"), &Json::Num("17".into()));
    assert_eq!(field(&cert, "ExtKeyUsage").to_json(), "[2]");
    assert_eq!(field(&cert, "PublicKeyAlgorithm"), &Json::Num("3".into()));
    assert_eq!(field(&cert, "SignatureAlgorithm"), &Json::Num("10".into()));
    assert_eq!(field(&cert, "Version"), &Json::Num("3".into()));
    let uri = &field(&cert, "URIs");
    assert!(uri.to_json().contains(r#""Path":"/ns/default/sa/client""#));
}

/// Policies reading each field family allow the client and deny the other peer.
#[test]
fn policies_reading_each_field_family() {
    let s = Scratch::new("families");
    let client = client_leaf();
    let other = other_leaf();
    let cases = [
        r#"input.certificate.Subject.CommonName == "client""#,
        r#"input.certificate.Subject.OrganizationalUnit[_] == "Payments""#,
        r#"input.certificate.Subject.Names[_].Value == "Example Org""#,
        r#"input.certificate.Issuer.CommonName == "Test CA"; input.certificate.Subject.CommonName == "client""#,
        r#""client.example.com" in input.certificate.DNSNames"#,
        r#"input.certificate.URIs[_].Host == "example.com""#,
        r#"input.certificate.URIs[0].Scheme == "spiffe""#,
        r#""2001:db8::1" in input.certificate.IPAddresses"#,
        r#"input.certificate.EmailAddresses[0] == "ops@example.com""#,
        r#"input.certificate.SerialNumber == 4660"#,
        r#"input.certificate.NotAfter > input.certificate.NotBefore; endswith(input.certificate.NotAfter, "Z"); input.certificate.SerialNumber == 4660"#,
        r#"input.certificate.ExtKeyUsage == [2]"#,
        r#"some e in input.certificate.Extensions; e.Id == [2, 5, 29, 17]; input.certificate.KeyUsage == 17"#,
    ];
    for (i, rule) in cases.iter().enumerate() {
        // Each case as a v1 rule in a bundle directory (several statements: one body).
        let body = rule.replace("; ", "\n  ");
        let dir = s.path(&format!("b{i}"));
        s.write(
            &format!("b{i}/p.rego"),
            &format!("package t\nallow if {{\n  {body}\n}}\n"),
        );
        let p = Policy::load(&dir, "data.t.allow").unwrap_or_else(|e| panic!("{rule}: {e}"));
        assert_eq!(allowed(&p, &client), Ok(()), "{rule}");
        assert_eq!(allowed(&p, &other), Err(Denial::NotAllowed), "{rule}");
    }
}

#[test]
fn decision_rule_needs_one_binding_free_true() {
    let s = Scratch::new("decision");
    let dir = dir_policy(
        &s,
        "package t\nallow if input.certificate.Subject.CommonName == \"client\"\n\
         s := \"yes\"\none := 1\nxs := [true]\nxs2 := [true, true]\n",
    );
    let client = client_leaf();
    let table = [
        ("data.t.allow", true),
        ("data.t.allow == true", true),
        ("data.t.allow = true", true),
        ("true", true),
        ("data.t.xs[_]", true),
        ("data.t.xs2[_]", false),
        ("x := data.t.allow", false),
        ("data.t.allow = x", false),
        ("data.t.allow; true", false),
        ("data.t.s", false),
        ("data.t.one", false),
        ("data.t", false),
        ("false", false),
        ("data.t.nothing", false),
        ("opa.runtime() == {}", true),
    ];
    for (query, allow) in table {
        let p = Policy::load(&dir, query).unwrap_or_else(|e| panic!("{query}: {e}"));
        let got = allowed(&p, &client);
        assert_eq!(got.is_ok(), allow, "{query}: {got:?}");
        if !allow {
            assert_eq!(got, Err(Denial::NotAllowed), "{query}");
        }
    }
}

#[test]
fn bundle_forms_load() {
    let s = Scratch::new("forms");
    let client = client_leaf();
    let v1 = "package ghostunnel\nallow if input.certificate.Subject.CommonName == \"client\"\n";
    let v0 = "package ghostunnel\nallow { input.certificate.Subject.CommonName == \"client\" }\n";
    // Directory, with and without a trailing slash.
    let dir = dir_policy(&s, v1);
    for path in [dir.clone(), format!("{dir}/")] {
        let p = Policy::load(&path, "data.ghostunnel.allow").unwrap();
        assert_eq!(allowed(&p, &client), Ok(()));
    }
    // A tarball, with members named ./policy.rego and with bare names.
    tar_gz(&s.0.join("bundle"), &s.path("a.tar.gz"), &["."]);
    tar_gz(&s.0.join("bundle"), &s.path("b.tar.gz"), &["policy.rego"]);
    for path in [s.path("a.tar.gz"), s.path("b.tar.gz")] {
        let p = Policy::load(&path, "data.ghostunnel.allow").unwrap();
        assert_eq!(allowed(&p, &client), Ok(()));
        assert_eq!(allowed(&p, &other_leaf()), Err(Denial::NotAllowed));
    }
    // A single v0 file; the query is v0 too.
    s.write("allow-client.rego", v0);
    let p = Policy::load(&s.path("allow-client.rego"), "data.ghostunnel.allow").unwrap();
    assert_eq!(allowed(&p, &client), Ok(()));
    // v0 modules in a bundle need the manifest.
    s.write("v0/policy.rego", v0);
    s.write("v0/.manifest", r#"{"rego_version":0}"#);
    let p = Policy::load(&s.path("v0"), "data.ghostunnel.allow").unwrap();
    assert_eq!(allowed(&p, &client), Ok(()));
    // An empty directory: only input is there.
    std::fs::create_dir_all(s.0.join("empty")).unwrap();
    let p = Policy::load(
        &s.path("empty"),
        "input.certificate.Subject.CommonName == \"client\"",
    )
    .unwrap();
    assert_eq!(allowed(&p, &client), Ok(()));
    // Data files are placed at their directory's path; other files are ignored.
    s.write(
        "data/p.rego",
        "package t\nallow if input.certificate.Subject.CommonName in data.t.allowed\n",
    );
    s.write("data/t/data.json", r#"{"allowed": ["client"]}"#);
    s.write("data/README.md", "not a module");
    s.write("data/other.json", "not json");
    let p = Policy::load(&s.path("data"), "data.t.allow").unwrap();
    assert_eq!(allowed(&p, &client), Ok(()));
    tar_gz(
        &s.0.join("data"),
        &s.path("data.tar.gz"),
        &["p.rego", "t/data.json"],
    );
    let p = Policy::load(&s.path("data.tar.gz"), "data.t.allow").unwrap();
    assert_eq!(allowed(&p, &client), Ok(()));
    // YAML data is refused by name (no YAML parser in this build).
    s.write(
        "yaml/p.rego",
        "package t\nallow if input.certificate.Subject.CommonName in data.allowed\n",
    );
    s.write("yaml/data.yaml", "allowed:\n  - client\n");
    let e = load_err(&s.path("yaml"), "data.t.allow");
    assert!(
        e.ends_with("YAML data files are not supported by this build (use data.json)"),
        "{e}"
    );
}

fn load_err(path: &str, query: &str) -> String {
    Policy::load(path, query).unwrap_err().to_string()
}

#[test]
fn bad_bundles_fail_with_the_reference_wording() {
    let s = Scratch::new("bad");
    let missing = s.path("nope");
    assert_eq!(
        load_err(&missing, "true"),
        format!(
            "loading error: error reading \"{missing}\": stat {missing}: no such file or directory"
        )
    );
    let missing_rego = s.path("nope.rego");
    assert_eq!(
        load_err(&missing_rego, "true"),
        format!("1 error occurred during loading: stat {missing_rego}: no such file or directory")
    );
    // An uncompressed tar, a 3-byte JSON file, a module named in capitals.
    s.write("in/policy.rego", "package t\nallow := true\n");
    let plain = s.path("bundle.tar");
    let status = Command::new("tar")
        .args(["cf", &plain, "-C", &s.path("in"), "policy.rego"])
        .status()
        .unwrap();
    assert!(status.success());
    let prefix =
        |p: &str| format!("loading error: bundle {p}: bundle read failed: archive read failed: ");
    assert_eq!(
        load_err(&plain, "true"),
        prefix(&plain) + "gzip: invalid header"
    );
    let json = s.write("data.json", "{}\n").to_string_lossy().into_owned();
    assert_eq!(load_err(&json, "true"), prefix(&json) + "unexpected EOF");
    let upper = s
        .write("UPPER.REGO", "package t\nallow := true\n")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        load_err(&upper, "true"),
        prefix(&upper) + "gzip: invalid header"
    );
    // v0 syntax in a bundle without a manifest.
    s.write("v0/policy.rego", "package t\nallow { true }\n");
    let v0 = s.path("v0");
    let e = load_err(&v0, "data.t.allow");
    assert!(
        e.starts_with(&format!("loading error: bundle {v0}: 1 error occurred: ")),
        "{e}"
    );
    assert!(e.contains(&format!("{v0}/policy.rego")), "{e}");
    // Signed bundles cannot be verified.
    s.write("signed/policy.rego", "package t\nallow := true\n");
    s.write("signed/.signatures.json", "{}");
    let signed = s.path("signed");
    assert_eq!(
        load_err(&signed, "true"),
        format!("loading error: bundle {signed}: verification key not provided")
    );
    // Roots limit the packages a bundle may define.
    s.write("roots/policy.rego", "package t\nallow := true\n");
    s.write("roots/.manifest", r#"{"roots":["other"]}"#);
    let roots = s.path("roots");
    assert_eq!(
        load_err(&roots, "true"),
        format!(
            "loading error: bundle {roots}: manifest roots [other] do not permit 'package t' in \
             module '{roots}/policy.rego'"
        )
    );
    s.write("roots/data.json", r#"{"x": 1}"#);
    s.write("roots/.manifest", r#"{"roots":["t"]}"#);
    assert_eq!(
        load_err(&roots, "true"),
        format!(
            "loading error: bundle {roots}: manifest roots [t] do not permit data at path '/x'"
        )
    );
    // A tarball with a v0 module names the member.
    tar_gz(&s.0.join("v0"), &s.path("v0.tar.gz"), &["policy.rego"]);
    let e = load_err(&s.path("v0.tar.gz"), "data.t.allow");
    assert!(e.contains("1 error occurred: /policy.rego:"), "{e}");
}

#[test]
fn bad_queries_fail_at_load() {
    let s = Scratch::new("queries");
    let dir = dir_policy(&s, "package t\nallow := true\n");
    for query in ["data.t.allow ==", "foo(1)", "data.t.allow; x"] {
        let e = load_err(&dir, query);
        assert!(e.starts_with("1 error occurred: "), "{query}: {e}");
    }
    // A v1 keyword is not available in a v0 (single-file) query without the import.
    s.write("f.rego", "package t\nallow = true\n");
    assert!(Policy::load(&s.path("f.rego"), "\"x\" in input.certificate.DNSNames").is_err());
    assert!(Policy::load(&dir, "\"x\" in input.certificate.DNSNames").is_ok());
    // A module calling a function the engine does not have fails at load, not at run time.
    let dir2 = s.path("unknown");
    s.write(
        "unknown/p.rego",
        "package u\nallow if no_such.builtin(input)\n",
    );
    assert!(Policy::load(&dir2, "data.u.allow").is_err());
}

#[test]
fn evaluation_errors_and_print() {
    let s = Scratch::new("errors");
    let dir = dir_policy(
        &s,
        "package t\nx := 1 if input.certificate\nx := 2 if input.certificate\n\
         allow if { print(\"checking\", input.certificate.Subject.CommonName); x == 1 }\n\
         quiet if { print(\"hello\"); true }\n",
    );
    let p = Policy::load(&dir, "data.t.allow").unwrap();
    match allowed(&p, &client_leaf()) {
        Err(Denial::Error(e)) => assert!(!e.is_empty()),
        other => panic!("expected an evaluation error, got {other:?}"),
    }
    assert_eq!(
        Denial::Error("boom".into()).to_string(),
        "unauthorized: policy returned error: boom"
    );
    assert_eq!(p.stats.errors.load(std::sync::atomic::Ordering::Relaxed), 1);
    let p = Policy::load(&dir, "data.t.quiet").unwrap();
    assert_eq!(allowed(&p, &client_leaf()), Ok(()));
    // Failing built-ins are undefined, not errors: the rule does not fire.
    let dir = s.path("lax");
    s.write(
        "lax/p.rego",
        "package t\nallow if to_number(\"abc\") == 1\n",
    );
    let p = Policy::load(&dir, "data.t.allow").unwrap();
    assert_eq!(allowed(&p, &client_leaf()), Err(Denial::NotAllowed));
}

#[test]
fn slow_policy_times_out_at_the_deadline() {
    let s = Scratch::new("slow");
    let dir = dir_policy(
        &s,
        "package t\nallow if {\n  xs := numbers.range(1, 20000)\n  \
         count([1 | some i in xs; some j in xs; i * j == -1]) == 0\n}\n",
    );
    let p = Policy::load(&dir, "data.t.allow").unwrap();
    let start = Instant::now();
    assert_eq!(
        p.evaluate(&client_leaf().der, Duration::from_millis(300)),
        Err(Denial::Timeout)
    );
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(Denial::Timeout.to_string(), "context deadline exceeded");
    assert_eq!(
        p.stats.timeouts.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn reload_replaces_or_keeps_the_policy() {
    let s = Scratch::new("reload");
    let allow = "package t\nallow if input.certificate.Subject.CommonName == \"client\"\n";
    let dir = dir_policy(&s, allow);
    let p = Policy::load(&dir, "data.t.allow").unwrap();
    let client = client_leaf();
    assert_eq!(allowed(&p, &client), Ok(()));
    s.write(
        "bundle/policy.rego",
        "package t\nallow if input.certificate.Subject.CommonName == \"x\"\n",
    );
    p.reload().unwrap();
    assert_eq!(allowed(&p, &client), Err(Denial::NotAllowed));
    s.write("bundle/policy.rego", "package t\ngarbage (\n");
    assert!(p.reload().is_err());
    // The last good policy (deny) stays.
    assert_eq!(allowed(&p, &client), Err(Denial::NotAllowed));
    std::fs::remove_dir_all(s.0.join("bundle")).unwrap();
    let e = p.reload().unwrap_err().to_string();
    assert!(e.contains("no such file or directory"), "{e}");
}

#[test]
fn sandbox_grants_the_parent_and_the_link_target() {
    let s = Scratch::new("sandbox");
    s.write("real/policy.rego", "package t\n");
    std::os::unix::fs::symlink(s.0.join("real/policy.rego"), s.0.join("link.rego")).unwrap();
    let paths = sandbox_paths(&s.path("link.rego"));
    assert_eq!(
        paths,
        vec![s.0.clone(), s.0.join("real").canonicalize().unwrap()]
    );
    assert_eq!(sandbox_paths("policy.rego"), vec![PathBuf::from(".")]);
}

/// Deeply nested brackets are refused before the engine's parser, whose time grows
/// exponentially with nesting (found by fuzzing); the deepest allowed nesting parses quickly.
#[test]
fn deep_nesting_is_refused_quickly() {
    let s = Scratch::new("nesting");
    let deep = format!("package t\nallow if {}\n", "[".repeat(40));
    s.write("deep/p.rego", &deep);
    let start = Instant::now();
    let e = load_err(&s.path("deep"), "true");
    assert!(
        e.ends_with("p.rego:2: brackets nested deeper than 16 levels"),
        "{e}"
    );
    // Sixteen levels (one inside the rule body's braces) still load, and fast.
    let ok = format!(
        "package t\n# [[[[ in a comment\nx := \"[[[[[[\"\nallow if {{ {}1{} == 1 }}\n",
        "[".repeat(15),
        "]".repeat(15)
    );
    s.write("ok/p.rego", &ok);
    let t = Instant::now();
    let p = Policy::load(&s.path("ok"), "true");
    assert!(p.is_ok(), "{:?}", p.err());
    assert!(t.elapsed() < 3 * SECOND, "{:?}", t.elapsed());
    // Sixteen unclosed levels are a parse error, still found quickly.
    s.write(
        "open/p.rego",
        &format!("package t\nallow if {}\n", "[".repeat(16)),
    );
    let t = Instant::now();
    assert!(Policy::load(&s.path("open"), "true").is_err());
    assert!(t.elapsed() < 3 * SECOND, "{:?}", t.elapsed());
    assert!(start.elapsed() < 9 * SECOND);
}
