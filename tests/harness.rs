//! Self-checks of the harness, so that rejection tests elsewhere cannot pass because the
//! generated certificates are broken.

use std::time::Duration;

use crate::util::*;

/// The generated client certificate is accepted by a plain rustls server trusting the CA,
/// and the server certificate verifies for `localhost`.
#[test]
fn harness_pki_works_with_plain_rustls() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    try_echo(srv.addr, cfg, b"hello").expect("echo through rustls server");
    assert_eq!(srv.peers(), vec![Some(pki.client.cert_der.clone())]);
}

/// `--help` prints usage to stderr and exits 0 (docs/behaviour.md §2.1).
#[test]
fn help_prints_usage_and_exits_zero() {
    let o = Cmd::bare().arg("--help").run(Duration::from_secs(10));
    o.assert_code(0);
    assert!(
        o.stderr.contains("server") && o.stderr.contains("client"),
        "usage lacks the subcommands{}",
        o.describe()
    );
}
