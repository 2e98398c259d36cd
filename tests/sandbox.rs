//! The Landlock sandbox, proven from outside: what the daemon may still read after startup.

use std::time::Duration;

use crate::util::*;

/// Whether this kernel enforces Landlock at all (the daemon says so in its log).
fn enforced(d: &Daemon) -> bool {
    d.stdout().contains("landlock: fully enforced")
        || d.stdout().contains("landlock: partially enforced")
}

/// Rotating the keystore to a file outside the directories granted at startup (a symlink
/// swapped in by rename) makes the reload fail with permission denied; the old certificate
/// stays in service. Without the sandbox the same rotation succeeds.
#[test]
fn reload_outside_the_granted_directories_is_denied() {
    for sandboxed in [true, false] {
        let pki = Pki::new();
        let backend = Backend::echo();
        let keystore = pki.dir.join("live.pem");
        std::fs::copy(&pki.server.combined_path, &keystore).unwrap();
        let mut args = vec![
            "--allow-all".to_string(),
            "--keystore".into(),
            keystore.display().to_string(),
        ];
        args.extend(pki.cacert_args());
        if !sandboxed {
            args.push("--disable-landlock".into());
        }
        let (listen, addr) = free_addr();
        let mut d = Cmd::new("server")
            .args(["--listen", &listen, "--target", &backend.target()])
            .args(&args)
            .spawn();
        if sandboxed && !enforced(&d) {
            eprintln!("Landlock is not enforced on this kernel: nothing to prove");
            return;
        }
        // A new certificate in a directory the daemon was never granted.
        let elsewhere = TempDir::new();
        let new = pki.issue("server2", &LeafSpec::server("server2"));
        let target = elsewhere.join("server2.pem");
        std::fs::copy(&new.combined_path, &target).unwrap();
        let link = pki.dir.join("live.pem.new");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::fs::rename(&link, &keystore).unwrap();
        d.signal(libc::SIGHUP);
        d.wait_log("reloading configuration complete", Duration::from_secs(10));
        let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
        let s = tls_connect(addr, cfg, "localhost").expect("still serving");
        let leaf = s.conn.peer_certificates().unwrap()[0].to_vec();
        if sandboxed {
            let out = d.stdout();
            assert!(
                out.contains("error reloading TLS configuration:")
                    && out.contains("permission denied"),
                "{}",
                d.describe()
            );
            assert_eq!(
                leaf, pki.server.cert_der,
                "the old certificate must stay in service"
            );
        } else {
            assert!(
                d.stdout().contains("loaded certificate: CN=server2"),
                "{}",
                d.describe()
            );
            assert_eq!(leaf, new.cert_der);
        }
    }
}
