//! The Workload API as an [`IdentitySource`]: the first SVID of each update is served, the
//! bundles replace `--cacert` for peers, which are verified as X.509-SVIDs; every update
//! rebuilds the TLS contexts for new handshakes; the sandbox grant, `/_status` fields and
//! `--check` lines.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use super::verify::{SvidClientVerifier, SvidServerVerifier};
use super::{Endpoint, Source, parse_endpoint};
use crate::certs::CertError;
use crate::config::{Config, Mode};
use crate::identity::{IdentitySource, PeerVerifiers};
use crate::reload::Rebuild;
use crate::sandbox::Plan;

/// The SPIFFE Workload API source.
pub struct WorkloadApi {
    /// The address as given, for `--check` and `/_status`.
    addr: String,
    source: Source,
    provider: Arc<CryptoProvider>,
    /// The wait for the first update; `None` waits for ever.
    timeout: Option<Duration>,
    /// Client mode words a failed first update as the reference's dialer does.
    client: bool,
    /// Client `--disable-authentication`: the SVID is awaited but not presented.
    present_no_certificate: bool,
}

impl WorkloadApi {
    /// Parses the address (its errors are the startup error texts, e.g. `workload endpoint
    /// socket address is not configured`) and prepares the client; no I/O, no thread.
    pub fn new(
        config: &Config,
        addr: &str,
        timeout: Option<Duration>,
        present_no_certificate: bool,
    ) -> Result<Self, String> {
        if addr.is_empty() {
            return Err("workload endpoint socket address is not configured".into());
        }
        let endpoint = parse_endpoint(addr)?;
        let provider = Arc::new(crate::tls::provider(&config.tls));
        Ok(WorkloadApi {
            addr: addr.to_string(),
            source: Source::new(endpoint, provider.clone())?,
            provider,
            timeout,
            client: matches!(config.mode, Mode::Client(_)),
            present_no_certificate,
        })
    }

    /// `connected`, `reconnecting`, `waiting` (no update yet) or `stopped` (the agent refused
    /// the call for good).
    fn state(&self) -> &'static str {
        let health = self.source.health();
        if health.stopped {
            "stopped"
        } else if health.connected {
            "connected"
        } else if health.updates == 0 {
            "waiting"
        } else {
            "reconnecting"
        }
    }
}

impl IdentitySource for WorkloadApi {
    fn describe(&self) -> String {
        "using SPIFFE Workload API as certificate source".to_string()
    }

    fn location(&self) -> String {
        format!("{} (SPIFFE Workload API)", self.addr)
    }

    /// The first call (at startup, on the main thread, before the sandbox) waits for the
    /// first update for at most `--use-workload-api-timeout`, running the stream on this
    /// thread; later calls return the latest update at once. A client with
    /// `--disable-authentication` waits the same (the bundles verify the server) and presents
    /// nothing.
    fn load(&self, _provider: &CryptoProvider) -> Result<Option<Arc<CertifiedKey>>, CertError> {
        let context = self.source.fetch_first(self.timeout).map_err(|e| {
            CertError::Identity(if self.client {
                format!("unable to get client TLS config: {e}")
            } else {
                e
            })
        })?;
        if self.present_no_certificate {
            return Ok(None);
        }
        Ok(Some(context.identity.clone()))
    }

    /// Every bundle's CAs. Peers are verified by [`peer_verifiers`](Self::peer_verifiers) per
    /// trust domain; this only keeps `--cacert` and the system store out of it.
    fn trust_anchors(&self) -> Option<Vec<CertificateDer<'static>>> {
        let current = self.source.current();
        Some(current.map_or_else(Vec::new, |c| c.bundles.all_certs().cloned().collect()))
    }

    fn peer_verifiers(&self) -> Option<PeerVerifiers> {
        Some(PeerVerifiers {
            clients: Arc::new(SvidClientVerifier::new(
                self.source.clone(),
                self.provider.clone(),
                true,
                None,
            )),
            servers: Arc::new(SvidServerVerifier::new(
                self.source.clone(),
                self.provider.clone(),
                None,
            )),
        })
    }

    /// Each installed update rebuilds the TLS contexts (new handshakes get the new SVID;
    /// the verifiers already read the new bundles); the stream moves to its own thread.
    fn start(&self, rebuild: Rebuild) -> io::Result<()> {
        self.source.on_update(Box::new(move || {
            rebuild.now();
        }));
        self.source.start().map_err(io::Error::other)
    }

    /// A TCP agent: its port. A UNIX agent: read access to the socket's directory (connecting
    /// to a socket file needs no more). When that directory does not exist at startup there
    /// is nothing to grant; the rest of the sandbox stays, and the agent must then create its
    /// socket where a restricted process can still reach it (any path works on kernels where
    /// Landlock does not restrict UNIX connects).
    fn sandbox(&self, plan: &mut Plan) {
        if plan.disabled.is_some() {
            return;
        }
        match self.source.endpoint() {
            Endpoint::Tcp(addr) => {
                plan.connect.insert(addr.port());
            }
            Endpoint::Unix(path) => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                if dir.is_dir() {
                    plan.read_only.insert(dir.to_path_buf());
                } else {
                    log::warn!(
                        "warning: workload API socket directory {} does not exist; landlock grants no access to it (the rest of the sandbox stays)",
                        dir.display()
                    );
                }
            }
        }
    }

    fn status_fields(&self) -> Vec<(&'static str, String)> {
        let health = self.source.health();
        let mut fields = vec![("workload_api", self.state().to_string())];
        if let Some(current) = self.source.current() {
            fields.push(("spiffe_id", current.spiffe_id.to_string()));
            fields.push((
                "trust_domains",
                current.bundles.domains().collect::<Vec<_>>().join(","),
            ));
        }
        if let Some(at) = health.last_update {
            fields.push(("workload_api_last_update", crate::status::rfc3339(at)));
        }
        if let Some((error, at)) = health.last_error {
            fields.push(("workload_api_last_error", error));
            fields.push(("workload_api_last_error_at", crate::status::rfc3339(at)));
        }
        fields
    }

    fn check_lines(&self) -> Vec<String> {
        let Some(current) = self.source.current() else {
            return Vec::new();
        };
        vec![
            format!("SPIFFE ID: {}", current.spiffe_id),
            format!(
                "trust domains: {}",
                current.bundles.domains().collect::<Vec<_>>().join(", ")
            ),
        ]
    }
}
