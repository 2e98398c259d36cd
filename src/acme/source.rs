//! The ACME source behind the [`IdentitySource`] seam: startup issuance on the first load, the
//! maintenance thread once the proxy serves, the challenge resolver for the listeners, and
//! what the sandbox, `/_status` and `--check` need to know.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;

use super::challenge::Resolver;
use super::http::{self, Proxies};
use super::{Acme, DESCRIBE, HTTP_TIMEOUT, Settings};
use crate::certs::CertError;
use crate::config::{AcmeOpts, Config};
use crate::identity::IdentitySource;
use crate::reload::Rebuild;
use crate::sandbox::Plan;

/// Builds the ACME source from its flags (no network, no disk).
pub fn source(opts: &AcmeOpts, config: &Config) -> Result<Arc<dyn IdentitySource>, CertError> {
    let settings = Settings::from_flags(
        &opts.name,
        &opts.email,
        &opts.ca,
        &opts.testca,
        opts.renew_check,
        opts.alt_port,
        &config.listen.raw,
    );
    // The CA is reached trusting the system store only (`--cacert` is the client-CA pool),
    // as read at startup: `SSL_CERT_FILE` / `SSL_CERT_DIR` point it at a private CA.
    let roots = crate::certs::load_trust(None, &config.system_trust).map_err(CertError::Trust)?;
    let client = http::Client::with_roots(roots, HTTP_TIMEOUT).map_err(CertError::Tls)?;
    Ok(Arc::new(AcmeSource {
        acme: Acme::with_http(settings, client),
        proxies: Proxies::from_env(|k| std::env::var(k).ok()),
    }))
}

struct AcmeSource {
    acme: Arc<Acme>,
    proxies: Proxies,
}

impl IdentitySource for AcmeSource {
    fn describe(&self) -> String {
        DESCRIBE.to_string()
    }

    fn location(&self) -> String {
        format!("{} (ACME)", self.acme.cert_path().display())
    }

    /// The first call obtains the certificate (the stored one, else from the CA, with the
    /// startup retries); later calls (reloads, renewals) return the current one without any
    /// network traffic.
    fn load(&self, _: &CryptoProvider) -> Result<Option<Arc<CertifiedKey>>, CertError> {
        if self.acme.current().is_none() {
            if let Err(e) = self.acme.start() {
                // The reference's own line for this failure, before the generic one.
                log::error!("error: Unable to load or obtain ACME cert: {e}");
                return Err(CertError::Identity(e));
            }
        }
        let Some(key) = self.acme.current() else {
            return Err(CertError::Identity("no ACME certificate".into()));
        };
        // Never serve an expired certificate (a failed renewal keeps a valid one only).
        if crate::certs::not_after(&key.cert[0]).is_some_and(|t| t <= SystemTime::now()) {
            return Err(CertError::Identity(format!(
                "the ACME certificate {} has expired",
                self.acme.cert_path().display()
            )));
        }
        Ok(Some(key))
    }

    fn start(&self, rebuild: Rebuild) -> io::Result<()> {
        self.acme.spawn_maintenance(Box::new(move || {
            rebuild.now();
        }))
    }

    /// The storage directory read-write, the CA's (and any proxy's) port and DNS, and a bind
    /// on the challenge port when renewals cannot use the proxy's own listener.
    fn sandbox(&self, plan: &mut Plan) {
        let settings = self.acme.settings();
        plan.read_write
            .insert(nearest_existing(&settings.storage_root));
        plan.connect.extend(settings.connect_ports());
        plan.connect.insert(53);
        plan.connect.extend(self.proxies.ports());
        if !settings.challenge_on_listener() {
            plan.bind.extend(settings.challenge_port());
        }
    }

    fn status_fields(&self) -> Vec<(&'static str, String)> {
        self.acme.status()
    }

    fn check_lines(&self) -> Vec<String> {
        self.acme.check_lines()
    }

    fn alpn_challenge(&self) -> Option<Arc<dyn ResolvesServerCert>> {
        Some(Arc::new(Resolver(self.acme.challenges().clone())))
    }
}

/// `dir` if it exists, else its closest existing ancestor (the storage is created at the first
/// issuance, which may come after the sandbox).
fn nearest_existing(dir: &Path) -> PathBuf {
    let mut d = dir;
    loop {
        if d.exists() {
            return d.to_path_buf();
        }
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => return PathBuf::from("."),
        }
    }
}
