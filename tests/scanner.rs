//! The TLS policy checked by a real scanner (sslscan, Debian package): nothing below TLS 1.2,
//! only ECDHE + AEAD suites, no weak groups, no renegotiation, no compression.

use crate::util::*;
use std::process::Command;

fn sslscan(addr: &str, extra: &[&str]) -> Option<String> {
    let out = Command::new("timeout")
        .args(["120", "sslscan", "--no-colour"])
        .args(extra)
        .arg(addr)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn sslscan_finds_nothing_weak() {
    require_tool("sslscan", "sslscan");
    let pki = Pki::new();
    let backend = Backend::echo();
    // Without client authentication, so that the scanner can complete every handshake.
    let (mut d, addr) = start_server(&pki, &backend.target(), &["--disable-authentication"]);
    let target = addr.to_string();
    let all = sslscan(&target, &[]).expect("sslscan ran");
    let tls12 = sslscan(&target, &["--tls12"]).expect("sslscan --tls12 ran");
    let report = format!("{all}\n{tls12}");
    let protocol = |name: &str| {
        report
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("missing")
            .to_string()
    };
    for old in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        assert_eq!(
            protocol(old),
            "disabled",
            "{old} must be disabled:\n{report}"
        );
    }
    for current in ["TLSv1.2", "TLSv1.3"] {
        assert_eq!(protocol(current), "enabled", "{current}:\n{report}");
    }
    let accepted: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Accepted") || l.starts_with("Preferred"))
        .collect();
    assert!(
        accepted.iter().any(|l| l.contains("TLSv1.2")),
        "TLS 1.2 suites listed:\n{report}"
    );
    for line in &accepted {
        let aead = line.contains("GCM") || line.contains("CHACHA20");
        let forward_secret = line.contains("TLSv1.3") || line.contains("ECDHE-");
        assert!(aead && forward_secret, "weak suite offered: {line}");
    }
    for line in report.lines().filter(|l| {
        l.contains(" bits ") && (l.contains("secp") || l.contains("x25519") || l.contains("ffdhe"))
    }) {
        let bits: u32 = line
            .split_whitespace()
            .nth(1)
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        assert!(bits >= 128, "weak key exchange group: {line}");
    }
    assert!(
        report.contains("Session renegotiation not supported"),
        "renegotiation:\n{report}"
    );
    assert!(
        !report.contains("Compression enabled"),
        "compression:\n{report}"
    );
    assert!(
        d.try_status().is_none(),
        "the daemon survived the scan{}",
        d.describe()
    );
}
