//! Where this proxy's certificate chain and private key come from: the [`IdentitySource`] seam,
//! its implementations for files on disk (PEM keystore, `--cert`/`--key`, PKCS#12) and for no
//! identity, and [`from_config`], the one factory that picks a source from the configuration.
//!
//! Owns the choice of source and what each source tells the rest of the process (log line,
//! `--check` lines, sandbox needs, `/_status` fields). Never builds TLS configurations
//! (`tls.rs` does, from what [`IdentitySource::load`] returns) and never reads flags.
//!
//! # Adding a source
//!
//! 1. A variant of `config::IdentitySource` carrying the typed settings, its flags in the flag
//!    table (`cli.rs`) with their validation, and the cargo feature that gates it (with the
//!    feature off its flags fail with "... not supported by this build").
//! 2. A type implementing [`IdentitySource`], in this module or its own.
//! 3. A match arm in [`from_config`].
//!
//! Nothing else changes: the TLS contexts, reloads, `/_status`, `--check` and the sandbox plan
//! all go through the trait.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;

use crate::certs::{self, CertError};
use crate::config::{self, Config};
use crate::reload::Rebuild;
use crate::sandbox::Plan;

/// The ALPN protocol of TLS-ALPN-01 challenge connections (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A source of this proxy's identity: the certificate chain it presents and the key it signs
/// handshakes with.
///
/// One instance lives for the whole process behind an `Arc`, shared by the TLS contexts, the
/// reload path, the status server and the signal thread: every method may be called from any
/// thread, concurrently. Nothing here runs per connection: [`load`](Self::load) is called when
/// the TLS contexts are (re)built, and handshakes only use the `CertifiedKey` it returned.
///
/// Lifecycle, in the order the process calls it:
/// 1. [`from_config`] constructs it (no threads, no network; fail here for bad settings);
///    [`describe`](Self::describe) is logged.
/// 2. [`load`](Self::load) and [`trust_anchors`](Self::trust_anchors) build the first TLS
///    contexts; `--check` then prints [`location`](Self::location) and
///    [`check_lines`](Self::check_lines) and exits.
/// 3. [`sandbox`](Self::sandbox) adds to the Landlock plan, which is applied on the main
///    thread before any thread exists.
/// 4. [`start`](Self::start) runs after the sandbox: background threads started there are
///    sandboxed like every other thread.
/// 5. From then on: [`load`](Self::load) again on every reload (SIGHUP, SIGUSR1,
///    `--timed-reload`) and whenever the source itself asks through its [`Rebuild`];
///    [`status_fields`](Self::status_fields) on every `/_status` request.
pub trait IdentitySource: Send + Sync {
    /// The startup log line, e.g. `using keystore file on disk as certificate source`.
    fn describe(&self) -> String;

    /// What `--check` prints after `identity: `, as `<where> (<kind>)`, e.g.
    /// `/etc/gt/server.pem (keystore)` or `pkcs11:token=web (PKCS#11)`; `<where>` names the
    /// certificate in `--check`'s expiry warnings.
    fn location(&self) -> String;

    /// The current identity: the chain (leaf first) and a signing key for the leaf's public
    /// key. `Ok(None)` only for a source that has no identity (client
    /// `--disable-authentication`); a server fails to start without one.
    ///
    /// Called at start and on every rebuild, on the reloading thread. An `Err` at start is a
    /// startup failure (`error: unable to load certificates: <e>`); later it is logged as
    /// `error reloading TLS configuration: <e>` and the previous identity stays in use, so a
    /// source may fail without harm. Expired or not-yet-valid leaves must be refused with the
    /// texts of `certs::load_identity`.
    ///
    /// The key need not be in memory: a token-backed source (PKCS#11) returns a `CertifiedKey`
    /// whose `SigningKey` signs through the module; it must check here that the certificate it
    /// re-read still matches the token's key.
    fn load(&self, provider: &CryptoProvider) -> Result<Option<Arc<CertifiedKey>>, CertError>;

    /// Trust anchors this source supplies (e.g. the SPIFFE Workload API's bundle), used instead
    /// of `--cacert` or the system store to verify peers; `None` (the default) keeps those.
    /// Read together with [`load`](Self::load) at every rebuild, so a pushed bundle and a
    /// pushed identity are published together.
    fn trust_anchors(&self) -> Option<Vec<CertificateDer<'static>>> {
        None
    }

    /// Starts whatever makes the source change by itself (a Workload API stream, ACME
    /// renewal). Called once, after the sandbox and before the proxy serves. A background
    /// thread keeps `rebuild` and calls [`Rebuild::now`] after each update: the TLS contexts
    /// are rebuilt through [`load`](Self::load) for every new handshake, while established
    /// connections keep theirs. An async runtime, if any, stays on that thread. The default
    /// starts nothing.
    fn start(&self, rebuild: Rebuild) -> io::Result<()> {
        let _ = rebuild;
        Ok(())
    }

    /// Adds what the source needs after the sandbox to `plan`: directories to read
    /// (`Plan::add_file_dir` for a file that may be replaced by rename), TCP ports to connect
    /// to, or `Plan::disable` with the reason when Landlock cannot work with it (a PKCS#11
    /// module loads libraries and opens devices nobody can list); that reason is logged and
    /// shown as `sandbox` in `/_status`.
    fn sandbox(&self, plan: &mut Plan) {
        let _ = plan;
    }

    /// Extra `/_status` string fields (e.g. `("acme_state", "renewing")`), appended after
    /// `certificate_not_after`. Called per request: keep it cheap. Default: none.
    fn status_fields(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Extra `--check` report lines, printed indented under `identity:` after the chain.
    fn check_lines(&self) -> Vec<String> {
        Vec::new()
    }

    /// For a server answering ACME TLS-ALPN-01 (RFC 8737): the resolver of the challenge
    /// certificate. When `Some`, the server reads each ClientHello first: one offering
    /// `acme-tls/1` gets a configuration with this resolver, that ALPN and no client
    /// certificate request, and the connection is closed once its handshake is done (it never
    /// reaches the target); every other connection is served exactly as without ACME (the
    /// client certificate stays mandatory). The resolver sees only `acme-tls/1` ClientHellos;
    /// it picks the certificate for their SNI, or returns `None` to fail the handshake. Asked
    /// once per context build, so a source that changes resolvers calls [`Rebuild::now`].
    fn alpn_challenge(&self) -> Option<Arc<dyn ResolvesServerCert>> {
        None
    }
}

/// Builds the identity source the configuration asks for. Every source is chosen here.
pub fn from_config(config: &Config) -> Result<Arc<dyn IdentitySource>, CertError> {
    Ok(match &config.identity {
        config::IdentitySource::None => Arc::new(NoIdentity),
        files @ (config::IdentitySource::Keystore { .. }
        | config::IdentitySource::CertKey { .. }) => Arc::new(Files(files.clone())),
    })
}

/// `--keystore` (PEM, DER or PKCS#12) or `--cert` + `--key`: files re-read on every load.
struct Files(config::IdentitySource);

impl Files {
    fn paths(&self) -> Vec<&Path> {
        match &self.0 {
            config::IdentitySource::Keystore { path, .. } => vec![path],
            config::IdentitySource::CertKey { cert, key } => vec![cert, key],
            config::IdentitySource::None => vec![],
        }
    }
}

impl IdentitySource for Files {
    fn describe(&self) -> String {
        match self.0 {
            config::IdentitySource::Keystore { .. } => {
                "using keystore file on disk as certificate source"
            }
            _ => "using cert/key files on disk as certificate source",
        }
        .to_string()
    }

    fn location(&self) -> String {
        match &self.0 {
            config::IdentitySource::Keystore { path, .. } => {
                format!("{} (keystore)", path.display())
            }
            config::IdentitySource::CertKey { cert, key } => {
                format!("{} + {} (cert/key)", cert.display(), key.display())
            }
            config::IdentitySource::None => "none".to_string(),
        }
    }

    fn load(&self, provider: &CryptoProvider) -> Result<Option<Arc<CertifiedKey>>, CertError> {
        certs::load_identity(&self.0, provider).map_err(CertError::Identity)
    }

    /// Their directories (so that rename rotation plus a reload works) and, for symlinks, the
    /// directory of the resolved target.
    fn sandbox(&self, plan: &mut Plan) {
        for file in self.paths() {
            plan.add_file_dir(file);
        }
    }
}

/// Client `--disable-authentication`: no certificate is presented.
struct NoIdentity;

impl IdentitySource for NoIdentity {
    fn describe(&self) -> String {
        "no cert source configured -- running without certificate".to_string()
    }

    fn location(&self) -> String {
        "none (--disable-authentication)".to_string()
    }

    fn load(&self, _: &CryptoProvider) -> Result<Option<Arc<CertifiedKey>>, CertError> {
        Ok(None)
    }
}
