//! OPA policies (`--allow-policy`/`--allow-query`, `--verify-policy`/`--verify-query`): a
//! Rego bundle and a query, evaluated by an embedded interpreter (no OPA server, no network)
//! against the peer's leaf certificate.
//!
//! * Loading: a path ending in `.rego` is one Rego v0 module (or a directory of them) and the
//!   query is v0 too; anything else is a bundle, either a directory or a gzip-compressed tar
//!   archive (`opa build` output), with Rego v1 modules by default (`.manifest`
//!   `rego_version`/`file_rego_versions` override), `data.json`/`data.yaml` files placed at
//!   their directory's path, `roots` enforced, and a v1 query. Everything is parsed, checked
//!   and the query dry-run at load time, so a broken bundle or query fails the start (or the
//!   reload, which keeps the previous policy).
//! * Decision: allowed only if the query yields exactly one result with one expression whose
//!   value is `true` and no variable bindings; an engine error is an evaluation error.
//! * Bounded: evaluation runs on its own thread under the engine's execution timer; the
//!   caller waits at most the deadline and then reports `context deadline exceeded`, so a
//!   slow policy never holds a handshake (or anything else) past it.

mod bundle;
pub mod der;
pub mod input;
mod url;

#[cfg(test)]
mod tests;

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use regorus::utils::limits::ExecutionTimerConfig;
use rustls::pki_types::CertificateDer;

use crate::auth;
use crate::authz::{Authorizer, Denied};
use crate::config::{Acl, PolicySpec};
use crate::metrics::Timer;
use crate::sandbox::Plan;

pub use bundle::{LoadError, load_archive_bytes};

/// The denial text shared with the ACL (a policy that does not allow).
pub const NOT_ALLOWED: &str = "unauthorized: invalid principal, or principal not allowed";
/// Logged prefix of a startup failure to load the bundle or query.
pub const STARTUP_PREFIX: &str = "Invalid rego policy or query: ";
/// Logged prefix of a failed reload (the previous policy stays).
pub const RELOAD_PREFIX: &str = "error reloading OPA policy: ";

/// Why a policy refused a peer; `Display` is the handshake's log text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The query's result was not a single, binding-free `true`.
    NotAllowed,
    /// The engine failed while evaluating.
    Error(String),
    /// The evaluation did not finish within the deadline.
    Timeout,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::NotAllowed => f.write_str(NOT_ALLOWED),
            Denial::Error(e) => write!(f, "unauthorized: policy returned error: {e}"),
            Denial::Timeout => f.write_str("context deadline exceeded"),
        }
    }
}

impl std::error::Error for Denial {}

/// For the metrics registry: evaluations started, denials (not allowed), errors (engine
/// errors and timeouts, timeouts also on their own) and the time of every evaluation.
#[derive(Default)]
pub struct Stats {
    pub evaluations: AtomicU64,
    pub denials: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub eval_time: Timer,
}

/// A compiled policy: the engine with modules and data loaded, and the query to run.
struct Prepared {
    engine: regorus::Engine,
    query: String,
}

/// A loaded policy that can be evaluated from any thread and reloaded in place.
pub struct Policy {
    bundle: String,
    query: String,
    current: RwLock<Arc<Prepared>>,
    pub stats: Stats,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("bundle", &self.bundle)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

/// The time a load-time dry run of the query may take before the load gives up on it (it
/// then loads anyway: only parse, compile and unknown-function errors fail a load).
const DRY_RUN_LIMIT: Duration = Duration::from_secs(2);

fn timer(limit: Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    }
}

/// Reads the bundle and prepares the query; the error is the `<e>` of the log lines.
fn prepare(bundle: &str, query: &str) -> Result<Prepared, LoadError> {
    let (mut engine, v0_query) = bundle::load(bundle)?;
    engine.set_rego_v0(v0_query);
    engine.set_strict_builtin_errors(false);
    // `print` output is collected per evaluation and dropped with the evaluation's copy.
    engine.set_gather_prints(true);
    // The reference's engine reports no runtime information to policies.
    engine
        .add_extension(
            "opa.runtime".into(),
            0,
            Box::new(|_| Ok(regorus::Value::new_object())),
        )
        .map_err(|e| LoadError(e.to_string()))?;
    // Dry run without input: parses and checks the query against the modules, resolves
    // every function the modules call, and evaluates the data-only parts once.
    // It also leaves the engine prepared (modules analysed once), so the per-evaluation
    // copies start from that.
    engine.set_execution_timer_config(timer(DRY_RUN_LIMIT));
    if let Err(e) = engine.eval_query(query.to_string(), false) {
        let text = e.to_string();
        if !is_runtime_only(&text) {
            return Err(LoadError::query(&text));
        }
    }
    Ok(Prepared {
        engine,
        query: query.to_string(),
    })
}

/// Errors a dry run without input may hit that a real evaluation would not (or that belong
/// to evaluation time): they do not fail the load.
fn is_runtime_only(text: &str) -> bool {
    text.contains("execution exceeded")
        || text.contains("time limit")
        || text.contains("eval_conflict")
}

impl Policy {
    /// Loads `bundle` and prepares `query`.
    pub fn load(bundle: &str, query: &str) -> Result<Policy, LoadError> {
        let prepared = prepare(bundle, query)?;
        Ok(Policy {
            bundle: bundle.to_string(),
            query: query.to_string(),
            current: RwLock::new(Arc::new(prepared)),
            stats: Stats::default(),
        })
    }

    pub fn bundle(&self) -> &str {
        &self.bundle
    }

    pub fn query(&self) -> &str {
        &self.query
    }

    /// Re-reads the bundle from disk and re-prepares the query; on failure the previous
    /// policy stays in force. Evaluations already running finish with the policy they began.
    pub fn reload(&self) -> Result<(), LoadError> {
        let prepared = prepare(&self.bundle, &self.query)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(prepared);
        Ok(())
    }

    /// Evaluates the policy for the peer's leaf certificate, waiting at most `deadline`.
    pub fn evaluate(&self, leaf_der: &[u8], deadline: Duration) -> Result<(), Denial> {
        self.stats.evaluations.fetch_add(1, Ordering::Relaxed);
        let prepared = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let input = input::input_document(leaf_der).to_value();
        let start = Instant::now();
        let (tx, rx) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("policy".into())
            .stack_size(4 << 20)
            .spawn(move || {
                let _ = tx.send(run(&prepared, input, deadline));
            });
        let outcome = match spawned {
            Ok(_) => match rx.recv_timeout(deadline) {
                Ok(outcome) => outcome,
                Err(mpsc::RecvTimeoutError::Timeout) => Err(Denial::Timeout),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Err(Denial::Error("policy evaluation panicked".into()))
                }
            },
            Err(e) => Err(Denial::Error(format!("cannot start evaluation: {e}"))),
        };
        let elapsed = start.elapsed();
        self.stats.eval_time.record(elapsed);
        match &outcome {
            Ok(()) => {}
            Err(Denial::NotAllowed) => {
                self.stats.denials.fetch_add(1, Ordering::Relaxed);
            }
            Err(Denial::Timeout) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Err(Denial::Error(_)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        outcome
    }
}

/// One evaluation on a private copy of the engine (prints and state die with it).
fn run(prepared: &Prepared, input: regorus::Value, deadline: Duration) -> Result<(), Denial> {
    let mut engine = prepared.engine.clone();
    engine.set_execution_timer_config(timer(deadline));
    engine.set_input(input);
    let results = engine
        .eval_query(prepared.query.clone(), false)
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("execution exceeded") || text.contains("time limit") {
                Denial::Timeout
            } else {
                Denial::Error(bundle::engine_error(&text))
            }
        })?;
    let allowed = match results.result.as_slice() {
        [only] => {
            let no_bindings = match &only.bindings {
                regorus::Value::Object(map) => map.is_empty(),
                regorus::Value::Undefined | regorus::Value::Null => true,
                _ => false,
            };
            no_bindings
                && matches!(only.expressions.as_slice(), [e] if e.value == regorus::Value::Bool(true))
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Denial::NotAllowed)
    }
}

/// Decodes standard base64 (tests and tools hand certificates around as PEM bodies).
pub fn der_from_base64(b64: &str) -> Vec<u8> {
    use base64ct::{Base64, Encoding};
    Base64::decode_vec(b64).unwrap_or_default()
}

/// What the sandbox must let the process read for a bundle: its parent directory, and the
/// parent directory of the resolved target when the path is a symlink (both resolved now,
/// missing ones left out).
pub fn sandbox_paths(bundle: &str) -> Vec<PathBuf> {
    let path = Path::new(bundle.trim_end_matches('/'));
    let parent = |p: &Path| -> PathBuf {
        match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    let mut out = Vec::new();
    let first = parent(path);
    if first.exists() {
        out.push(first);
    }
    if path.is_symlink() {
        if let Ok(target) = std::fs::canonicalize(path) {
            let dir = parent(&target);
            if dir.exists() && !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out
}

/// The `--allow-*`/`--verify-*` names, then the policy for peers no name admitted (the
/// reference's order: CN, OU, DNS, IP, URI, policy; the first match admits).
pub struct PolicyAuthorizer {
    acl: Acl,
    policy: Policy,
    /// `--connect-timeout`: how long one evaluation may take, counted from its start.
    deadline: Duration,
}

impl fmt::Debug for PolicyAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyAuthorizer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl PolicyAuthorizer {
    /// Loads the policy; the error is the `<e>` of `Invalid rego policy or query: <e>`.
    pub fn new(acl: Acl, spec: &PolicySpec, deadline: Duration) -> Result<Self, LoadError> {
        Ok(PolicyAuthorizer {
            policy: Policy::load(&spec.bundle, &spec.query)?,
            acl,
            deadline,
        })
    }
}

impl Authorizer for PolicyAuthorizer {
    fn authorize(&self, leaf: &CertificateDer<'_>, _: &[CertificateDer<'_>]) -> Result<(), Denied> {
        if !self.acl.names_empty() && auth::check_acl(&self.acl, leaf).is_ok() {
            return Ok(());
        }
        self.policy
            .evaluate(leaf, self.deadline)
            .map_err(|d| Denied(d.to_string()))
    }

    fn reload(&self) -> Result<(), String> {
        self.policy
            .reload()
            .map_err(|e| format!("{RELOAD_PREFIX}{e}"))
    }

    fn sandbox(&self, plan: &mut Plan) {
        plan.add_file_dir(Path::new(self.policy.bundle().trim_end_matches('/')));
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.policy.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("policy.evaluations", n(&s.evaluations)),
            ("policy.denials", n(&s.denials)),
            ("policy.errors", n(&s.errors)),
            ("policy.timeouts", n(&s.timeouts)),
        ]
    }

    fn timers(&self) -> Vec<(&'static str, &Timer)> {
        vec![("policy.eval", &self.policy.stats.eval_time)]
    }

    fn status_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("policy", self.policy.bundle().to_string()),
            ("policy_query", self.policy.query().to_string()),
        ]
    }

    fn check_lines(&self) -> Vec<String> {
        vec![format!(
            "policy: {} (query {})",
            self.policy.bundle(),
            self.policy.query()
        )]
    }
}
