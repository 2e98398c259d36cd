//! Unit tests of `validate.rs`.

use std::ffi::OsStr;
use std::path::Path;

use super::super::Parsed;
use super::super::testutil::*;
use super::*;
use crate::config::SystemTrust;

// ---- Parse-stage checks (docs/behaviour.md §2.7.1) ----

#[test]
fn parse_stage_enable_pprof_needs_status() {
    assert_eq!(
        bare_err(&["--enable-pprof"]),
        "--enable-pprof requires --status to be set"
    );
    // First in order.
    assert_eq!(
        bare_err(&["--enable-shutdown", "--enable-pprof", "--connect-timeout=0"]),
        "--enable-pprof requires --status to be set"
    );
}

#[test]
fn parse_stage_enable_shutdown_needs_status() {
    assert_eq!(
        bare_err(&["--enable-shutdown", "--metrics-url=ftp://x"]),
        "--enable-shutdown requires --status to be set"
    );
}

#[test]
fn parse_stage_metrics_url_scheme() {
    assert_eq!(
        bare_err(&["--metrics-url=ftp://x", "--status=nohost"]),
        "--metrics-url should start with http:// or https://"
    );
}

#[test]
fn parse_stage_target_status_scheme() {
    assert_eq!(
        bare_err(&["--target-status=tcp://x", "--status=nohost"]),
        "--target-status should start with http:// or https://"
    );
}

#[test]
fn parse_stage_status_shape() {
    assert_eq!(
        bare_err(&["--status=nohost", "--connect-timeout=0s"]),
        "invalid --status address: address nohost: missing port in address"
    );
    assert_eq!(
        bare_err(&["--status=http://nohost"]),
        "invalid --status address: address nohost: missing port in address"
    );
    for (status, net) in [
        ("http://unix:/x", "unix"),
        ("https://systemd:s", "systemd"),
        ("https://launchd:s", "launchd"),
    ] {
        assert_eq!(
            bare_err(&[&format!("--status={status}")]),
            format!(
                "invalid --status network \"{net}\": http(s):// scheme requires a HOST:PORT target"
            )
        );
    }
}

#[test]
fn parse_stage_connect_timeout_zero() {
    for zero in ["0", "0s", "0ms", "-0"] {
        assert_eq!(
            bare_err(&[
                &format!("--connect-timeout={zero}"),
                "--use-workload-api-timeout=-1s"
            ]),
            "--connect-timeout duration must not be zero"
        );
    }
}

#[test]
fn parse_stage_workload_timeout_negative() {
    assert_eq!(
        bare_err(&["--use-workload-api-timeout=-1s"]),
        "--use-workload-api-timeout duration must not be negative (use 0 to wait indefinitely)"
    );
}

#[test]
fn status_and_shutdown_reach_the_config() {
    let c = server(&[
        "--allow-all",
        "--status=localhost:9000",
        "--enable-shutdown",
    ])
    .unwrap();
    let s = c.status.unwrap();
    assert_eq!(s.scheme, StatusScheme::None);
    assert_eq!(s.addr.raw, "localhost:9000");
    assert!(c.enable_shutdown);
    let c = server(&["--allow-all", "--status=https://:9000"]).unwrap();
    let s = c.status.unwrap();
    assert_eq!(
        (s.scheme, s.addr.raw.as_str()),
        (StatusScheme::Https, ":9000")
    );
    let c = server(&["--allow-all", "--status=http://localhost:1"]).unwrap();
    assert_eq!(c.status.unwrap().scheme, StatusScheme::Http);
    let c = server(&["--allow-all", "--status=unix:/run/s.sock"]).unwrap();
    assert!(matches!(c.status.unwrap().addr.kind, AddrKind::Unix(_)));
    let c = server(&["--allow-all"]).unwrap();
    assert!(c.status.is_none() && !c.enable_shutdown);
}

#[test]
fn metrics_flags_reach_the_config() {
    let c = server(&["--allow-all"]).unwrap();
    assert!(c.metrics.graphite.is_none() && c.metrics.url.is_none());
    assert_eq!(c.metrics.prefix, "ghostunnel");
    assert_eq!(c.metrics.interval, Duration::from_secs(30));
    assert!(!c.metrics_observed());
    let c = server(&[
        "--allow-all",
        "--metrics-graphite=localhost:2003",
        "--metrics-url=https://collector.example/push",
        "--metrics-prefix=edge",
        "--metrics-interval=250ms",
        "--target-status=http://localhost:8080/health",
    ])
    .unwrap();
    assert_eq!(c.metrics.graphite.as_ref().unwrap().raw, "localhost:2003");
    let url = c.metrics.url.as_ref().unwrap();
    assert!(url.https && url.path == "/push" && url.addr.tcp_port() == Some(443));
    assert_eq!(c.metrics.prefix, "edge");
    assert_eq!(c.metrics.interval, Duration::from_millis(250));
    assert!(c.metrics_observed());
    let Mode::Server(opts) = &c.mode else {
        panic!()
    };
    assert_eq!(opts.target_status.as_ref().unwrap().path, "/health");
    // Each observer alone turns metrics on.
    assert!(
        server(&["--allow-all", "--status=:1"])
            .unwrap()
            .metrics_observed()
    );
    assert!(
        server(&["--allow-all", "--metrics-url=http://h/"])
            .unwrap()
            .metrics_observed()
    );
}

#[test]
fn bad_metrics_flags_name_the_flag() {
    // Parse-stage errors with the reference's texts (its parser resolves the address).
    for (value, why) in [
        ("nohost", "address nohost: missing port in address"),
        ("unix:/x", "lookup tcp//x: unknown port"),
        ("localhost:99999", "address 99999: invalid port"),
        ("a:b:1", "address a:b:1: too many colons in address"),
    ] {
        assert_eq!(
            err(&[
                &SERVER[..],
                &["--allow-all", &format!("--metrics-graphite={value}")]
            ]
            .concat()),
            format!("'{value}' is not a valid TCP address: {why}")
        );
    }
    assert!(
        err(&[&SERVER[..], &["--metrics-graphite=nosuch.invalid:2003"]].concat())
            .starts_with("'nosuch.invalid:2003' is not a valid TCP address: lookup nosuch.invalid")
    );
    assert_eq!(
        server_err(&["--allow-all", "--metrics-url=http://"]),
        "invalid --metrics-url: parse \"http://\": missing host"
    );
    assert_eq!(
        server_err(&["--allow-all", "--target-status=http://h:x/"]),
        "invalid --target-status: parse \"http://h:x/\": invalid port"
    );
    // Zero (or negative) is accepted and means no `--metrics-url` posts, as in the
    // reference.
    for never in ["0", "0s", "-1s"] {
        let c = server(&["--allow-all", &format!("--metrics-interval={never}")]).unwrap();
        assert!(c.metrics.interval.is_zero(), "{never}");
    }
}

// ---- PKCS#11 (docs/behaviour.md §3.8) ----

#[cfg(feature = "pkcs11")]
#[test]
fn pkcs11_counts_with_cert_and_takes_the_keystore_as_certificate() {
    use std::path::PathBuf;
    let module = "--pkcs11-module=/etc/hostname";
    let pkcs11 = |c: &Config| match &c.identity {
        IdentitySource::Pkcs11 {
            cert,
            module,
            token_label,
            pin,
        } => (
            cert.clone(),
            module.clone(),
            token_label.clone(),
            pin.clone(),
        ),
        other => panic!("{other:?}"),
    };
    let bare = |extra: &[&str]| {
        let a = cat(&BARE, extra);
        config(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // A lone --cert is a credential with a module.
    let c = bare(&[
        "--allow-all",
        "--cert=c.pem",
        module,
        "--pkcs11-token-label=t",
        "--pkcs11-pin=1",
    ])
    .unwrap();
    assert_eq!(
        pkcs11(&c),
        (
            PathBuf::from("c.pem"),
            PathBuf::from("/etc/hostname"),
            "t".into(),
            "1".into()
        )
    );
    // --keystore with a module is the certificate file.
    let c = server(&["--allow-all", module]).unwrap();
    assert_eq!(pkcs11(&c).0, PathBuf::from("k.pem"));
    // A module alone, or with --key only, is no credential.
    let none = "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required";
    assert_eq!(bare(&["--allow-all", module]).unwrap_err(), none);
    assert_eq!(bare(&["--allow-all", module, "--key=k"]).unwrap_err(), none);
    // --cert and --key with a module count twice.
    assert_eq!(
        bare(&["--allow-all", module, "--cert=c", "--key=k"]).unwrap_err(),
        "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive"
    );
    // --key beside another source is unpaired.
    assert_eq!(
        server_err(&["--allow-all", module, "--key=k"]),
        "--cert/--key must be set together, unless using PKCS11 for private key"
    );
    // A PIN or label without a module changes nothing.
    assert!(matches!(
        server(&["--allow-all", "--pkcs11-pin=1"]).unwrap().identity,
        IdentitySource::Keystore { .. }
    ));
}

#[cfg(feature = "pkcs11")]
#[test]
fn pkcs11_pin_from_a_file() {
    let dir = std::env::temp_dir().join(format!("gt-pin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pin");
    std::fs::write(&file, "4321\nignored\n").unwrap();
    let pin_file = format!("--pkcs11-pin-file={}", file.display());
    let c = server(&["--allow-all", "--pkcs11-module=/etc/hostname", &pin_file]).unwrap();
    assert!(matches!(c.identity, IdentitySource::Pkcs11 { ref pin, .. } if pin == "4321"));
    assert_eq!(
        server_err(&[
            "--allow-all",
            "--pkcs11-module=/etc/hostname",
            &pin_file,
            "--pkcs11-pin=1"
        ]),
        "--pkcs11-pin and --pkcs11-pin-file are mutually exclusive"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- SPIFFE Workload API ----

#[cfg(feature = "spiffe")]
fn workload_of(c: &Config) -> (String, Option<Duration>) {
    match &c.identity {
        IdentitySource::WorkloadApi { addr, timeout, .. } => (addr.clone(), *timeout),
        other => panic!("not the workload API: {other:?}"),
    }
}

#[cfg(feature = "spiffe")]
fn env_config(a: &[&str], vars: &[(&str, &str)]) -> Result<Config, String> {
    match parse_env(a, vars)? {
        Parsed::Run(raw) => raw.into_config().map_err(|e| e.to_string()),
        Parsed::Exit { .. } => Err("exit".into()),
    }
}

#[cfg(feature = "spiffe")]
#[test]
fn workload_api_is_a_credential_in_both_modes() {
    let server = [
        "server",
        "--listen=:1",
        "--target=localhost:2",
        "--allow-all",
    ];
    let client = ["client", "--listen=localhost:1", "--target=h:2"];
    let addr = "--use-workload-api-addr=unix:///run/spire/agent.sock";
    for base in [&server[..], &client[..]] {
        let c = config(&[base, &[addr]].concat()).unwrap();
        assert_eq!(
            workload_of(&c),
            (
                "unix:///run/spire/agent.sock".into(),
                Some(Duration::from_secs(600))
            )
        );
        // Without an address the source still counts; it fails when created.
        let c = config(&[base, &["--use-workload-api"]].concat()).unwrap();
        assert_eq!(workload_of(&c).0, "");
        let c = config(&[base, &[addr, "--use-workload-api-timeout=0"]].concat()).unwrap();
        assert_eq!(workload_of(&c).1, None);
    }
    // The mutual-exclusion texts: the server's does not name the workload API.
    assert_eq!(
        config(&[&server[..], &[addr, "--cert=c", "--key=k"]].concat()).unwrap_err(),
        "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive"
    );
    assert_eq!(
        config(&[&client[..], &[addr, "--keystore=k"]].concat()).unwrap_err(),
        "--keystore, --cert/--key, --keychain-identity/issuer, --use-workload-api and --disable-authentication flags are mutually exclusive"
    );
    // Client --disable-authentication is no credential of its own next to it; it only
    // keeps the SVID from being presented.
    let c = config(&[&client[..], &[addr, "--disable-authentication"]].concat()).unwrap();
    assert!(matches!(
        c.identity,
        IdentitySource::WorkloadApi {
            present_no_certificate: true,
            ..
        }
    ));
    let c = config(&[&client[..], &[addr]].concat()).unwrap();
    assert!(matches!(
        c.identity,
        IdentitySource::WorkloadApi {
            present_no_certificate: false,
            ..
        }
    ));
}

#[cfg(feature = "spiffe")]
#[test]
fn workload_api_from_the_environment_wins_over_the_negated_flag() {
    let client = ["client", "--listen=localhost:1", "--target=h:2"];
    let env = [("SPIFFE_ENDPOINT_SOCKET", "unix:///run/spire/agent.sock")];
    let c = env_config(&[&client[..], &["--no-use-workload-api"]].concat(), &env).unwrap();
    assert_eq!(workload_of(&c).0, "unix:///run/spire/agent.sock");
    // So a leftover variable clashes with files...
    assert!(
        env_config(&[&client[..], &["--keystore=k"]].concat(), &env)
            .unwrap_err()
            .ends_with("mutually exclusive")
    );
    // ...unless the address is explicitly emptied.
    let c = env_config(
        &[&client[..], &["--keystore=k", "--use-workload-api-addr="]].concat(),
        &env,
    )
    .unwrap();
    assert!(matches!(c.identity, IdentitySource::Keystore { .. }));
}

#[cfg(feature = "spiffe")]
#[test]
fn workload_api_refuses_spki_pins() {
    let addr = "--use-workload-api-addr=unix:///a.sock";
    assert_eq!(
        config(&[&BARE[..], &[addr, &format!("--allow-spki-pin={PIN}")]].concat()).unwrap_err(),
        "--allow-spki-pin is mutually exclusive with --use-workload-api"
    );
    let client = ["client", "--listen=localhost:1", "--target=h:2"];
    assert_eq!(
        config(&[&client[..], &[addr, &format!("--verify-spki-pin={PIN}")]].concat()).unwrap_err(),
        "--verify-spki-pin is mutually exclusive with --use-workload-api"
    );
}

// ---- Unsupported features ----

#[test]
fn unsupported_flags_fail_mode_validation() {
    let workload = [
        ("--use-workload-api", Id::UseWorkloadApi),
        ("--use-workload-api-addr=unix:/x", Id::UseWorkloadApiAddr),
    ];
    let workload = if cfg!(feature = "spiffe") {
        &[][..]
    } else {
        &workload[..]
    };
    let cases = [("--pkcs11-module=/x.so", Id::Pkcs11Module)];
    // With the feature, the PKCS#11 flags are ordinary ones (tested below).
    let supported = |flag: &str| cfg!(feature = "pkcs11") && flag.starts_with("--pkcs11");
    let cases = cases.into_iter().chain(workload.iter().copied());
    for (flag, name) in cases.filter(|(f, _)| !supported(f)) {
        assert_eq!(
            server_err(&["--allow-all", flag]),
            format!("--{} is not supported by this build", name.name()),
            "{flag}"
        );
    }
    // Settings that qualify a missing feature flag are ignored, as in the reference; with
    // the feature they are refused with it.
    for flag in [
        "--use-workload-api-timeout=1m",
        "--pkcs11-token-label=t",
        "--pkcs11-pin=1",
    ] {
        assert!(server(&["--allow-all", flag]).is_ok(), "{flag}");
    }
    #[cfg(not(feature = "spiffe"))]
    assert_eq!(
        server_err(&[
            "--allow-all",
            "--use-workload-api-timeout=1m",
            "--use-workload-api"
        ]),
        "--use-workload-api is not supported by this build"
    );
    let c = server(&["--allow-all", "--status=:1", "--enable-pprof"]).unwrap();
    assert!(c.enable_pprof);
}

#[cfg(not(feature = "acme"))]
#[test]
fn acme_flags_fail_in_a_build_without_acme() {
    for (flag, name) in [
        ("--auto-acme-cert=a.example", Id::AutoAcmeCert),
        ("--auto-acme-email=a@b", Id::AutoAcmeEmail),
        ("--auto-acme-agree-to-tos", Id::AutoAcmeAgreeToTos),
        ("--auto-acme-ca=https://x", Id::AutoAcmeCa),
        ("--auto-acme-testca=https://x", Id::AutoAcmeTestca),
        (
            "--auto-acme-renew-check-interval=1h",
            Id::AutoAcmeRenewCheckInterval,
        ),
        (
            "--auto-acme-alt-tls-alpn-port=1",
            Id::AutoAcmeAltTlsAlpnPort,
        ),
    ] {
        assert_eq!(
            server_err(&["--allow-all", flag]),
            format!("--{} is not supported by this build", name.name()),
            "{flag}"
        );
    }
}

#[cfg(feature = "acme")]
#[test]
fn acme_flags_follow_the_reference_rules() {
    let acme = |extra: &[&str]| {
        let base = [
            "server",
            "--listen=:1",
            "--target=localhost:2",
            "--allow-all",
        ];
        config(&[&base[..], extra].concat())
    };
    let name = "--auto-acme-cert=GhostUnnel.Example.com";
    // Email first, then the terms of service (docs/behaviour.md §18.5.1).
    assert_eq!(
        acme(&[name]).unwrap_err(),
        "--auto-acme-cert was specified but no email address was provided with --auto-acme-email"
    );
    assert_eq!(
        acme(&[name, "--auto-acme-email=a@b"]).unwrap_err(),
        "--auto-acme-agree-to-tos was not specified and is required if --auto-acme-cert is specified"
    );
    // They come after the target checks.
    assert_eq!(
        config(&[
            "server",
            "--listen=:1",
            "--target=x.example:2",
            "--allow-all",
            name
        ])
        .unwrap_err(),
        "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)"
    );
    // One credential among the others.
    assert_eq!(
        acme(&[name, "--keystore=k.pem"]).unwrap_err(),
        "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive"
    );
    // The email and ToS flags alone count nothing.
    assert_eq!(
        acme(&["--auto-acme-email=a@b", "--auto-acme-agree-to-tos"]).unwrap_err(),
        "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required"
    );
    let c = acme(&[
        name,
        "--auto-acme-email=a@b",
        "--auto-acme-agree-to-tos",
        "--auto-acme-testca=https://t/dir",
        "--auto-acme-renew-check-interval=2s",
        "--auto-acme-alt-tls-alpn-port=8443",
    ])
    .unwrap();
    let IdentitySource::Acme(opts) = c.identity else {
        panic!("{:?}", c.identity)
    };
    assert_eq!(
        opts,
        crate::config::AcmeOpts {
            name: "ghostunnel.example.com".into(),
            email: "a@b".into(),
            ca: String::new(),
            testca: "https://t/dir".into(),
            renew_check: Some(Duration::from_secs(2)),
            alt_port: 8443,
        }
    );
    // A zero or negative interval means the default.
    let c = acme(&[
        name,
        "--auto-acme-email=a@b",
        "--auto-acme-agree-to-tos",
        "--auto-acme-renew-check-interval=-1s",
    ])
    .unwrap();
    let IdentitySource::Acme(opts) = c.identity else {
        panic!("{:?}", c.identity)
    };
    assert_eq!(opts.renew_check, None);
    assert!(
        acme(&[
            name,
            "--auto-acme-email=a@b",
            "--auto-acme-agree-to-tos",
            "--auto-acme-alt-tls-alpn-port=70000"
        ])
        .unwrap_err()
        .contains("--auto-acme-alt-tls-alpn-port")
    );
}

/// Without the `opa` feature the policy flags are refused by name.
#[cfg(not(feature = "opa"))]
#[test]
fn policy_flags_unsupported_without_the_feature() {
    for (flag, name) in [
        ("--allow-policy=b", Id::AllowPolicy),
        ("--allow-query=q", Id::AllowQuery),
    ] {
        assert_eq!(
            server_err(&["--allow-all", flag]),
            format!("--{} is not supported by this build", name.name())
        );
    }
    for (flag, name) in [
        ("--verify-policy=b", Id::VerifyPolicy),
        ("--verify-query=q", Id::VerifyQuery),
    ] {
        assert_eq!(
            client_err(&[flag]),
            format!("--{} is not supported by this build", name.name())
        );
    }
}

/// The OPA flags: both of a pair or neither, ORed with the names, exclusive with
/// `--allow-all`, pins and server `--disable-authentication`, in the reference's order.
#[cfg(feature = "opa")]
#[test]
fn policy_flags_pairing_and_exclusivity() {
    const PIN: &str = "--allow-spki-pin=sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let pair = "--allow-policy and --allow-query have to be used together";
    assert_eq!(server_err(&["--allow-policy=b"]), pair);
    assert_eq!(server_err(&["--allow-query=q"]), pair);
    assert_eq!(
        server_err(&["--allow-policy=b", "--allow-query=q", "--allow-all"]),
        "--allow-all is mutually exclusive with other access control flags"
    );
    assert_eq!(
        server_err(&["--allow-query=q", "--disable-authentication"]),
        "--disable-authentication is mutually exclusive with other access control flags"
    );
    assert_eq!(
        server_err(&["--allow-policy=b", PIN]),
        "--allow-spki-pin is mutually exclusive with other access control flags"
    );
    // The pair check comes after the target checks.
    assert_eq!(
        config(&[
            "server",
            "--listen=:1",
            "--target=example.com:1",
            "--keystore=/k",
            "--allow-policy=b"
        ])
        .unwrap_err(),
        "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)"
    );
    let c = server(&["--allow-cn=a", "--allow-policy=b", "--allow-query=q"]).unwrap();
    let Mode::Server(ServerOpts {
        auth: ServerAuth::Acl(acl),
        ..
    }) = &c.mode
    else {
        panic!("{c:?}")
    };
    assert_eq!(acl.cn, ["a"]);
    assert_eq!(
        acl.policy,
        Some(PolicySpec {
            bundle: "b".into(),
            query: "q".into()
        })
    );
    let vpair = "--verify-policy and --verify-query have to be used together";
    assert_eq!(client_err(&["--verify-policy=b"]), vpair);
    assert_eq!(client_err(&["--verify-query=q"]), vpair);
    assert_eq!(
        client_err(&[
            "--verify-policy=b",
            "--verify-query=q",
            "--verify-spki-pin=sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        ]),
        "--verify-spki-pin is mutually exclusive with other verification flags"
    );
    let c = config(&[
        "client",
        "--listen=localhost:1",
        "--target=h:2",
        "--disable-authentication",
        "--verify-policy=b",
        "--verify-query=q",
    ]);
    assert!(c.is_ok(), "{c:?}");
}

#[test]
fn unsupported_flags_at_their_default_are_accepted() {
    for flag in [
        "--no-use-workload-api",
        "--use-workload-api-timeout=10m",
        "--use-workload-api-timeout=600s",
        "--metrics-prefix=ghostunnel",
        "--metrics-interval=30s",
        "--no-enable-pprof",
        "--no-auto-acme-agree-to-tos",
        "--allow-policy=",
        "--auto-acme-alt-tls-alpn-port=0",
    ] {
        assert!(server(&["--allow-all", flag]).is_ok(), "{flag}");
    }
}

#[test]
fn ignored_and_hidden_flags() {
    assert!(server(&["--allow-all", "--use-landlock"]).is_ok());
    assert!(server(&["--allow-all", "--no-use-landlock"]).is_ok());
    let c = server(&["--allow-all", "--disable-landlock", "--skip-resolve"]).unwrap();
    assert!(c.disable_landlock && c.skip_resolve);
    let c = server(&["--allow-all"]).unwrap();
    assert!(!c.disable_landlock && !c.skip_resolve);
}

/// Without the `jceks` feature a Java keystore is refused before anything is read; with
/// it, it is an ordinary keystore.
#[test]
fn jks_keystores_refused_without_the_feature() {
    for ks in ["a.jks", "b.JCEKS", "/x/c.jceks"] {
        let result = config(&[&BARE[..], &[&format!("--keystore={ks}"), "--allow-all"]].concat());
        match cfg!(feature = "jceks") {
            true => assert!(matches!(
                result.unwrap().identity,
                IdentitySource::Keystore { .. }
            )),
            false => assert_eq!(
                result.unwrap_err(),
                "--keystore: JCEKS/JKS keystores are not supported by this build (convert to PKCS#12)"
            ),
        }
    }
}

// ---- Server mode validation (docs/behaviour.md §2.7.2) ----

#[test]
fn server_credentials_zero() {
    let msg = "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required";
    for extra in [&[][..], &["--cert=c"], &["--key=k"]] {
        assert_eq!(
            config(&[&BARE[..], extra, &["--allow-all"]].concat()).unwrap_err(),
            msg
        );
    }
    // Before the access-control check.
    assert_eq!(config(&BARE).unwrap_err(), msg);
}

#[test]
fn server_credentials_exclusive() {
    assert_eq!(
        server_err(&["--cert=c", "--key=k"]),
        "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive"
    );
}

#[test]
fn server_cert_key_pairing() {
    let msg = "--cert/--key must be set together, unless using PKCS11 for private key";
    assert_eq!(server_err(&["--key=k", "--allow-all"]), msg);
    assert_eq!(server_err(&["--cert=c"]), msg);
}

#[test]
fn server_identity_sources() {
    let c = server(&["--allow-all", "--storepass=pw", "--cacert=/ca.pem"]).unwrap();
    assert!(
        matches!(c.identity, IdentitySource::Keystore { ref path, ref password }
        if path.to_str() == Some("k.pem") && password == "pw")
    );
    assert_eq!(
        c.cacert.as_deref().and_then(|p| p.to_str()),
        Some("/ca.pem")
    );
    let c = config(&[&BARE[..], &["--cert=c", "--key=k", "--allow-all"]].concat()).unwrap();
    assert!(matches!(c.identity, IdentitySource::CertKey { .. }));
    assert!(c.cacert.is_none());
}

#[test]
fn server_access_control_required() {
    assert_eq!(
        server_err(&[]),
        "at least one access control flag (--allow-{all,cn,ou,dns,uri,spki-pin}, or OPA flags, or --disable-authentication) is required"
    );
    assert_eq!(
        server_err(&["--no-allow-all", "--no-disable-authentication"]),
        "at least one access control flag (--allow-{all,cn,ou,dns,uri,spki-pin}, or OPA flags, or --disable-authentication) is required"
    );
}

#[test]
fn server_allow_all_exclusive() {
    for other in [
        "--allow-cn=x",
        "--allow-ou=x",
        "--allow-dns=x",
        "--allow-ip=::1",
        "--allow-uri=spiffe://x",
    ] {
        assert_eq!(
            server_err(&["--allow-all", other]),
            "--allow-all is mutually exclusive with other access control flags"
        );
    }
    assert_eq!(
        server_err(&["--allow-all", &format!("--allow-spki-pin={PIN}")]),
        "--allow-all is mutually exclusive with other access control flags"
    );
}

#[test]
fn server_disable_authentication_exclusive() {
    for other in ["--allow-all", "--allow-cn=x", "--allow-uri=spiffe://x"] {
        assert_eq!(
            server_err(&["--disable-authentication", other]),
            "--disable-authentication is mutually exclusive with other access control flags"
        );
    }
    assert_eq!(
        server_err(&[
            "--disable-authentication",
            &format!("--allow-spki-pin={PIN}")
        ]),
        "--disable-authentication is mutually exclusive with other access control flags"
    );
}

#[test]
fn server_pins_exclusive() {
    assert_eq!(
        server_err(&[&format!("--allow-spki-pin={PIN}"), "--allow-cn=x"]),
        "--allow-spki-pin is mutually exclusive with other access control flags"
    );
}

#[test]
fn server_pin_syntax() {
    let e = server_err(&["--allow-spki-pin=md5:x"]);
    assert!(
        e.starts_with("--allow-spki-pin: invalid pin \"md5:x\""),
        "{e}"
    );
    // Checked before the target.
    let e = config(&[
        "server",
        "--listen=:1",
        "--target=10.0.0.1:1",
        "--keystore=k",
        "--allow-spki-pin=nocolon",
    ])
    .unwrap_err();
    assert!(e.starts_with("--allow-spki-pin: invalid pin"), "{e}");
}

#[test]
fn server_auth_modes() {
    assert!(matches!(
        server_auth(&server(&["--allow-all"]).unwrap()),
        ServerAuth::AllowAll
    ));
    assert!(matches!(
        server_auth(&server(&["--disable-authentication"]).unwrap()),
        ServerAuth::Disabled
    ));
    let c = server(&[
        &format!("--allow-spki-pin={PIN}"),
        &format!("--allow-spki-pin={PIN}"),
    ])
    .unwrap();
    assert!(matches!(server_auth(&c), ServerAuth::Pins(p) if p.len() == 2));
    let c = server(&[
        "--allow-cn=a",
        "--allow-ou=b",
        "--allow-dns=c",
        "--allow-uri=spiffe://d/*",
    ])
    .unwrap();
    let ServerAuth::Acl(acl) = server_auth(&c) else {
        panic!()
    };
    assert_eq!(
        (acl.cn.as_slice(), acl.ou.as_slice(), acl.dns.as_slice()),
        (
            &["a".to_string()][..],
            &["b".to_string()][..],
            &["c".to_string()][..]
        )
    );
    assert_eq!(acl.uri.len(), 1);
}

#[test]
fn server_target_safety() {
    let t = |target: &str, extra: &[&str]| {
        config(
            &[
                &[
                    "server",
                    "--listen=:1",
                    "--keystore=k",
                    "--allow-all",
                    &format!("--target={target}"),
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    for unsafe_target in [
        "10.0.0.1:2",
        ":80",
        "LOCALHOST:80",
        "127.0.0.2:80",
        "localhost.example:80",
        "alocalhost.com:1",
    ] {
        assert_eq!(
            t(unsafe_target, &[]).unwrap_err(),
            "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)",
            "{unsafe_target}"
        );
        assert!(
            t(unsafe_target, &["--unsafe-target"]).is_ok(),
            "{unsafe_target}"
        );
    }
    for safe in ["unix:/x", "127.0.0.1:1", "[::1]:1", "localhost:1"] {
        assert!(t(safe, &[]).is_ok(), "{safe}");
    }
    assert_eq!(
        t("localhost:", &[]).map(|c| c.target.raw),
        Ok("localhost:".to_string())
    );
    assert_eq!(
        t("nohost", &["--unsafe-target"]).unwrap_err(),
        "invalid --target address: address nohost: missing port in address"
    );
    for (target, net) in [("systemd:x", "systemd"), ("launchd:x", "launchd")] {
        assert_eq!(
            t(target, &[]).unwrap_err(),
            format!(
                "invalid --target network \"{net}\": only tcp and unix targets are supported (systemd:/launchd: cannot be dialed)"
            )
        );
    }
    // `--listen` is unrestricted in server mode.
    assert!(
        config(&[
            "server",
            "--listen=0.0.0.0:1",
            "--target=localhost:2",
            "--keystore=k",
            "--allow-all"
        ])
        .is_ok()
    );
}

#[test]
fn server_proxy_protocol_exclusive() {
    assert_eq!(
        server_err(&[
            "--allow-all",
            "--proxy-protocol",
            "--proxy-protocol-mode=tls"
        ]),
        "--proxy-protocol and --proxy-protocol-mode are mutually exclusive"
    );
    // After the target check.
    assert_eq!(
        config(&[
            "server",
            "--listen=:1",
            "--target=x:1",
            "--keystore=k",
            "--allow-all",
            "--proxy-protocol",
            "--proxy-protocol-mode=tls"
        ])
        .unwrap_err(),
        "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)"
    );
}

#[test]
fn cipher_suites() {
    assert_eq!(
        server_err(&["--allow-all", "--cipher-suites=RC4"]),
        "invalid cipher suite 'RC4' selected"
    );
    assert_eq!(
        server_err(&["--allow-all", "--cipher-suites=AES,"]),
        "invalid cipher suite '' selected"
    );
    assert_eq!(
        server_err(&["--allow-all", "--cipher-suites=UNSAFE-AZURE"]),
        "invalid cipher suite 'UNSAFE-AZURE' selected"
    );
    assert!(
        server_err(&[
            "--allow-all",
            "--cipher-suites=UNSAFE-AZURE",
            "--allow-unsafe-cipher-suites"
        ])
        .contains("not supported by this build")
    );
    let c = server(&["--allow-all", "--cipher-suites= CHACHA , AES"]).unwrap();
    assert_eq!(c.tls.cipher_suites, [CipherGroup::Chacha, CipherGroup::Aes]);
    let c = server(&["--allow-all"]).unwrap();
    assert_eq!(c.tls.cipher_suites, [CipherGroup::Aes, CipherGroup::Chacha]);
    assert_eq!(
        client_err(&["--cipher-suites=DES"]),
        "invalid cipher suite 'DES' selected"
    );
    // Last in server order.
    assert_eq!(
        server_err(&[
            "--allow-all",
            "--cipher-suites=RC4",
            "--proxy-protocol",
            "--proxy-protocol-mode=tls"
        ]),
        "--proxy-protocol and --proxy-protocol-mode are mutually exclusive"
    );
}

#[test]
fn max_tls_version_typed_and_unknown_words_kept_for_the_tls_step() {
    let max = |extra: &[&str]| {
        server(&[&["--allow-all"], extra].concat())
            .unwrap()
            .tls
            .max_version
    };
    assert_eq!(max(&["--max-tls-version=tls1.2"]), MaxTlsVersion::Tls12);
    assert_eq!(max(&["--max-tls-version=TLS1.3"]), MaxTlsVersion::Tls13);
    assert_eq!(max(&[]), MaxTlsVersion::Tls13);
    assert_eq!(
        max(&["--max-tls-version=bogus"]),
        MaxTlsVersion::Unsupported("bogus".into())
    );
}

#[test]
fn proxy_url_parsed_once_and_unusable_urls_keep_their_error() {
    let c = client(&["--proxy=socks5h://p:1080"]).unwrap();
    let p = client_opts(&c).proxy.clone().unwrap();
    assert_eq!(p.raw, "socks5h://p:1080");
    assert_eq!(p.url.unwrap().kind, crate::tunnel::ProxyKind::Socks5);
    let c = client(&["--proxy=ftp://p"]).unwrap();
    assert_eq!(
        client_opts(&c).proxy.clone().unwrap().url.unwrap_err(),
        "proxy: unknown scheme: ftp"
    );
}

#[test]
fn environment_read_once_into_the_config_and_empty_is_unset() {
    let run = |vars: &[(&str, &str)]| {
        let Parsed::Run(r) = parse_env(&[&SERVER[..], &["--allow-all"]].concat(), vars).unwrap()
        else {
            panic!()
        };
        r.into_config().unwrap()
    };
    let c = run(&[("SSL_CERT_FILE", "/b/ca.pem"), ("SSL_CERT_DIR", "/d1:/d2")]);
    assert_eq!(c.system_trust.file.as_deref(), Some(Path::new("/b/ca.pem")));
    assert_eq!(c.system_trust.dir.as_deref(), Some(OsStr::new("/d1:/d2")));
    let c = run(&[("SSL_CERT_FILE", ""), ("SSL_CERT_DIR", "")]);
    assert_eq!(c.system_trust, SystemTrust::default());
    assert!(run(&[]).tls.resumption);
    assert!(run(&[("GHOSTUNNEL_TLS_RESUMPTION", "")]).tls.resumption);
    for off in ["off", "0", "no", "false"] {
        assert!(!run(&[("GHOSTUNNEL_TLS_RESUMPTION", off)]).tls.resumption);
    }
}

#[test]
fn uri_patterns_compiled_after_validation() {
    let e = server_err(&["--allow-uri=spiffe://a/**/b"]);
    assert!(
        e.starts_with("invalid URI pattern in --allow-uri flag ("),
        "{e}"
    );
    let e = server_err(&["--allow-uri="]);
    assert_eq!(
        e,
        "invalid URI pattern in --allow-uri flag (input pattern was empty string)"
    );
    // Cipher-suite errors come first.
    assert_eq!(
        server_err(&["--allow-uri=", "--cipher-suites=X"]),
        "invalid cipher suite 'X' selected"
    );
    let e = client_err(&["--verify-uri=a*b"]);
    assert!(
        e.starts_with("invalid URI pattern in --verify-uri flag ("),
        "{e}"
    );
    assert_eq!(
        client_err(&["--verify-uri=", "--cipher-suites=X"]),
        "invalid cipher suite 'X' selected"
    );
}

// ---- Client mode validation (docs/behaviour.md §2.7.2) ----

#[test]
fn client_credentials() {
    let base = ["client", "--listen=localhost:1", "--target=h:2"];
    assert_eq!(
        config(&base).unwrap_err(),
        "at least one of --keystore, --cert/--key, --keychain-identity/issuer (if supported), --use-workload-api or --disable-authentication flags is required"
    );
    let excl = "--keystore, --cert/--key, --keychain-identity/issuer, --use-workload-api and --disable-authentication flags are mutually exclusive";
    assert_eq!(client_err(&["--disable-authentication"]), excl);
    assert_eq!(client_err(&["--cert=c", "--key=k"]), excl);
    assert_eq!(
        client_err(&["--key=k"]),
        "--cert/--key must be set together, unless using PKCS11 for private key"
    );
    let c = config(&[&base[..], &["--disable-authentication"]].concat()).unwrap();
    assert!(matches!(c.identity, IdentitySource::None));
    let c = config(&[&base[..], &["--cert=c", "--key=k"]].concat()).unwrap();
    assert!(matches!(c.identity, IdentitySource::CertKey { .. }));
}

#[test]
fn client_listen_safety() {
    let l = |listen: &str, extra: &[&str]| {
        config(
            &[
                &[
                    "client",
                    "--target=h:2",
                    "--keystore=k",
                    &format!("--listen={listen}"),
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    let msg = "--listen must be unix:PATH, localhost:PORT, systemd:NAME or launchd:NAME (unless --unsafe-listen is set)";
    for bad in [":8080", "0.0.0.0:8080", "LOCALHOST:1", "nohost"] {
        assert_eq!(l(bad, &[]).unwrap_err(), msg, "{bad}");
    }
    assert!(l("0.0.0.0:8080", &["--unsafe-listen"]).is_ok());
    for ok in [
        "unix:/x",
        "systemd:s",
        "launchd:s",
        "127.0.0.1:1",
        "[::1]:1",
        "localhost:1",
    ] {
        assert!(l(ok, &[]).is_ok(), "{ok}");
    }
    // Before the target check.
    assert_eq!(
        config(&["client", "--listen=:1", "--target=unix:/x", "--keystore=k"]).unwrap_err(),
        msg
    );
}

#[test]
fn client_target_must_be_tcp() {
    let t = |target: &str| {
        config(&[
            "client",
            "--listen=localhost:1",
            "--keystore=k",
            &format!("--target={target}"),
        ])
    };
    assert_eq!(
        t("nohost").unwrap_err(),
        "invalid --target address: address nohost: missing port in address"
    );
    for (target, net) in [
        ("unix:/x", "unix"),
        ("systemd:x", "systemd"),
        ("launchd:x", "launchd"),
    ] {
        assert_eq!(
            t(target).unwrap_err(),
            format!(
                "invalid --target network \"{net}\": client mode requires a HOST:PORT TCP target"
            )
        );
    }
    // Any host is fine in client mode.
    assert!(t("10.0.0.1:443").is_ok());
}

#[test]
fn client_pins() {
    assert_eq!(
        client_err(&[&format!("--verify-spki-pin={PIN}"), "--verify-cn=x"]),
        "--verify-spki-pin is mutually exclusive with other verification flags"
    );
    assert_eq!(
        client_err(&[&format!("--verify-spki-pin={PIN}"), "--verify-ip=::1"]),
        "--verify-spki-pin is mutually exclusive with other verification flags"
    );
    let e = client_err(&["--verify-spki-pin=sha1:x"]);
    assert!(
        e.starts_with("--verify-spki-pin: invalid pin \"sha1:x\""),
        "{e}"
    );
    // Pins work without a client certificate.
    let c = config(&[
        "client",
        "--listen=localhost:1",
        "--target=h:2",
        "--disable-authentication",
        &format!("--verify-spki-pin={PIN}"),
    ])
    .unwrap();
    assert!(matches!(client_opts(&c).verify, ClientVerify::Pins(ref p) if p.len() == 1));
}

#[test]
fn client_options() {
    let c = client(&[
        "--override-server-name=api",
        "--verify-cn=a",
        "--verify-dns=b",
        "--verify-ou=o",
        "--verify-uri=spiffe://x/*",
    ])
    .unwrap();
    let o = client_opts(&c);
    assert_eq!(o.override_server_name.as_deref(), Some("api"));
    assert!(o.proxy.is_none());
    let ClientVerify::Standard(acl) = &o.verify else {
        panic!()
    };
    assert_eq!(
        (acl.cn.len(), acl.dns.len(), acl.ou.len(), acl.uri.len()),
        (1, 1, 1, 1)
    );
    let c = client(&["--override-server-name="]).unwrap();
    let o = client_opts(&c);
    assert!(o.override_server_name.is_none());
    assert!(matches!(&o.verify, ClientVerify::Standard(acl) if acl.is_empty()));
}

// ---- Durations into the config (docs/behaviour.md §2.7.1 notes) ----

#[test]
fn storepass_from_a_file() {
    let path = std::env::temp_dir().join(format!("gt-storepass-{}", std::process::id()));
    std::fs::write(&path, "s3cret\n").unwrap();
    let file = format!("--storepass-file={}", path.display());
    let c = server(&["--allow-all", &file]).unwrap();
    assert!(
        matches!(c.identity, IdentitySource::Keystore { ref password, .. } if password == "s3cret")
    );
    assert_eq!(
        server(&["--allow-all", &file, "--storepass=x"]).unwrap_err(),
        "--storepass and --storepass-file are mutually exclusive"
    );
    std::fs::remove_file(&path).unwrap();
    assert!(
        server(&["--allow-all", &file])
            .unwrap_err()
            .starts_with("--storepass-file: open ")
    );
}

#[test]
fn negative_durations_follow_the_reference() {
    let c = server(&[
        "--allow-all",
        "--shutdown-timeout=-1s",
        "--max-conn-lifetime=-1s",
        "--close-timeout=-1s",
        "--connect-timeout=-1s",
        "--timed-reload=-5m",
    ])
    .unwrap();
    assert!(c.timeouts.shutdown.is_none());
    assert!(c.timeouts.max_lifetime.is_none());
    assert!(c.timed_reload.is_none());
    assert_eq!(c.timeouts.close, Duration::ZERO);
    assert_eq!(c.timeouts.connect, Duration::ZERO);
}

#[test]
fn durations_into_the_config() {
    let c = server(&["--allow-all"]).unwrap();
    assert_eq!(c.timeouts.connect, Duration::from_secs(10));
    assert_eq!(c.timeouts.close, Duration::from_secs(60));
    assert_eq!(c.timeouts.shutdown, Some(Duration::from_secs(300)));
    assert!(c.timeouts.max_lifetime.is_none() && c.timed_reload.is_none());
    let c = server(&[
        "--allow-all",
        "--shutdown-timeout=0",
        "--max-conn-lifetime=1h",
        "--timed-reload=300s",
        "--close-timeout=0",
    ])
    .unwrap();
    assert_eq!(c.timeouts.shutdown, Some(Duration::ZERO));
    assert_eq!(c.timeouts.max_lifetime, Some(Duration::from_secs(3600)));
    assert_eq!(c.timed_reload, Some(Duration::from_secs(300)));
    assert_eq!(c.timeouts.close, Duration::ZERO);
    assert_eq!(c.max_concurrent_conns, 0);
}

#[test]
fn listen_and_target_in_the_config() {
    let c = server(&["--allow-all"]).unwrap();
    assert_eq!(c.listen.raw, ":8443");
    assert!(
        matches!(c.target.kind, AddrKind::Tcp { ref host, ref port } if host == "localhost" && port == "80")
    );
    let c = config(&[
        "server",
        "--listen=systemd:gt",
        "--target=unix:/run/b.sock",
        "--keystore=k",
        "--allow-all",
    ])
    .unwrap();
    assert!(matches!(c.listen.kind, AddrKind::Systemd(ref n) if n == "gt"));
    assert!(matches!(c.target.kind, AddrKind::Unix(_)));
}
