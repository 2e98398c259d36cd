//! Who may connect: the [`Authorizer`] seam, the name ACL behind `--allow-*` (server) and
//! `--verify-*` (client), and [`from_config`], the one factory that picks an authorizer.
//!
//! Owns the decision on a peer whose certificate chain was already verified. Never verifies
//! chains, signatures or pins (the verifiers in `tls.rs` do, then ask the authorizer) and never
//! reads flags.
//!
//! # Adding an authorizer
//!
//! 1. A variant in `config.rs` carrying the typed settings (next to `ServerAuth::Acl` /
//!    `ClientVerify::Standard`), its flags in the flag table (`cli.rs`) with their validation,
//!    and the cargo feature that gates it.
//! 2. A type implementing [`Authorizer`], in this module or its own.
//! 3. A match arm in [`from_config`].

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::auth;
use crate::config::{Acl, ClientVerify, Config, Mode, ServerAuth};
use crate::metrics::Timer;
use crate::sandbox::Plan;

/// A refusal. Its `Display` is the text of the handshake error log line, e.g.
/// `error on TLS handshake from 127.0.0.1:5555: <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Denied {}

/// Decides whether a peer whose certificate chain verified may connect.
///
/// One instance lives for the whole process behind an `Arc` and survives reloads (the TLS
/// contexts are rebuilt around the same one). [`authorize`](Self::authorize) runs on the
/// connection's worker thread, once per handshake: after chain verification on a full
/// handshake, and again on a resumed session with the chain stored in the ticket, so a
/// resumption never outlives a policy change. It must be quick and bounded in time (an OPA
/// evaluation needs its own deadline: the handshake is under `--connect-timeout` and a slow
/// decision holds a worker); on timeout or error, deny.
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// `leaf` is the peer's end-entity certificate (DER), `intermediates` the rest of the chain
    /// it sent, in order; both passed chain verification (or pin checking) already. `Ok` lets
    /// the connection through.
    fn authorize(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), Denied>;

    /// Re-reads what the decision depends on (e.g. a policy bundle), on every reload (SIGHUP,
    /// SIGUSR1, `--timed-reload`), after the identity reloaded (whether or not that worked).
    /// On `Err` the previous state stays in use and the text is logged as a whole line (e.g.
    /// `error reloading OPA policy: <e>`), after the certificate's line.
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }

    /// Adds to the Landlock plan what [`reload`](Self::reload) and
    /// [`authorize`](Self::authorize) need once sandboxed (a policy file's directory:
    /// `Plan::add_file_dir`).
    fn sandbox(&self, plan: &mut Plan) {
        let _ = plan;
    }

    /// Monotonic counters for `/_metrics` (e.g. `("authz.allowed", n)`); names get the
    /// `--metrics-prefix`. Called per scrape or push: read atomics only.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Timers for `/_metrics` (e.g. `("policy.eval-time", &timer)`), rendered like the
    /// built-in timers in every format; names get the `--metrics-prefix`.
    fn timers(&self) -> Vec<(&'static str, &Timer)> {
        Vec::new()
    }

    /// Extra `/_status` string fields, appended after the identity's. Default: none.
    fn status_fields(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Extra `--check` report lines (e.g. `policy: /etc/gt/policy.rego`).
    fn check_lines(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An authorizer that cannot be built (a policy bundle or query that does not load): the
/// lines to log, and the `<e>` of stderr's `error: <e>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub logged: Vec<String>,
    pub printed: String,
}

/// Builds the authorizer the configuration asks for. Every authorizer is chosen here.
///
/// Pins (`--allow-spki-pin`, `--verify-spki-pin`) are checked by the verifier instead of chain
/// verification, and then admit the peer; so do `--allow-all` and a client without
/// `--verify-*`. A policy (`--allow-policy`, `--verify-policy`) is loaded here, so a bad one
/// fails the start.
pub fn from_config(config: &Config) -> Result<Arc<dyn Authorizer>, BuildError> {
    let client = matches!(config.mode, Mode::Client(_));
    Ok(match &config.mode {
        Mode::Server(opts) => match &opts.auth {
            ServerAuth::Acl(acl) => acl_authorizer(acl, config, client)?,
            ServerAuth::AllowAll | ServerAuth::Pins(_) | ServerAuth::Disabled => Arc::new(Anyone),
        },
        Mode::Client(opts) => match &opts.verify {
            ClientVerify::Standard(acl) if !acl.is_empty() => acl_authorizer(acl, config, client)?,
            ClientVerify::Standard(_) | ClientVerify::Pins(_) => Arc::new(Anyone),
        },
    })
}

/// The name ACL, with the OPA policy after it when one is configured.
fn acl_authorizer(
    acl: &Acl,
    config: &Config,
    client: bool,
) -> Result<Arc<dyn Authorizer>, BuildError> {
    let Some(spec) = &acl.policy else {
        return Ok(Arc::new(AclAuthorizer(acl.clone())));
    };
    #[cfg(feature = "opa")]
    {
        crate::policy::PolicyAuthorizer::new(acl.clone(), spec, config.timeouts.connect)
            .map(|a| Arc::new(a) as Arc<dyn Authorizer>)
            .map_err(|e| {
                let e = e.to_string();
                let mut logged = vec![format!("{}{e}", crate::policy::STARTUP_PREFIX)];
                if client {
                    logged.push(format!("error: unable to build dialer: {e}"));
                }
                BuildError { logged, printed: e }
            })
    }
    #[cfg(not(feature = "opa"))]
    {
        // Validation refuses the policy flags in this build; nothing gets here.
        let _ = (spec, config, client);
        Ok(Arc::new(AclAuthorizer(acl.clone())))
    }
}

/// Admits every verified peer.
#[derive(Debug)]
struct Anyone;

impl Authorizer for Anyone {
    fn authorize(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>]) -> Result<(), Denied> {
        Ok(())
    }
}

/// `--allow-cn/-ou/-dns/-ip/-uri` or `--verify-*`: the first matching name admits.
#[derive(Debug)]
struct AclAuthorizer(Acl);

impl Authorizer for AclAuthorizer {
    fn authorize(&self, leaf: &CertificateDer<'_>, _: &[CertificateDer<'_>]) -> Result<(), Denied> {
        auth::check_acl(&self.0, leaf).map_err(Denied)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;
    use crate::cli::{self, Parsed};

    fn authorizer(args: &[&str]) -> Arc<dyn Authorizer> {
        let args = args.iter().map(OsString::from).collect();
        let Ok(Parsed::Run(raw)) = cli::parse(args, &|_| None) else {
            panic!("parse")
        };
        from_config(&raw.into_config().expect("valid")).expect("builds")
    }

    /// The factory gives the ACL flags of either mode to the ACL, and admits everyone where
    /// the verifier alone decides (`--allow-all`, pins, a client without `--verify-*`).
    #[test]
    fn factory_maps_the_access_flags() {
        let server = [
            "server",
            "--listen=:1",
            "--target=localhost:2",
            "--keystore=/k",
        ];
        let client = [
            "client",
            "--listen=localhost:1",
            "--target=r:2",
            "--keystore=/k",
        ];
        let acl = |base: &[&str], flag: &str| {
            let mut args = base.to_vec();
            args.push(flag);
            format!("{:?}", authorizer(&args))
        };
        assert!(acl(&server, "--allow-cn=a").starts_with("AclAuthorizer"));
        assert!(acl(&client, "--verify-cn=a").starts_with("AclAuthorizer"));
        assert_eq!(acl(&server, "--allow-all"), "Anyone");
        assert_eq!(format!("{:?}", authorizer(&client)), "Anyone");
    }
}
