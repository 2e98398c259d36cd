//! Harness for the integration tests: a generated PKI, the real `ghostunnel` binary as a
//! child process, plaintext backends and rustls peers.
//!
//! Not every helper is used by every test module.
#![allow(dead_code)]

pub mod backend;
pub mod daemon;
pub mod http;
pub mod pki;
pub mod tls;

pub use backend::*;
pub use daemon::*;
pub use http::*;
pub use pki::*;
pub use tls::*;

/// Fails the test unless `tool` runs (`tool --version`). A missing tool is a failure, never a
/// silent pass: `tests/run.sh` installs every one, from the Debian `package` named here.
pub fn require_tool(tool: &str, package: &str) {
    let runs = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    assert!(
        runs,
        "`{tool}` is needed by this test but cannot be run: install the `{package}` package \
         (tests/run.sh does)"
    );
}
