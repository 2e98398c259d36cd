//! The accept loop, the worker pool, the concurrency limit and the drain (docs/behaviour.md §7.1,
//! §12.2).
//!
//! The main thread blocks in `accept()`; each accepted socket goes to a pooled OS thread (small
//! stack, reused while connections keep coming) that runs the mode's [`Connector`]. Owns no TLS
//! and no policy beyond counting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use std::time::{Duration, Instant};

use crate::config::Timeouts;
use crate::duration::{format_bytes, format_go_duration};
use crate::logging::{CONN_ERRS, CONNS};
use crate::metrics::Metrics;
use crate::net::{Listener, Stream};
use crate::relay::{self, CopyLimits, Endpoint};
use crate::sync::{self, lock};

/// Worker threads need little stack: rustls and the relay keep their buffers on the heap.
const WORKER_STACK: usize = 256 * 1024;

/// An idle worker waits this long for a new connection before it exits.
const WORKER_IDLE: Duration = Duration::from_secs(30);

/// A worker without a connection for this long hands its scratch buffer and stack back (a
/// busy pool keeps them: the next handshake would only touch the pages again).
const WORKER_SETTLE: Duration = Duration::from_secs(1);

/// At most this many workers wait for connections; the rest exit when their connection ends,
/// so a burst of thousands leaves no thousands of parked threads (and stacks) behind.
const MAX_IDLE_WORKERS: usize = 32;

/// When the last connection closes after at least this many were open at once, the allocator
/// gives its free pages back once the pool has settled (a burst is over).
const TRIM_AFTER: usize = 16;

/// Handles one accepted connection from start to close. Runs on a worker thread.
pub trait Connector: Send + Sync + 'static {
    fn handle(&self, inbound: Stream, proxy: &Proxy);
}

/// Shared state of the proxy: shutdown flag, open-connection count, slots, pool.
pub struct Proxy {
    shutting_down: AtomicBool,
    open: Mutex<usize>,
    drained: Condvar,
    /// `--max-concurrent-conns`; 0 means unlimited.
    max_conns: usize,
    slot_freed: Condvar,
    pool: Pool,
    /// Connections in a worker right now (slots also count the one the accept loop holds).
    active: AtomicUsize,
    /// The most connections open at once since the count was last zero.
    peak: AtomicUsize,
    /// `None` when nothing observes metrics: then nothing is recorded (docs/behaviour.md §7.5).
    metrics: Option<Arc<Metrics>>,
}

impl Proxy {
    pub fn new(max_conns: u32, metrics: Option<Arc<Metrics>>) -> Arc<Proxy> {
        Arc::new(Proxy {
            shutting_down: AtomicBool::new(false),
            open: Mutex::new(0),
            drained: Condvar::new(),
            max_conns: max_conns as usize,
            slot_freed: Condvar::new(),
            pool: Pool::default(),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            metrics,
        })
    }

    /// The metrics registry, if anything observes it. Any thread.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }

    /// True once shutdown started; in-progress handshakes and dials give up when they see it.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.shutting_down
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Marks shutdown and wakes the accept loop through `listener`. Safe to call concurrently
    /// and repeatedly, from any thread.
    pub fn begin_shutdown(&self, listener: &Listener) {
        self.shutting_down.store(true, Ordering::SeqCst);
        listener.shutdown();
        // Wake an accept loop that waits for a free slot.
        self.slot_freed.notify_all();
    }

    /// Connections currently in a worker.
    pub fn open_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether the shared accounting that the accept loop and every worker go through can be
    /// taken within `within`: a wedged lock means a wedged proxy, and the watchdog stays silent.
    pub fn responsive(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match self.open.try_lock() {
                Ok(_) => return true,
                Err(std::sync::TryLockError::Poisoned(_)) => return true,
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(std::sync::TryLockError::WouldBlock) => return false,
            }
        }
    }

    /// Runs the accept loop on the calling thread until shutdown. A slot of the concurrency
    /// limit is taken before `accept()`, so excess clients wait in the kernel backlog.
    pub fn serve(self: &Arc<Self>, listener: &Listener, connector: Arc<dyn Connector>) {
        let mut backoff = Duration::ZERO;
        loop {
            if !self.take_slot() {
                return;
            }
            let error = match listener.accept() {
                Ok(stream) => {
                    if let Some(m) = self.metrics() {
                        Metrics::inc(&m.accept_total);
                    }
                    let proxy = self.clone();
                    let connector = connector.clone();
                    let started = self.pool.run(Box::new(move || {
                        proxy.active.fetch_add(1, Ordering::Relaxed);
                        if let Some(m) = proxy.metrics() {
                            m.conn_open.fetch_add(1, Ordering::Relaxed);
                        }
                        let _slot = Slot(proxy.clone(), Instant::now());
                        connector.handle(stream, &proxy);
                    }));
                    match started {
                        Ok(()) => {
                            backoff = Duration::ZERO;
                            continue;
                        }
                        // The connection is closed: no thread, no service. Like an accept
                        // error, it backs off rather than hammering a process at its limit.
                        Err(e) => format!(
                            "cannot start a thread for the connection: {}",
                            crate::net::strip_os_error(&e)
                        ),
                    }
                }
                Err(_) if self.is_shutting_down() => {
                    self.release_slot();
                    return;
                }
                Err(e) => crate::net::strip_os_error(&e),
            };
            self.release_slot();
            if let Some(m) = self.metrics() {
                Metrics::inc(&m.accept_error);
            }
            log::error!(target: CONN_ERRS, "error accepting connection: {error}");
            // 5 ms, doubling per consecutive error, up to 1 s (docs/behaviour.md §7.1).
            backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
            std::thread::sleep(backoff);
        }
    }

    /// Blocks until a slot is free (or shutdown); counts the connection as open.
    fn take_slot(&self) -> bool {
        let mut open = lock(&self.open);
        while self.max_conns != 0 && *open >= self.max_conns && !self.is_shutting_down() {
            open = sync::wait(&self.slot_freed, open);
        }
        if self.is_shutting_down() {
            return false;
        }
        *open += 1;
        self.peak.fetch_max(*open, Ordering::Relaxed);
        true
    }

    fn release_slot(&self) {
        let mut open = lock(&self.open);
        *open -= 1;
        self.slot_freed.notify_one();
        if *open == 0 {
            self.drained.notify_all();
        }
        // At most the accept loop's own slot is left: the connections are all gone.
        if *open <= 1 && self.peak.load(Ordering::Relaxed) >= TRIM_AFTER {
            self.peak.store(0, Ordering::Relaxed);
            drop(open);
            crate::memory::trim_soon();
        }
    }

    /// Waits for every worker to finish. `None` waits forever. Returns false on timeout.
    pub fn wait_drained(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut open = lock(&self.open);
        while *open > 0 {
            open = match deadline {
                None => sync::wait(&self.drained, open),
                Some(d) => {
                    let Some(left) = d.checked_duration_since(Instant::now()) else {
                        return false;
                    };
                    sync::wait_timeout(&self.drained, open, left).0
                }
            };
        }
        true
    }
}

impl crate::systemd::Liveness for Proxy {
    fn alive(&self, within: Duration) -> bool {
        self.responsive(within)
    }
}

/// Releases its concurrency slot when dropped, even if the connection handler panics, and
/// records the worker's lifetime (from when the worker picked the connection up).
struct Slot(Arc<Proxy>, Instant);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(m) = self.0.metrics() {
            m.conn_open.fetch_sub(1, Ordering::Relaxed);
            m.lifetime.record(self.1.elapsed());
        }
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.release_slot();
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A pool of reusable worker threads: a job goes to an idle worker, or a new one is spawned.
/// Idle workers exit after [`WORKER_IDLE`]; no more than [`MAX_IDLE_WORKERS`] wait at once.
#[derive(Default)]
struct Pool {
    state: Arc<(Mutex<PoolState>, Condvar)>,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    idle: usize,
    /// Worker threads alive, busy or idle.
    workers: usize,
}

impl Pool {
    /// Gives `job` to an idle worker, or to a new one. When no thread can be started the job
    /// is dropped unrun and the error returned; running it here instead would hold the accept
    /// loop for the connection's whole life.
    fn run(&self, job: Job) -> std::io::Result<()> {
        let (lock_, cvar) = &*self.state;
        let mut st = lock(lock_);
        st.jobs.push_back(job);
        if st.idle >= st.jobs.len() {
            cvar.notify_one();
            return Ok(());
        }
        st.workers += 1;
        drop(st);
        let state = self.state.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(WORKER_STACK)
            .spawn(move || worker(&state));
        match spawned {
            Ok(_) => Ok(()),
            Err(e) => {
                // Only this thread queues jobs and workers take them from the front, so the
                // back is this job unless a worker freed up meanwhile and took it.
                let job = {
                    let mut st = lock(lock_);
                    st.workers -= 1;
                    st.jobs.pop_back()
                };
                match job {
                    Some(job) => {
                        drop(job);
                        Err(e)
                    }
                    None => Ok(()),
                }
            }
        }
    }
}

fn worker(state: &(Mutex<PoolState>, Condvar)) {
    let (m, cvar) = state;
    loop {
        let job = {
            let mut st = lock(m);
            // Waited a while already: the thread's memory has been handed back.
            let mut settled = false;
            loop {
                if let Some(job) = st.jobs.pop_front() {
                    break job;
                }
                if st.idle >= MAX_IDLE_WORKERS {
                    return leave(st);
                }
                st.idle += 1;
                let wait = if settled { WORKER_IDLE } else { WORKER_SETTLE };
                let (g, timed_out) = sync::wait_timeout(cvar, st, wait);
                st = g;
                st.idle -= 1;
                if timed_out && st.jobs.is_empty() {
                    if settled {
                        return leave(st);
                    }
                    settled = true;
                    drop(st);
                    crate::memory::release_idle_thread();
                    st = lock(m);
                }
            }
        };
        // A panic in one connection must not take the slot accounting down with it.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            log::error!(target: CONN_ERRS, "error during copy: connection handler panicked");
        }
    }
}

/// A worker leaves the pool. The last one to go (the proxy has been idle for [`WORKER_IDLE`])
/// hands the allocator's free memory back to the system.
fn leave(mut st: MutexGuard<'_, PoolState>) {
    st.workers -= 1;
    let last = st.workers == 0;
    drop(st);
    if last {
        crate::memory::trim();
    }
}

/// Runs the copy phase between two connected endpoints, with the `opening pipe` and
/// `closed pipe` lines (docs/behaviour.md §13.3). `started` is when the connection was accepted.
/// Counts the connection as a success, and its bytes and any timeout when it closes.
pub fn pipe(
    inbound: &mut Endpoint,
    outbound: &mut Endpoint,
    timeouts: &Timeouts,
    started: Instant,
    metrics: Option<&Metrics>,
) {
    if let Some(m) = metrics {
        Metrics::inc(&m.accept_success);
    }
    let left = format!(
        "{} [{}]",
        inbound.stream().peer_display(),
        peer_label(inbound)
    );
    let right = format!(
        "{} [{}]",
        outbound.stream().peer_display(),
        peer_label(outbound)
    );
    log::info!(target: CONNS, "opening pipe: {left} <-> {right} ");
    let limits = CopyLimits {
        close: timeouts.close,
        lifetime: timeouts.max_lifetime.map(|d| Instant::now() + d),
    };
    let stats = relay::copy(inbound, outbound, limits);
    if let Some(m) = metrics {
        m.bytes_forwarded
            .fetch_add(stats.forwarded, Ordering::Relaxed);
        m.bytes_returned
            .fetch_add(stats.returned, Ordering::Relaxed);
        if stats.timed_out {
            Metrics::inc(&m.conn_timeout);
        }
    }
    if let Some(e) = &stats.error {
        log::warn!(target: CONN_ERRS, "error during copy: {e}");
    }
    log::info!(
        target: CONNS,
        "closed pipe: {left} <-> {right} [forwarded {}, returned {}, open {}]",
        format_bytes(stats.forwarded),
        format_bytes(stats.returned),
        format_go_duration(started.elapsed()),
    );
}

/// `no tls`, `no cert`, or the peer leaf's subject.
fn peer_label(end: &Endpoint) -> String {
    match end.tls_conn() {
        None => "no tls".to_string(),
        Some(conn) => match conn.peer_certificates() {
            Some([leaf, ..]) => crate::certs::subject_string(leaf),
            _ => "no cert".to_string(),
        },
    }
}
