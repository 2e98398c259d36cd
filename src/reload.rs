//! Reloading: the [`Reloader`] rebuilds the TLS contexts from the identity source and trust,
//! re-reads the authorizer, and answers what is being served now (for `/_status`, the status
//! port's TLS and the expiry metric).
//!
//! The way in is `signals.rs` (SIGHUP, SIGUSR1, `--timed-reload`: log lines and lifecycle
//! around [`Reloader::reload`]) or an identity source that changed by itself ([`Rebuild`]). The
//! files themselves are read by the identity source (`identity.rs`, `certs.rs`). Owns no
//! sockets and no signal handling.

use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use rustls::ServerConfig;

use crate::authz::Authorizer;
use crate::certs::CertError;
use crate::identity::IdentitySource;
use crate::metrics::Metrics;
use crate::sync::lock;
use crate::tls::Contexts;

/// What a reload did. The certificates and the authorizer reload independently (the
/// authorizer re-reads its state whether or not the certificates loaded, as the reference
/// re-reads its policy); each failure keeps that part's previous state.
#[derive(Debug)]
pub struct Reloaded {
    /// The new leaf's subject, or why identity or trust could not be loaded into new TLS
    /// contexts (logged as `error reloading TLS configuration: <e>`).
    pub certificates: Result<String, CertError>,
    /// The authorizer's failure as its whole log line (e.g. `error reloading OPA policy: …`).
    pub authorizer: Result<(), String>,
}

impl Reloaded {
    pub fn is_ok(&self) -> bool {
        self.certificates.is_ok() && self.authorizer.is_ok()
    }
}

/// The served identity's leaf subject (empty without a certificate) and notAfter.
#[derive(Debug, Clone, Default)]
pub struct ServedIdentity {
    pub subject: String,
    pub not_after: Option<SystemTime>,
}

/// The reloadable state of the process: TLS contexts, the identity source behind them and the
/// authorizer. Shared by the signal thread, the status server and identity sources' background
/// threads; every method may be called from any thread, and reloads are serialized.
pub struct Reloader {
    contexts: Contexts,
    identity: Arc<dyn IdentitySource>,
    authz: Arc<dyn Authorizer>,
    metrics: Option<Arc<Metrics>>,
    serial: Mutex<()>,
}

impl Reloader {
    pub fn new(
        contexts: Contexts,
        identity: Arc<dyn IdentitySource>,
        authz: Arc<dyn Authorizer>,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Reloader> {
        if let Some(m) = &metrics {
            m.count_for(authz.clone());
        }
        let reloader = Arc::new(Reloader {
            contexts,
            identity,
            authz,
            metrics,
            serial: Mutex::new(()),
        });
        reloader.publish_expiry();
        reloader
    }

    /// Starts the identity source's own updates (after the sandbox, before serving).
    pub fn start(self: &Arc<Self>) -> io::Result<()> {
        self.identity.start(Rebuild(Arc::downgrade(self)))
    }

    /// Re-reads identity, trust and the authorizer's state and swaps in new TLS contexts for
    /// new handshakes; established connections keep theirs. What fails keeps its previous
    /// state.
    pub fn reload(&self) -> Reloaded {
        let _serial = lock(&self.serial);
        let certificates = self.contexts.reload().map(|()| {
            self.publish_expiry();
            self.contexts.served().subject.clone()
        });
        Reloaded {
            certificates,
            authorizer: self.authz.reload(),
        }
    }

    /// The identity being served now.
    pub fn identity(&self) -> ServedIdentity {
        let served = self.contexts.served();
        ServedIdentity {
            subject: served.subject.clone(),
            not_after: served.not_after,
        }
    }

    /// The status port's TLS configuration for the current identity; `None` without one.
    pub fn status_tls(&self) -> Option<Arc<ServerConfig>> {
        self.contexts.served().status.clone()
    }

    /// The identity source's and the authorizer's extra `/_status` fields.
    pub fn status_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = self.identity.status_fields();
        fields.extend(self.authz.status_fields());
        fields
    }

    fn publish_expiry(&self) {
        if let Some(m) = &self.metrics {
            m.set_cert_not_after(self.contexts.served().not_after);
        }
    }

    /// Rebuilds only the TLS contexts, for an identity source that changed by itself.
    fn rebuild(&self) -> Result<String, CertError> {
        let _serial = lock(&self.serial);
        self.contexts.reload()?;
        self.publish_expiry();
        Ok(self.contexts.served().subject.clone())
    }
}

/// Given to [`IdentitySource::start`]: how a source that rotates on its own (Workload API push,
/// ACME renewal) gets its new identity into new handshakes. Holds no strong reference, so a
/// source's thread never keeps the process state alive.
#[derive(Clone)]
pub struct Rebuild(Weak<Reloader>);

impl Rebuild {
    /// Rebuilds the TLS contexts now, calling the source's `load` again, and logs the outcome
    /// like a reload (`loaded certificate: …` or `error reloading TLS configuration: …`, the
    /// old contexts staying). Returns whether it worked. Any thread; blocks while a reload
    /// runs.
    pub fn now(&self) -> bool {
        let Some(reloader) = self.0.upgrade() else {
            return false;
        };
        let result = reloader.rebuild();
        if let Some(m) = &reloader.metrics {
            m.reloaded(result.is_ok());
        }
        match result {
            Ok(subject) => {
                log::info!("loaded certificate: {subject}");
                true
            }
            Err(e) => {
                log::error!("error reloading TLS configuration: {e}");
                false
            }
        }
    }
}
