//! The ACME certificate source (server mode, `--auto-acme-cert`): the certificate for one name
//! is obtained from an ACME CA with the TLS-ALPN-01 challenge, cached on disk in the
//! reference's layout, and renewed in the background once a third of its lifetime is left.
//!
//! Owns the cached certificate, the storage under `$XDG_DATA_HOME/certmagic`, the issuance
//! (startup, with 5 attempts) and the maintenance thread. Answering the validator is shared
//! with the server: [`Acme::challenges`] holds the challenge certificates; the proxy's listener
//! serves them through [`challenge::Resolver`] (handed to the TLS contexts by the
//! `IdentitySource` impl in `source.rs`), and while that listener is not open yet a
//! [`challenge::TempListener`] of ours does. Never touches the proxy's connections. All ACME
//! network traffic happens on the thread calling [`Acme::start`] and on the maintenance
//! thread, blocking; there is no async runtime.

pub mod challenge;
pub mod http;
pub mod issue;
mod source;
pub mod storage;
pub mod timing;

pub use source::source;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_cert::der::Decode;

use crate::duration::format_go_duration;
use challenge::{Challenges, TempListener};
use storage::{Storage, StoredCert};

/// The CA used when neither `--auto-acme-ca` nor `--auto-acme-testca` is given.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The startup log line of this source.
pub const DESCRIBE: &str = "using ACME server as certificate source";

/// Port the validator dials when `--auto-acme-alt-tls-alpn-port` is not set.
pub const DEFAULT_CHALLENGE_PORT: u16 = 443;

/// Timeout of every socket operation towards the CA.
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long startup waits for another process's issuance lock.
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// The ACME flags, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `--auto-acme-cert`, lower case.
    pub name: String,
    /// `--auto-acme-email`.
    pub email: String,
    /// The directory URL in effect: `--auto-acme-testca` if set, else `--auto-acme-ca`, else
    /// Let's Encrypt; `https://` added when no scheme is given.
    pub ca: String,
    /// The other URLs the operator gave (for the sandbox's connect rules).
    pub ca_flags: Vec<String>,
    /// Maintenance period (`--auto-acme-renew-check-interval`, default 10 min).
    pub check_interval: Duration,
    /// Where our own challenge listener binds while the proxy's is not open: the listen
    /// address when it is on the challenge port, else all interfaces on that port.
    pub challenge_bind: String,
    /// `$XDG_DATA_HOME/certmagic` or `$HOME/.local/share/certmagic`.
    pub storage_root: PathBuf,
    /// The TCP port of `--listen`, if it is a TCP address.
    pub listen_port: Option<u16>,
}

impl Settings {
    /// Resolves the flags. `listen` is `--listen` as written (`host:port`, or `systemd:`...);
    /// `alt_port` 0 means 443; a `renew_check` of `None` or not positive means 10 minutes.
    pub fn from_flags(
        name: &str,
        email: &str,
        ca: &str,
        testca: &str,
        renew_check: Option<Duration>,
        alt_port: u16,
        listen: &str,
    ) -> Settings {
        let with_scheme = |u: &str| match u.contains("://") {
            true => u.to_string(),
            false => format!("https://{u}"),
        };
        let effective = match (testca.is_empty(), ca.is_empty()) {
            (false, _) => with_scheme(testca),
            (true, false) => with_scheme(ca),
            (true, true) => LETS_ENCRYPT.to_string(),
        };
        let ca_flags = [ca, testca]
            .iter()
            .filter(|u| !u.is_empty())
            .map(|u| with_scheme(u))
            .collect();
        let port = if alt_port == 0 {
            DEFAULT_CHALLENGE_PORT
        } else {
            alt_port
        };
        let challenge_bind = match crate::net::split_host_port(listen) {
            Ok((host, p)) if p == port.to_string() && !host.is_empty() => {
                crate::net::with_default_port(&bracket(&host), port)
            }
            _ => format!("[::]:{port}"),
        };
        Settings {
            name: name.to_lowercase(),
            email: email.to_string(),
            ca: effective,
            ca_flags,
            check_interval: renew_check
                .filter(|d| !d.is_zero())
                .unwrap_or(timing::DEFAULT_CHECK_INTERVAL),
            challenge_bind,
            storage_root: storage::default_root(),
            listen_port: crate::net::split_host_port(listen)
                .ok()
                .and_then(|(_, p)| p.parse().ok()),
        }
    }

    /// Whether the validator reaches the proxy's own listener, so that, once it is open, no
    /// listener of ours is needed (nor a bind grant in the sandbox).
    pub fn challenge_on_listener(&self) -> bool {
        self.listen_port.is_some() && self.listen_port == self.challenge_port()
    }

    /// The TCP ports the process connects to for ACME: each given CA URL's port (443 for
    /// `https` without one), or 443 when no CA flag is given.
    pub fn connect_ports(&self) -> Vec<u16> {
        if self.ca_flags.is_empty() {
            return vec![443];
        }
        let mut ports: Vec<u16> = self
            .ca_flags
            .iter()
            .filter_map(|u| crate::report::HttpUrl::parse(u).ok())
            .filter_map(|u| u.addr.tcp_port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The TCP port our own challenge listener binds.
    pub fn challenge_port(&self) -> Option<u16> {
        crate::net::split_host_port(&self.challenge_bind)
            .ok()
            .and_then(|(_, p)| p.parse().ok())
    }

    /// The directory the sandbox must grant read-write: the parent of the storage root (it
    /// is created at startup if missing).
    pub fn storage_parent(&self) -> PathBuf {
        self.storage_root
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

fn bracket(host: &str) -> String {
    match host.contains(':') {
        true => format!("[{host}]"),
        false => host.to_string(),
    }
}

/// The managed certificate and what `/_status` reports about it.
struct State {
    current: Option<Managed>,
    /// `valid`, `renewing`, `renewal failed`, or `none` before the first certificate.
    phase: &'static str,
    last_error: Option<String>,
    last_renewal: Option<SystemTime>,
}

#[derive(Clone)]
struct Managed {
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// The ACME source. Shared (`Arc`) between startup, the maintenance thread, the TLS contexts
/// (which read [`Acme::current`] on every rebuild) and the challenge listeners.
pub struct Acme {
    settings: Settings,
    storage: Storage,
    http: http::Client,
    challenges: Arc<Challenges>,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
    stop: Mutex<bool>,
    wake: Condvar,
    maintaining: AtomicBool,
}

impl Acme {
    /// Sets the source up without touching the network or the disk; `http` reaches the CA.
    pub fn with_http(settings: Settings, http: http::Client) -> Arc<Acme> {
        let storage = Storage::new(
            settings.storage_root.clone(),
            &settings.ca,
            &settings.name,
            &settings.email,
        );
        Arc::new(Acme {
            storage,
            http,
            challenges: Challenges::new(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            state: Mutex::new(State {
                current: None,
                phase: "none",
                last_error: None,
                last_renewal: None,
            }),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            maintaining: AtomicBool::new(false),
            settings,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The challenges being validated, for the listeners.
    pub fn challenges(&self) -> &Arc<Challenges> {
        &self.challenges
    }

    /// The certificate to serve; `None` before [`Acme::start`] succeeded.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.lock_state().current.as_ref().map(|m| m.key.clone())
    }

    /// The path of the cached chain, for `--check` and logs.
    pub fn cert_path(&self) -> PathBuf {
        self.storage.cert_path()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Startup: the cached certificate (renewed first if due), else a new one; up to 5
    /// attempts, 5 s doubling in between, each failure but the last printed to stderr as
    /// `<date time> ACME initial certificate load failed (attempt n/5): <e>; retrying in 5s`.
    /// The final error is the last attempt's (the caller logs
    /// `error: Unable to load or obtain ACME cert: <e>`).
    pub fn start(&self) -> Result<(), String> {
        let mut attempt = 1;
        loop {
            match self.initial_attempt() {
                Ok(()) => return Ok(()),
                Err(e) if attempt < timing::INITIAL_ATTEMPTS => {
                    let wait = timing::initial_backoff(attempt);
                    eprintln!(
                        "{} ACME initial certificate load failed (attempt {attempt}/{}): {e}; \
                         retrying in {}",
                        go_log_time(),
                        timing::INITIAL_ATTEMPTS,
                        format_go_duration(wait)
                    );
                    self.lock_state().last_error = Some(e);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => {
                    self.lock_state().last_error = Some(e.clone());
                    return Err(e);
                }
            }
        }
    }

    fn initial_attempt(&self) -> Result<(), String> {
        let name = &self.settings.name;
        let stored = self.stored()?;
        match stored {
            Some(m) if !timing::needs_renewal(m.not_before, m.not_after, SystemTime::now()) => {
                self.install(m, "valid");
                Ok(())
            }
            Some(m) => match self.issue(true) {
                Ok(new) => {
                    self.install(new, "valid");
                    self.lock_state().last_renewal = Some(SystemTime::now());
                    Ok(())
                }
                // A still-valid certificate is served while renewal goes on in the background;
                // an expired one is never served.
                Err(e) if m.not_after > SystemTime::now() => {
                    log::warn!(
                        "warning: renewing ACME certificate for {name} failed, serving the stored \
                         one until {}: {e}",
                        storage::rfc3339(m.not_after)
                    );
                    self.install(m, "renewal failed");
                    self.lock_state().last_error = Some(e);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            None => self.issue(false).map(|m| self.install(m, "valid")),
        }
    }

    /// The cached certificate, if there is a usable one.
    fn stored(&self) -> Result<Option<Managed>, String> {
        let Some(cert) = self.storage.load_cert()? else {
            return Ok(None);
        };
        match managed(&cert, &self.provider) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                log::warn!(
                    "warning: ignoring the stored ACME certificate {}: {e}",
                    self.storage.cert_path().display()
                );
                Ok(None)
            }
        }
    }

    fn install(&self, m: Managed, phase: &'static str) {
        let mut state = self.lock_state();
        state.current = Some(m);
        state.phase = phase;
        if phase == "valid" {
            state.last_error = None;
        }
    }

    /// One issuance, with the reference's error framing: `<name>: obtaining certificate: ...`
    /// or `<name>: renewing certificate: ...`.
    fn issue(&self, renewing: bool) -> Result<Managed, String> {
        let name = &self.settings.name;
        let (what, tag) = match renewing {
            true => ("renewing certificate", "Renew"),
            false => ("obtaining certificate", "Obtain"),
        };
        self.issue_inner(renewing)
            .map_err(|(framed, e)| match framed {
                true => format!("{name}: {what}: [{name}] {tag}: {e}"),
                false => format!("{name}: {what}: {e}"),
            })
    }

    /// The error flag says whether the cause belongs inside the `[name] Obtain:` frame.
    fn issue_inner(&self, renewing: bool) -> Result<Managed, (bool, String)> {
        check_ca_url(&self.settings.ca).map_err(|e| (false, e))?;
        check_name(&self.settings.name, &self.settings.ca).map_err(|e| (true, e))?;
        self.storage.check().map_err(|e| (false, e))?;
        let lock = self.storage.lock(LOCK_WAIT).map_err(|e| (false, e))?;
        // Another process sharing the storage may have done the work while we waited.
        if let Ok(Some(m)) = self.stored() {
            let fresh = !timing::needs_renewal(m.not_before, m.not_after, SystemTime::now());
            let newer = self
                .lock_state()
                .current
                .as_ref()
                .is_none_or(|c| m.not_after > c.not_after);
            if fresh && (newer || !renewing) {
                return Ok(m);
            }
        }
        // Once the proxy listens on the challenge port, it answers the validator itself.
        let proxy_answers =
            self.maintaining.load(Ordering::SeqCst) && self.settings.challenge_on_listener();
        let _listener = match proxy_answers {
            true => None,
            false => TempListener::start(&self.settings.challenge_bind, &self.challenges)
                .map_err(|e| (true, e))?,
        };
        let issued = issue::obtain(&issue::Request {
            name: &self.settings.name,
            email: &self.settings.email,
            ca: &self.settings.ca,
            storage: &self.storage,
            http: &self.http,
            challenges: &self.challenges,
            provider: &self.provider,
            lock: &lock,
        })
        .map_err(|e| (true, e))?;
        managed(&issued.cert, &self.provider).map_err(|e| (true, e))
    }

    /// Starts the maintenance thread: every check interval, renew when due; after a failure,
    /// retry on the background schedule (1 min, 2 min, ... then every 6 h). `on_change` runs
    /// after each new certificate is installed, so new handshakes get it. Call it once the
    /// proxy's listener answers challenge handshakes (and after the sandbox is applied, so that
    /// the thread is confined too).
    pub fn spawn_maintenance(
        self: &Arc<Self>,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<()> {
        if self.maintaining.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("acme-maintenance".into())
            .spawn(move || me.maintain(&*on_change))
            .map(|_| ())
    }

    /// Ends the maintenance thread at its next wake-up (used at shutdown and by tests).
    pub fn stop(&self) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Sleeps `d` unless stopped; false when stopped.
    fn pause(&self, d: Duration) -> bool {
        let guard = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        !*guard
    }

    fn maintain(&self, on_change: &(dyn Fn() + Send + Sync)) {
        let mut failures = 0u32;
        let mut first_failure: Option<SystemTime> = None;
        let mut wait = self.settings.check_interval;
        while self.pause(wait) {
            wait = self.settings.check_interval;
            let Some(m) = self.lock_state().current.clone() else {
                continue;
            };
            let now = SystemTime::now();
            if failures == 0 && !timing::needs_renewal(m.not_before, m.not_after, now) {
                continue;
            }
            let name = &self.settings.name;
            log::info!("ACME certificate for {name} is due for renewal; renewing");
            self.lock_state().phase = "renewing";
            match self.issue(true) {
                Ok(new) => {
                    log::info!(
                        "ACME certificate for {name} renewed, valid until {}",
                        storage::rfc3339(new.not_after)
                    );
                    self.install(new, "valid");
                    self.lock_state().last_renewal = Some(SystemTime::now());
                    failures = 0;
                    first_failure = None;
                    on_change();
                }
                Err(e) => {
                    failures += 1;
                    let since = *first_failure.get_or_insert(now);
                    let emergency = timing::is_emergency(
                        m.not_before,
                        m.not_after,
                        now,
                        self.settings.check_interval,
                    );
                    let retry = timing::retry_delay(failures);
                    let given_up =
                        now.duration_since(since).unwrap_or_default() > timing::RETRY_GIVE_UP;
                    log::error!(
                        "error: renewing ACME certificate for {name} failed{}: {e}; retrying in {}",
                        if emergency {
                            " (certificate expires soon)"
                        } else {
                            ""
                        },
                        format_go_duration(retry)
                    );
                    {
                        let mut state = self.lock_state();
                        state.phase = "renewal failed";
                        state.last_error = Some(e);
                    }
                    if given_up {
                        failures = 0;
                        first_failure = None;
                    } else {
                        wait = retry;
                    }
                }
            }
        }
    }

    /// Fields for `/_status`: `acme_name`, `acme_state` (`valid`, `renewing`, `renewal failed`,
    /// `none`), `acme_not_after`, `acme_renewal_due` (RFC 3339), `acme_last_renewal`,
    /// `acme_last_error`, `acme_ca`.
    pub fn status(&self) -> Vec<(&'static str, String)> {
        let state = self.lock_state();
        let mut out = vec![
            ("acme_name", self.settings.name.clone()),
            ("acme_ca", self.settings.ca.clone()),
            ("acme_state", state.phase.to_string()),
        ];
        if let Some(m) = &state.current {
            out.push(("acme_not_after", storage::rfc3339(m.not_after)));
            out.push((
                "acme_renewal_due",
                storage::rfc3339(timing::renewal_due(m.not_before, m.not_after)),
            ));
        }
        if let Some(t) = state.last_renewal {
            out.push(("acme_last_renewal", storage::rfc3339(t)));
        }
        if let Some(e) = &state.last_error {
            out.push(("acme_last_error", e.clone()));
        }
        out
    }

    /// Lines for `--check`: the CA, where the certificate is cached and when it is due.
    pub fn check_lines(&self) -> Vec<String> {
        let mut out = vec![
            format!("acme ca: {}", self.settings.ca),
            format!("acme storage: {}", self.storage.root.display()),
        ];
        match self.stored() {
            Ok(Some(m)) => out.push(format!(
                "acme renewal due: {}",
                storage::rfc3339(timing::renewal_due(m.not_before, m.not_after))
            )),
            Ok(None) => out.push("acme cached certificate: none (obtained at start)".to_string()),
            Err(e) => out.push(format!("acme cached certificate: unreadable: {e}")),
        }
        out
    }
}

/// Parses a stored chain and key into what the TLS contexts serve.
fn managed(cert: &StoredCert, provider: &CryptoProvider) -> Result<Managed, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert.chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading certificate chain: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("no certificate in the stored chain".into());
    };
    let parsed = x509_cert::Certificate::from_der(leaf).map_err(|e| e.to_string())?;
    let validity = &parsed.tbs_certificate.validity;
    let (not_before, not_after) = (
        validity.not_before.to_system_time(),
        validity.not_after.to_system_time(),
    );
    let key = PrivateKeyDer::from_pem_slice(&cert.key_pem)
        .map_err(|e| format!("reading certificate key: {e}"))?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("reading certificate key: {e}"))?;
    let key = CertifiedKey::new(chain, signer);
    key.keys_match()
        .map_err(|_| "tls: private key does not match public key".to_string())?;
    Ok(Managed {
        key: Arc::new(key),
        not_before,
        not_after,
    })
}

/// The reference's CA URL rule: HTTPS unless the host is internal (loopback, private address,
/// `localhost`).
fn check_ca_url(url: &str) -> Result<(), String> {
    let Ok(parsed) = crate::report::HttpUrl::parse(url) else {
        return Err(format!("{url}: invalid CA URL"));
    };
    if parsed.https || is_internal(&parsed.host) {
        return Ok(());
    }
    Err(format!(
        "{url}: insecure CA URL (HTTPS required for non-internal CA)"
    ))
}

fn is_internal(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => false,
    }
}

/// Well-known public CAs, which refuse internal names.
const PUBLIC_CAS: &[&str] = &[
    "api.letsencrypt.org",
    "acme.zerossl.com",
    "api.pki.goog",
    "api.buypass.com",
    "acme.ssl.com",
];

/// The name checks the reference's library makes when it issues.
fn check_name(name: &str, ca: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.ends_with('.')
        || name
            .chars()
            .any(|c| "()[]{}<> \t\n\"\\!@#$%^&|;'+=".contains(c))
        || name
            .split('.')
            .enumerate()
            .any(|(i, label)| label.contains('*') && (i > 0 || label != "*"));
    if bad {
        return Err(format!(
            "subject '{name}' is not a valid name for a certificate"
        ));
    }
    let public = PUBLIC_CAS.iter().any(|p| ca.contains(p));
    let internal = [
        "localhost",
        ".localhost",
        ".local",
        ".internal",
        ".home.arpa",
    ]
    .iter()
    .any(|s| {
        if s.starts_with('.') {
            name.ends_with(s)
        } else {
            name == *s
        }
    }) || is_internal(name);
    if public && internal {
        return Err(format!(
            "subject '{name}' does not qualify for a public certificate"
        ));
    }
    Ok(())
}

/// Local time in Go's standard logger format: `YYYY/MM/DD hh:mm:ss`.
pub fn go_log_time() -> String {
    let t = crate::logging::LocalTime::now();
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.min, t.sec
    )
}

#[cfg(test)]
mod tests;
