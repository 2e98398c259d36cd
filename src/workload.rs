//! The SPIFFE Workload API as a source of identity and trust: this proxy's X.509-SVID (chain
//! and key) and the trust bundles of its own and federated trust domains, pushed by the agent
//! and replaced as it rotates them.
//!
//! Owns one background thread ("workload-api") that runs a small single-threaded tokio runtime
//! for the gRPC stream, and nothing else; the data path only ever reads the latest decoded
//! update through [`Source::current`], a lock held for a pointer copy. The first update can be
//! awaited on the caller's thread ([`Source::fetch_first`]) before any thread exists, so that
//! the background thread starts only once the sandbox is in place. The thread keeps one
//! `FetchX509SVID` stream open; every message is a complete new state, decoded and checked as
//! a whole before it replaces the previous one. A failed stream is logged and re-opened after a
//! linear backoff (1 s, 2 s, … 30 s, reset by any received message) while the last good
//! identity keeps serving. Reads no flags and binds no listening socket.

mod grpc;
mod identity;
pub mod proto;
pub mod svid;
pub mod verify;

use std::ops::ControlFlow;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;

pub use grpc::{Code, Endpoint, WatchError};
pub use identity::WorkloadApi;
pub use svid::{BundleSet, SpiffeId, X509Context};

/// Parses `--use-workload-api-addr` / `SPIFFE_ENDPOINT_SOCKET`: `unix:///abs/path`,
/// `unix:/abs/path` or `tcp://IP:PORT`. Errors are the texts SPIFFE libraries give, e.g.
/// `workload endpoint unix socket URI must not be opaque`.
pub fn parse_endpoint(addr: &str) -> Result<Endpoint, String> {
    let url = GoUrl::parse(addr).map_err(|e| {
        format!("workload endpoint socket is not a valid URI: parse \"{addr}\": {e}")
    })?;
    match url.scheme.as_str() {
        "tcp" => {
            let err = |what: &str| Err(format!("workload endpoint tcp socket URI {what}"));
            if !url.opaque.is_empty() {
                return err("must not be opaque");
            }
            if url.user {
                return err("must not include user info");
            }
            if url.host.is_empty() {
                return err("must include a host");
            }
            if !url.path.is_empty() {
                return err("must not include a path");
            }
            if !url.query.is_empty() {
                return err("must not include query values");
            }
            if !url.fragment.is_empty() {
                return err("must not include a fragment");
            }
            let (host, port) = split_host_port(&url.host);
            let Ok(ip) = host.parse::<std::net::IpAddr>() else {
                return err("host component must be an IP:port");
            };
            let Ok(port) = port.parse::<u16>() else {
                return err("host component must include a port");
            };
            Ok(Endpoint::Tcp(std::net::SocketAddr::new(ip, port)))
        }
        "unix" => {
            let err = |what: &str| Err(format!("workload endpoint unix socket URI {what}"));
            if !url.opaque.is_empty() {
                return err("must not be opaque");
            }
            if url.user {
                return err("must not include user info");
            }
            if url.host.is_empty() && url.path.is_empty() {
                return err("must include a path");
            }
            if !url.query.is_empty() {
                return err("must not include query values");
            }
            if !url.fragment.is_empty() {
                return err("must not include a fragment");
            }
            if !url.host.is_empty() {
                // `unix://name/path`: gRPC refuses an authority in a UNIX target at dial time;
                // say so now instead.
                return err("must not include a host (use unix:///path)");
            }
            Ok(Endpoint::Unix(url.path.into()))
        }
        _ => Err("workload endpoint socket URI must have a \"tcp\" or \"unix\" scheme".into()),
    }
}

/// `host:port`, `[v6]:port`, `host` → host (brackets removed) and port (may be empty).
fn split_host_port(hostport: &str) -> (&str, &str) {
    if let Some(rest) = hostport.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':').unwrap_or(""));
        }
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => (host, port),
        None => (hostport, ""),
    }
}

/// The parts of a URL as Go's `net/url` splits them, which is what decides the error texts.
#[derive(Default)]
struct GoUrl {
    scheme: String,
    opaque: String,
    user: bool,
    host: String,
    path: String,
    query: String,
    fragment: String,
}

impl GoUrl {
    fn parse(raw: &str) -> Result<GoUrl, String> {
        if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err("net/url: invalid control character in URL".into());
        }
        let mut url = GoUrl::default();
        let (rest, fragment) = raw.split_once('#').unwrap_or((raw, ""));
        url.fragment = fragment.to_string();
        // The scheme: a letter, then letters, digits, `+-.`, up to the first `:`.
        let mut rest = rest;
        for (i, c) in rest.char_indices() {
            if c.is_ascii_alphabetic() {
                continue;
            }
            if i > 0 && (c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
                continue;
            }
            if c == ':' {
                if i == 0 {
                    return Err("missing protocol scheme".into());
                }
                url.scheme = rest[..i].to_ascii_lowercase();
                rest = &rest[i + 1..];
            }
            break;
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        url.query = query.to_string();
        if !url.scheme.is_empty() && !rest.starts_with('/') {
            url.opaque = rest.to_string();
            return Ok(url);
        }
        let rest = match rest.strip_prefix("//") {
            Some(after) if !url.scheme.is_empty() || !after.starts_with('/') => {
                let end = after.find('/').unwrap_or(after.len());
                let authority = &after[..end];
                let host = match authority.rsplit_once('@') {
                    Some((_, host)) => {
                        url.user = true;
                        host
                    }
                    None => authority,
                };
                if let Some(i) = host.rfind(':') {
                    let port = &host[i + 1..];
                    if !host[i..].contains(']') && !port.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(format!("invalid port \":{port}\" after host"));
                    }
                }
                url.host = host.to_string();
                &after[end..]
            }
            _ => rest,
        };
        url.path = rest.to_string();
        Ok(url)
    }
}

/// How long a failed stream waits before the next attempt: 1 s more per consecutive failure,
/// at most 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(u64::from(failures.clamp(1, 30)))
}

/// What `/_status` and `--check` show of the Workload API connection.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// A stream is open and has delivered at least one message.
    pub connected: bool,
    /// Updates installed since start.
    pub updates: u64,
    /// Messages refused (unparsable or failing the SVID checks) since start.
    pub rejected: u64,
    pub last_update: Option<SystemTime>,
    /// The last stream failure or refused update, and when it happened.
    pub last_error: Option<(String, SystemTime)>,
    /// While reconnecting: when the next attempt is due.
    pub retry_at: Option<SystemTime>,
    /// The agent refused the call for good (`InvalidArgument`); no more updates will arrive.
    pub stopped: bool,
}

struct Inner {
    endpoint: Endpoint,
    provider: Arc<CryptoProvider>,
    current: RwLock<Option<Arc<X509Context>>>,
    health: Mutex<Health>,
    /// Signalled on every change of `health` (a new update, or watching stopped).
    changed: Condvar,
    on_update: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    /// The client's runtime until [`Source::start`] hands it to the background thread.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    /// The bytes of the message behind `current`: a new stream starts by repeating the state,
    /// which is then not installed again.
    last_message: Mutex<Vec<u8>>,
}

/// A handle on the Workload API client. Cheap to clone; every clone sees the same state. The
/// background thread ends at its next attempt after the last handle is dropped.
#[derive(Clone)]
pub struct Source {
    inner: Arc<Inner>,
}

/// How a watch loop ended.
enum LoopEnd {
    /// The first good update was installed (only when asked to stop there).
    First,
    /// The agent refused the call for good; the text is the gRPC error.
    Refused(String),
    /// Every handle on the source is gone.
    Dropped,
}

impl Source {
    /// Prepares the client: no thread is started and no I/O is done.
    pub fn new(endpoint: Endpoint, provider: Arc<CryptoProvider>) -> Result<Source, String> {
        // A current-thread runtime starts no thread of its own (no DNS is ever resolved and
        // no blocking task is spawned), so it can run on the caller's thread before the
        // sandbox and move to the background thread after.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("unable to start the workload API client: {e}"))?;
        Ok(Source {
            inner: Arc::new(Inner {
                endpoint,
                provider,
                current: RwLock::new(None),
                health: Mutex::new(Health::default()),
                changed: Condvar::new(),
                on_update: Mutex::new(Vec::new()),
                runtime: Mutex::new(Some(runtime)),
                last_message: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Waits on the calling thread, which runs the stream itself (retrying like the background
    /// thread does), for the first good update, at most `timeout` (`None`: for ever). Starts no
    /// thread. Returns at once if an update is already there; once [`start`](Self::start)ed,
    /// waits for the background thread instead. The error is the line operators know:
    /// `timed out or failed waiting for initial SPIFFE Workload API update (…): <cause>`.
    pub fn fetch_first(&self, timeout: Option<Duration>) -> Result<Arc<X509Context>, String> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let runtime = lock(&self.inner.runtime);
        let Some(rt) = runtime.as_ref() else {
            drop(runtime);
            return self.wait_first(timeout);
        };
        let watch = watch_loop(Arc::downgrade(&self.inner), true);
        let end = rt.block_on(async {
            match timeout {
                Some(t) => tokio::time::timeout(t, watch).await.ok(),
                None => Some(watch.await),
            }
        });
        match (end, self.current()) {
            (_, Some(current)) => Ok(current),
            (Some(LoopEnd::Refused(cause)), None) => Err(first_fetch_failed(&cause)),
            _ => Err(first_fetch_failed("context deadline exceeded")),
        }
    }

    /// Starts the background thread that keeps the stream open and installs every update.
    /// Call it after the sandbox is applied, like every thread we start. A second call does
    /// nothing.
    pub fn start(&self) -> Result<(), String> {
        let Some(runtime) = lock(&self.inner.runtime).take() else {
            return Ok(());
        };
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("workload-api".into())
            .spawn(move || {
                runtime.block_on(watch_loop(weak, false));
            })
            .map(drop)
            .map_err(|e| format!("unable to start the workload API client: {e}"))
    }

    /// The latest good update, `None` before the first one. Any thread, any time; never blocks
    /// on the network.
    pub fn current(&self) -> Option<Arc<X509Context>> {
        match self.inner.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Once [`start`](Self::start)ed: waits for the first good update from the background
    /// thread, at most `timeout` (`None` waits for ever), with the errors of
    /// [`fetch_first`](Self::fetch_first).
    pub fn wait_first(&self, timeout: Option<Duration>) -> Result<Arc<X509Context>, String> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut health = lock(&self.inner.health);
        loop {
            if let Some(current) = self.current() {
                return Ok(current);
            }
            if health.stopped {
                let cause = health.last_error.as_ref().map(|e| e.0.clone());
                return Err(first_fetch_failed(&cause.unwrap_or_default()));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(first_fetch_failed("context deadline exceeded"));
            }
            health = match deadline {
                None => self
                    .inner
                    .changed
                    .wait(health)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    self.inner
                        .changed
                        .wait_timeout(health, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Registers a function run (on the client thread) after every installed update, e.g. to
    /// rebuild what is derived from the identity. It must not block for long.
    pub fn on_update(&self, f: Box<dyn Fn() + Send + Sync>) {
        lock(&self.inner.on_update).push(f);
    }

    pub fn health(&self) -> Health {
        lock(&self.inner.health).clone()
    }
}

fn first_fetch_failed(cause: &str) -> String {
    format!(
        "timed out or failed waiting for initial SPIFFE Workload API update (is the agent reachable and is there a registration entry?): {cause}"
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One stream at a time, re-opened after failures until the source is dropped or the agent
/// refuses the call for good; with `until_first`, also ends after the first good update.
async fn watch_loop(weak: Weak<Inner>, until_first: bool) -> LoopEnd {
    let mut failures = 0u32;
    loop {
        let Some(inner) = weak.upgrade() else {
            return LoopEnd::Dropped;
        };
        let endpoint = inner.endpoint.clone();
        drop(inner);
        log::info!("spiffe/debug: Watching X.509 contexts");
        let mut received = false;
        let end = grpc::watch(&endpoint, |bytes| {
            received = true;
            let installed = weak.upgrade().is_some_and(|inner| install(&inner, bytes));
            if until_first && installed {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await;
        if end == WatchError::Stopped {
            return LoopEnd::First;
        }
        if received {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let wait = backoff(failures);
        let Some(inner) = weak.upgrade() else {
            return LoopEnd::Dropped;
        };
        if let Err(refused) = record_failure(&inner, &end, wait) {
            return refused;
        }
        drop(inner);
        tokio::time::sleep(wait).await;
    }
}

/// Logs and records a failed stream. `Err` when the agent refused the call for good.
fn record_failure(inner: &Inner, end: &WatchError, wait: Duration) -> Result<(), LoopEnd> {
    let mut health = lock(&inner.health);
    health.connected = false;
    health.last_error = Some((end.to_string(), SystemTime::now()));
    match end.code() {
        Some(code @ (Code::InvalidArgument | Code::Canceled)) => {
            if code == Code::InvalidArgument {
                log::error!("spiffe/error: Canceling watch: {end}");
            }
            health.stopped = true;
            inner.changed.notify_all();
            return Err(LoopEnd::Refused(end.to_string()));
        }
        _ => log::error!("spiffe/error: Failed to watch the Workload API: {end}"),
    }
    log::info!("spiffe/debug: Retrying watch in {}s", wait.as_secs());
    health.retry_at = Some(SystemTime::now() + wait);
    Ok(())
}

/// Decodes and checks one message; a good one replaces the current state (and `true` is
/// returned), a bad one is logged and leaves it alone. A repeat of the current state (as a
/// new stream starts) changes nothing.
fn install(inner: &Inner, bytes: &[u8]) -> bool {
    let mut last = lock(&inner.last_message);
    if !last.is_empty() && *last == bytes {
        let mut health = lock(&inner.health);
        health.connected = true;
        health.retry_at = None;
        return true;
    }
    let parsed = proto::X509SvidResponse::decode(bytes)
        .map_err(|e| format!("cannot decode message: {e}"))
        .and_then(|msg| svid::parse_response(&msg, &inner.provider));
    let mut health = lock(&inner.health);
    health.connected = true;
    health.retry_at = None;
    match parsed {
        Ok(context) => {
            *inner.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(context));
            *last = bytes.to_vec();
            drop(last);
            health.updates += 1;
            health.last_update = Some(SystemTime::now());
            inner.changed.notify_all();
            drop(health);
            for hook in lock(&inner.on_update).iter() {
                hook();
            }
            true
        }
        Err(e) => {
            log::error!("spiffe/error: Failed to parse X509-SVID response: {e}");
            health.rejected += 1;
            health.last_error = Some((format!("update refused: {e}"), SystemTime::now()));
            false
        }
    }
}

#[cfg(test)]
mod tests;
