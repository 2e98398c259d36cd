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

/// Every address form that is not literally loopback or a socket is refused without the
/// matching `--unsafe-*` flag (docs/behaviour.md §6.4), and accepted with it.
#[test]
fn address_restrictions_cover_every_unsafe_form() {
    let unsafe_forms = [
        "10.0.0.1:80",
        "127.0.0.2:80",
        "[::2]:80",
        "[::]:80",
        "0.0.0.0:80",
        ":80",
        "LOCALHOST:80",
        "localhost.example:80",
        "alocalhost.com:1",
        "example.com:443",
    ];
    let target_err =
        "error: --target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)";
    let listen_err = "error: --listen must be unix:PATH, localhost:PORT, systemd:NAME or launchd:NAME (unless --unsafe-listen is set)";
    for form in unsafe_forms {
        let o = Cmd::bare()
            .args([
                "server",
                "--listen=127.0.0.1:1",
                &format!("--target={form}"),
            ])
            .args(["--keystore=/nonexistent.pem", "--allow-all"])
            .run(Duration::from_secs(10));
        o.assert_code(1).assert_stderr_contains(target_err);
        let o = Cmd::bare()
            .args([
                "client",
                &format!("--listen={form}"),
                "--target=example.com:443",
            ])
            .arg("--keystore=/nonexistent.pem")
            .run(Duration::from_secs(10));
        o.assert_code(1).assert_stderr_contains(listen_err);
        // With the unsafe flag the address check passes and startup moves on to the keystore.
        let o = Cmd::bare()
            .args([
                "client",
                &format!("--listen={form}"),
                "--target=example.com:443",
            ])
            .args(["--keystore=/nonexistent.pem", "--unsafe-listen"])
            .run(Duration::from_secs(10));
        o.assert_code(1).assert_stderr_contains("/nonexistent.pem");
    }
}

/// A UNIX listener the daemon creates gets the mode the process umask allows: with the
/// `UMask=0077` of the hardened unit, only the owner may connect.
#[test]
fn unix_listener_mode_follows_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let path = pki.dir.join("private.sock");
    let mut args: Vec<String> = vec!["-c".into(), "umask 077; exec \"$0\" \"$@\"".into()];
    args.push(env!("CARGO_BIN_EXE_ghostunnel").into());
    args.extend([
        "client".into(),
        format!("--listen=unix:{}", path.display()),
        "--target=localhost:9".into(),
    ]);
    args.extend(pki.client_cred_args());
    let mut child = std::process::Command::new("sh")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let appeared = eventually(Duration::from_secs(10), || path.exists());
    let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    assert!(appeared, "socket never created");
    // Sockets are created 0777 & !umask: 0700, no access for group or others.
    assert_eq!(mode.unwrap(), 0o700, "owner-only socket under umask 077");
}
