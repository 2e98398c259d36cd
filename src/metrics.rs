//! The metrics registry and its three wire formats (docs/behaviour.md §7.5, §8.5): JSON
//! (`/_metrics`, `--metrics-url`), Prometheus text (`/_metrics/prometheus`) and Graphite lines.
//!
//! Owns the counters, gauges and timers the proxy updates, and rendering them. Owns no sockets
//! and no threads: `status.rs` serves the formats and `report.rs` pushes them. The registry
//! exists only when something observes it (`--status`, `--metrics-graphite` or
//! `--metrics-url`); otherwise the proxy holds `None` and records nothing at all.
//!
//! Cost on the connection path: counters and gauges are relaxed atomics. A timer adds its
//! sample to two atomics and, under a short mutex, to a ring of the last [`RESERVOIR`] samples
//! (percentiles, mean, min, max and deviation are computed over that ring when a format is
//! rendered, like the reference's 1028-sample reservoir). Bytes are added once per connection,
//! when it closes, so a long-lived connection shows up in the byte counters at its end.
//!
//! Prometheus naming is a deliberate split. The reference exports every series as a `gauge`
//! named `<prefix>_<name>` (`ghostunnel_accept_total`, `ghostunnel_conn_lifetime_timer`…), and
//! dashboards and alerts are written against those names and types, so the reference's series
//! keep exactly that shape: drop-in wins over convention there. The series this port adds have
//! no dashboards yet and follow Prometheus conventions: monotonic counters are `counter`s with a
//! `_total` suffix (`ghostunnel_bytes_forwarded_total`), instants are `gauge`s in unix seconds
//! named `_timestamp_seconds` (`ghostunnel_cert_not_after_timestamp_seconds`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::authz::Authorizer;

/// How many recent samples a timer keeps for its percentiles (the reference's reservoir size).
pub const RESERVOIR: usize = 1028;

/// Percentiles in the JSON and Graphite formats, with their name suffixes.
const PERCENTILES: [(f64, &str); 4] = [
    (0.5, "50-percentile"),
    (0.75, "75-percentile"),
    (0.95, "95-percentile"),
    (0.99, "99-percentile"),
];

/// The registry. Every field may be updated from any thread; rendering takes a snapshot.
pub struct Metrics {
    prefix: String,
    hostname: String,
    started: Instant,
    /// `conn.open`: connections currently in a worker.
    pub conn_open: AtomicI64,
    /// `conn.timeout`: copy phases ended by a deadline.
    pub conn_timeout: AtomicU64,
    /// `accept.total`: connections accepted.
    pub accept_total: AtomicU64,
    /// `accept.success`: connections that reached the copy phase.
    pub accept_success: AtomicU64,
    /// `accept.error`: accept errors, handshake failures (timeouts included), dial failures,
    /// PROXY header failures.
    pub accept_error: AtomicU64,
    /// `accept.timeout`: inbound handshakes that ran out of `--connect-timeout`.
    pub accept_timeout: AtomicU64,
    /// `conn.handshake`: inbound TLS handshake durations, failed ones included (server mode).
    pub handshake: Timer,
    /// `conn.lifetime`: whole worker durations, failed connections included.
    pub lifetime: Timer,
    /// `bytes.forwarded`: plaintext bytes towards the target, added when a connection closes.
    pub bytes_forwarded: AtomicU64,
    /// `bytes.returned`: plaintext bytes back to the peer, added when a connection closes.
    pub bytes_returned: AtomicU64,
    /// `reload.success` / `reload.failure`: reload results.
    pub reload_success: AtomicU64,
    pub reload_failure: AtomicU64,
    /// `reload.last_success`: unix seconds of the last successful reload, 0 if none.
    reload_last_success: AtomicI64,
    /// `cert.not_after`: unix seconds of the served certificate's notAfter, 0 if none.
    cert_not_after: AtomicI64,
    /// Prometheus scrapes being rendered right now, and completed ones.
    scrapes_in_flight: AtomicI64,
    scrapes_total: AtomicU64,
    /// The authorizer whose own counters (`Authorizer::counters`) are exported too.
    authz: OnceLock<Arc<dyn Authorizer>>,
}

impl Metrics {
    pub fn new(prefix: &str, hostname: &str) -> Metrics {
        Metrics {
            prefix: prefix.to_string(),
            hostname: hostname.to_string(),
            started: {
                // Read now, before any sandbox hides `/proc/stat`.
                crate::procinfo::boot_time();
                Instant::now()
            },
            conn_open: AtomicI64::new(0),
            conn_timeout: AtomicU64::new(0),
            accept_total: AtomicU64::new(0),
            accept_success: AtomicU64::new(0),
            accept_error: AtomicU64::new(0),
            accept_timeout: AtomicU64::new(0),
            handshake: Timer::default(),
            lifetime: Timer::default(),
            bytes_forwarded: AtomicU64::new(0),
            bytes_returned: AtomicU64::new(0),
            reload_success: AtomicU64::new(0),
            reload_failure: AtomicU64::new(0),
            reload_last_success: AtomicI64::new(0),
            cert_not_after: AtomicI64::new(0),
            scrapes_in_flight: AtomicI64::new(0),
            scrapes_total: AtomicU64::new(0),
            authz: OnceLock::new(),
        }
    }

    /// Exports `authz`'s counters with every rendering from now on (set once, at startup).
    pub fn count_for(&self, authz: Arc<dyn Authorizer>) {
        let _ = self.authz.set(authz);
    }

    /// Whether `name` is one of the authorizer's counters.
    fn is_authz_counter(&self, name: &str) -> bool {
        self.authz
            .get()
            .is_some_and(|a| a.counters().iter().any(|(n, _)| *n == name))
    }

    /// Adds one to a counter (relaxed: counters need no ordering with anything else).
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a reload's result.
    pub fn reloaded(&self, ok: bool) {
        if ok {
            Metrics::inc(&self.reload_success);
            self.reload_last_success
                .store(unix_secs(SystemTime::now()), Ordering::Relaxed);
        } else {
            Metrics::inc(&self.reload_failure);
        }
    }

    /// Sets the served certificate's expiry (at startup and after every reload).
    pub fn set_cert_not_after(&self, not_after: Option<SystemTime>) {
        self.cert_not_after
            .store(not_after.map_or(0, unix_secs), Ordering::Relaxed);
    }

    /// Every metric, read now.
    fn snapshot(&self) -> Vec<(&'static str, Value)> {
        let c = |a: &AtomicU64| Value::Counter(a.load(Ordering::Relaxed));
        let g = |a: &AtomicI64| Value::Gauge(a.load(Ordering::Relaxed));
        let uptime = self.started.elapsed();
        vec![
            // A counter in the reference (it counts up and down), so Graphite gets `.count` and
            // `.count_ps` for it; JSON and Prometheus render it as a plain number either way.
            (
                "conn.open",
                Value::Counter(self.conn_open.load(Ordering::Relaxed).max(0) as u64),
            ),
            ("conn.timeout", c(&self.conn_timeout)),
            ("accept.total", c(&self.accept_total)),
            ("accept.success", c(&self.accept_success)),
            ("accept.error", c(&self.accept_error)),
            ("accept.timeout", c(&self.accept_timeout)),
            (
                "conn.handshake",
                Value::Timer(self.handshake.snapshot(uptime)),
            ),
            (
                "conn.lifetime",
                Value::Timer(self.lifetime.snapshot(uptime)),
            ),
            ("bytes.forwarded", c(&self.bytes_forwarded)),
            ("bytes.returned", c(&self.bytes_returned)),
            ("reload.success", c(&self.reload_success)),
            ("reload.failure", c(&self.reload_failure)),
            ("reload.last_success", g(&self.reload_last_success)),
            ("cert.not_after", g(&self.cert_not_after)),
            // The reference's goroutine count; here the OS threads, one per connection plus
            // a fixed few, which moves with load the same way.
            (
                "runtime.goroutines",
                Value::Gauge(crate::procinfo::thread_count().map_or(0, |n| n as i64)),
            ),
        ]
        .into_iter()
        .chain(
            self.authz
                .get()
                .into_iter()
                .flat_map(|a| a.counters())
                .map(|(name, v)| (name, Value::Counter(v))),
        )
        .chain(
            self.authz
                .get()
                .into_iter()
                .flat_map(|a| a.timers())
                .map(|(name, t)| (name, Value::Timer(t.snapshot(uptime)))),
        )
        .collect()
    }

    fn dotted(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The JSON array of docs/behaviour.md §8.5: `{"hostname","metric","timestamp","value"}`
    /// objects; timers expand to count, min, max, mean and percentiles (nanoseconds).
    pub fn json(&self) -> String {
        let now = unix_secs(SystemTime::now());
        let host = crate::status::json_str(&self.hostname);
        let mut entries = Vec::new();
        let mut entry = |metric: String, value: String| {
            entries.push(format!(
                "{{\"hostname\":{host},\"metric\":{},\"timestamp\":{now},\"value\":{value}}}",
                crate::status::json_str(&metric)
            ));
        };
        for (name, value) in self.snapshot() {
            let name = self.dotted(name);
            match value {
                Value::Counter(v) => entry(name, v.to_string()),
                Value::Gauge(v) => entry(name, v.to_string()),
                Value::Timer(t) => {
                    entry(format!("{name}.count"), t.count.to_string());
                    entry(format!("{name}.min"), t.min.to_string());
                    entry(format!("{name}.max"), t.max.to_string());
                    entry(format!("{name}.mean"), json_f64(t.mean));
                    for (q, suffix) in PERCENTILES {
                        entry(format!("{name}.{suffix}"), json_f64(t.percentile(q)));
                    }
                }
            }
        }
        format!("[{}]", entries.join(","))
    }

    /// Prometheus text format 0.0.4 (see the module header for the naming decision), families
    /// sorted by name as the Go client writes them, values in Go's shortest `%g` form. The
    /// registry's series come first in the sort like any other; then the `process_*`,
    /// `go_threads` and `promhttp_*` series that every Go exporter, the reference's included,
    /// publishes about itself.
    pub fn prometheus(&self) -> String {
        self.scrapes_in_flight.fetch_add(1, Ordering::Relaxed);
        let mut families: Vec<(String, String)> = Vec::new();
        let mut family = |help: &str, name: &str, kind: &str, samples: &[(String, String)]| {
            let mut out = format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for (series, value) in samples {
                out.push_str(&format!("{series} {value}\n"));
            }
            families.push((name.to_string(), out));
        };
        let single = |name: &str, v: String| vec![(name.to_string(), v)];
        let int = |v: u64| go_g(v as f64);
        for (dotted_name, value) in self.snapshot() {
            // The reference's HELP text is the registry name without the prefix.
            let help = dotted_name;
            let base = prom_name(&self.dotted(dotted_name));
            match (dotted_name, value) {
                // Series this port adds: Prometheus conventions.
                ("bytes.forwarded" | "bytes.returned" | "reload.success" | "reload.failure", v) => {
                    let name = format!("{base}_total");
                    family(help, &name, "counter", &single(&name, v.prom()));
                }
                (name, v @ Value::Counter(_)) if self.is_authz_counter(name) => {
                    let name = format!("{base}_total");
                    family(help, &name, "counter", &single(&name, v.prom()));
                }
                ("reload.last_success" | "cert.not_after", v) => {
                    let name = format!("{base}_timestamp_seconds");
                    family(help, &name, "gauge", &single(&name, v.prom()));
                }
                // The reference's series: its names, every one a gauge.
                (_, Value::Timer(t)) => {
                    let rates = [
                        ("count", int(t.count)),
                        ("sum", int(t.sum)),
                        ("min", int(t.min)),
                        ("max", int(t.max)),
                        ("mean", go_g(t.mean)),
                        ("std_dev", go_g(t.std_dev)),
                        ("variance", go_g(t.std_dev * t.std_dev)),
                        ("rate1", go_g(t.rate1)),
                        ("rate5", go_g(t.rate5)),
                        ("rate15", go_g(t.rate15)),
                        ("rate_mean", go_g(t.rate_mean)),
                    ];
                    for (field, v) in rates {
                        let name = format!("{base}_{field}");
                        family(
                            &format!("{help}_{field}"),
                            &name,
                            "gauge",
                            &single(&name, v),
                        );
                    }
                    // The reference's pseudo-histogram: `le` carries the quantile and each
                    // bucket its value in nanoseconds, truncated; `+Inf` holds the count.
                    let name = format!("{base}_timer");
                    let mut samples: Vec<(String, String)> = [0.5, 0.95, 0.99, 0.999]
                        .iter()
                        .map(|q| {
                            (
                                format!("{name}_bucket{{le=\"{q}\"}}"),
                                go_g(t.percentile(*q).trunc()),
                            )
                        })
                        .collect();
                    samples.push((format!("{name}_bucket{{le=\"+Inf\"}}"), int(t.count)));
                    samples.push((format!("{name}_sum"), int(t.sum)));
                    samples.push((format!("{name}_count"), int(t.count)));
                    family(&prom_name(dotted_name), &name, "histogram", &samples);
                }
                (_, v) => family(help, &base, "gauge", &single(&base, v.prom())),
            }
        }
        let p = crate::procinfo::Process::read();
        let mut own = |name: &str, kind: &str, help: &str, v: Option<f64>| {
            if let Some(v) = v {
                family(help, name, kind, &single(name, go_g(v)));
            }
        };
        let f = |v: Option<u64>| v.map(|v| v as f64);
        own(
            "go_threads",
            "gauge",
            "Number of OS threads of the process.",
            f(p.threads),
        );
        own(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        );
        own(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds,
        );
        own(
            "process_network_receive_bytes_total",
            "counter",
            "Number of bytes received by the process over the network.",
            f(p.network_receive_bytes),
        );
        own(
            "process_network_transmit_bytes_total",
            "counter",
            "Number of bytes sent by the process over the network.",
            f(p.network_transmit_bytes),
        );
        own(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            f(p.open_fds),
        );
        own(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            f(p.resident_bytes),
        );
        own(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time,
        );
        own(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            f(p.virtual_bytes),
        );
        own(
            "process_virtual_memory_max_bytes",
            "gauge",
            "Maximum amount of virtual memory available in bytes.",
            p.virtual_max_bytes,
        );
        let in_flight = self.scrapes_in_flight.load(Ordering::Relaxed);
        own(
            "promhttp_metric_handler_requests_in_flight",
            "gauge",
            "Current number of scrapes being served.",
            Some(in_flight as f64),
        );
        let total = self.scrapes_total.load(Ordering::Relaxed);
        let name = "promhttp_metric_handler_requests_total";
        family(
            "Total number of scrapes by HTTP status code.",
            name,
            "counter",
            &[
                (format!("{name}{{code=\"200\"}}"), int(total)),
                (format!("{name}{{code=\"500\"}}"), "0".to_string()),
                (format!("{name}{{code=\"503\"}}"), "0".to_string()),
            ],
        );
        families.sort_by(|a, b| a.0.cmp(&b.0));
        let out = families.into_iter().map(|(_, f)| f).collect();
        self.scrapes_in_flight.fetch_sub(1, Ordering::Relaxed);
        Metrics::inc(&self.scrapes_total);
        out
    }

    /// Graphite plaintext lines for one push, as the reference's pusher writes them: counters
    /// as `.count` and `.count_ps`, gauges as `.value`, timers with their statistics and rates.
    /// `count_ps` is the count divided by the push period `secs` (the reference pushes every
    /// second, so it equals the count; it is not a rate of change).
    pub fn graphite(&self, secs: f64) -> String {
        let now = unix_secs(SystemTime::now());
        let mut out = String::new();
        let per_push = |count: u64| count as f64 / secs.max(f64::MIN_POSITIVE);
        for (name, value) in self.snapshot() {
            let name = self.dotted(name);
            let mut line = |field: &str, v: String| {
                out.push_str(&format!("{name}.{field} {v} {now}\n"));
            };
            match value {
                Value::Counter(v) => {
                    line("count", v.to_string());
                    line("count_ps", format!("{:.2}", per_push(v)));
                }
                Value::Gauge(v) => line("value", v.to_string()),
                Value::Timer(t) => {
                    line("count", t.count.to_string());
                    line("count_ps", format!("{:.2}", per_push(t.count)));
                    line("min", t.min.to_string());
                    line("max", t.max.to_string());
                    line("mean", format!("{:.2}", t.mean));
                    line("std-dev", format!("{:.2}", t.std_dev));
                    for (q, suffix) in PERCENTILES
                        .iter()
                        .copied()
                        .chain([(0.999, "999-percentile")])
                    {
                        line(suffix, format!("{:.2}", t.percentile(q)));
                    }
                    line("one-minute", format!("{:.2}", t.rate1));
                    line("five-minute", format!("{:.2}", t.rate5));
                    line("fifteen-minute", format!("{:.2}", t.rate15));
                    line("mean-rate", format!("{:.2}", t.rate_mean));
                }
            }
        }
        out
    }
}

enum Value {
    Counter(u64),
    Gauge(i64),
    Timer(TimerSnapshot),
}

impl Value {
    /// A counter's or gauge's value in Prometheus' (Go's `%g`) form; timers have no single
    /// value and render empty.
    fn prom(&self) -> String {
        match self {
            Value::Counter(v) => go_g(*v as f64),
            Value::Gauge(v) => go_g(*v as f64),
            Value::Timer(_) => String::new(),
        }
    }
}

/// Durations in nanoseconds: an all-time count and sum, a ring of recent samples, and
/// exponentially weighted rates of events per second.
#[derive(Default)]
pub struct Timer {
    count: AtomicU64,
    sum: AtomicU64,
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    samples: Vec<u64>,
    next: usize,
    rates: Rates,
}

impl Timer {
    /// Records one duration. Any thread.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(ns, Ordering::Relaxed);
        let mut r = crate::sync::lock(&self.recent);
        if r.samples.len() < RESERVOIR {
            r.samples.push(ns);
        } else {
            let i = r.next;
            r.samples[i] = ns;
        }
        r.next = (r.next + 1) % RESERVOIR;
    }

    fn snapshot(&self, uptime: Duration) -> TimerSnapshot {
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum.load(Ordering::Relaxed);
        let (mut sorted, (rate1, rate5, rate15)) = {
            let mut r = crate::sync::lock(&self.recent);
            let rates = r.rates.advance(count, Instant::now());
            (r.samples.clone(), rates)
        };
        sorted.sort_unstable();
        let n = sorted.len() as f64;
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().map(|&v| v as f64).sum::<f64>() / n
        };
        let std_dev = if sorted.len() < 2 {
            0.0
        } else {
            (sorted
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / (n - 1.0))
                .sqrt()
        };
        TimerSnapshot {
            count,
            sum,
            min: sorted.first().copied().unwrap_or(0),
            max: sorted.last().copied().unwrap_or(0),
            mean,
            std_dev,
            rate1,
            rate5,
            rate15,
            rate_mean: count as f64 / uptime.as_secs_f64().max(f64::MIN_POSITIVE),
            sorted,
        }
    }
}

struct TimerSnapshot {
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
    mean: f64,
    std_dev: f64,
    rate1: f64,
    rate5: f64,
    rate15: f64,
    rate_mean: f64,
    sorted: Vec<u64>,
}

impl TimerSnapshot {
    /// The `q` quantile of the recent samples, interpolated the way go-metrics does it.
    fn percentile(&self, q: f64) -> f64 {
        let s = &self.sorted;
        if s.is_empty() {
            return 0.0;
        }
        let pos = q * (s.len() as f64 + 1.0);
        if pos < 1.0 {
            return s[0] as f64;
        }
        if pos >= s.len() as f64 {
            return s[s.len() - 1] as f64;
        }
        let lower = s[pos as usize - 1] as f64;
        let upper = s[pos as usize] as f64;
        lower + (pos - pos.floor()) * (upper - lower)
    }
}

/// One-, five- and fifteen-minute moving averages of events per second, ticked every 5 s like
/// the reference's meters. Ticks are taken lazily when a format is rendered: events since the
/// last render count towards the first missed tick, the later ones only decay.
#[derive(Default)]
struct Rates {
    last_tick: Option<Instant>,
    last_count: u64,
    m: [f64; 3],
    started: bool,
}

const TICK: Duration = Duration::from_secs(5);

impl Rates {
    fn advance(&mut self, count: u64, now: Instant) -> (f64, f64, f64) {
        let Some(last) = self.last_tick else {
            self.last_tick = Some(now);
            self.last_count = count;
            return (0.0, 0.0, 0.0);
        };
        let ticks = (now.saturating_duration_since(last).as_secs_f64() / TICK.as_secs_f64()) as u32;
        if ticks > 0 {
            let instant = count.saturating_sub(self.last_count) as f64 / TICK.as_secs_f64();
            for (m, minutes) in self.m.iter_mut().zip([1.0, 5.0, 15.0]) {
                let alpha = 1.0 - (-TICK.as_secs_f64() / 60.0 / minutes).exp();
                if self.started {
                    *m += alpha * (instant - *m);
                } else {
                    *m = instant;
                }
                *m *= (1.0 - alpha).powi(ticks.saturating_sub(1).min(100_000) as i32);
            }
            self.started = true;
            self.last_count = count;
            self.last_tick = Some(last + TICK * ticks);
        }
        (self.m[0], self.m[1], self.m[2])
    }
}

/// `<prefix>_<name>` for Prometheus: `.`, `-`, ` `, `=` and `/` become `_` as in the
/// reference, and so does anything else a metric name cannot hold.
fn prom_name(dotted: &str) -> String {
    let mut out: String = dotted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it, which is what the
/// Prometheus Go client puts on the wire: the shortest digits that round-trip, in exponent
/// form (at least two exponent digits) when the decimal exponent is below -4 or at least 6,
/// the threshold `%g` uses for the shortest precision.
pub fn go_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits as `d.ddde<exp>`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{v}")
}

fn json_f64(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".to_string()
    }
}

pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled() -> Metrics {
        let m = Metrics::new("gt", "host\"1");
        Metrics::inc(&m.accept_total);
        Metrics::inc(&m.accept_total);
        m.conn_open.fetch_add(1, Ordering::Relaxed);
        for ms in 1..=100 {
            m.lifetime.record(Duration::from_millis(ms));
        }
        m.bytes_forwarded.fetch_add(1234, Ordering::Relaxed);
        m.reloaded(true);
        m.reloaded(false);
        m.set_cert_not_after(Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000)));
        m
    }

    #[test]
    fn json_has_reference_shape_and_timer_fields() {
        let j = filled().json();
        assert!(
            j.starts_with(
                "[{\"hostname\":\"host\\\"1\",\"metric\":\"gt.conn.open\",\"timestamp\":"
            ),
            "{j}"
        );
        assert!(
            j.contains("\"metric\":\"gt.accept.total\",\"timestamp\":"),
            "{j}"
        );
        assert!(j.contains("\"value\":2}"), "{j}");
        for f in [
            "count",
            "min",
            "max",
            "mean",
            "50-percentile",
            "75-percentile",
            "95-percentile",
            "99-percentile",
        ] {
            assert!(
                j.contains(&format!("\"metric\":\"gt.conn.lifetime.{f}\"")),
                "{f}: {j}"
            );
        }
        assert!(
            j.contains("\"metric\":\"gt.cert.not_after\",\"timestamp\":"),
            "{j}"
        );
        assert!(j.contains("\"value\":2000000000}"), "{j}");
    }

    #[test]
    fn prometheus_names_types_and_values() {
        let p = filled().prometheus();
        assert!(
            p.contains("# TYPE gt_accept_total gauge\ngt_accept_total 2\n"),
            "{p}"
        );
        assert!(p.contains("# HELP gt_conn_open conn.open\n"), "{p}");
        assert!(
            p.contains("# HELP gt_conn_lifetime_rate1 conn.lifetime_rate1\n"),
            "{p}"
        );
        assert!(
            p.contains("# HELP gt_conn_lifetime_timer conn_lifetime\n# TYPE gt_conn_lifetime_timer histogram\n"),
            "{p}"
        );
        assert!(
            p.contains("# TYPE gt_bytes_forwarded_total counter\ngt_bytes_forwarded_total 1234\n"),
            "{p}"
        );
        assert!(
            p.contains("gt_reload_success_total 1\n") && p.contains("gt_reload_failure_total 1\n"),
            "{p}"
        );
        assert!(p.contains("# TYPE gt_cert_not_after_timestamp_seconds gauge\ngt_cert_not_after_timestamp_seconds 2e+09\n"), "{p}");
        assert!(p.contains("gt_conn_lifetime_count 100\n"), "{p}");
        assert!(p.contains("gt_conn_lifetime_max 1e+08\n"), "{p}");
        assert!(
            p.contains("gt_conn_lifetime_timer_bucket{le=\"+Inf\"} 100\n"),
            "{p}"
        );
        assert!(
            p.contains("gt_conn_lifetime_timer_bucket{le=\"0.5\"} 5.05e+07\n"),
            "{p}"
        );
        assert!(p.contains("gt_conn_lifetime_sum 5.05e+09\n"), "{p}");
        // What every Go exporter adds about its process, with the Go client's names and types.
        for family in [
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ",
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes ",
            "# TYPE process_open_fds gauge\nprocess_open_fds ",
            "# TYPE process_max_fds gauge\nprocess_max_fds ",
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1.",
            "# TYPE go_threads gauge\ngo_threads ",
            "# TYPE gt_runtime_goroutines gauge\ngt_runtime_goroutines ",
            "# HELP promhttp_metric_handler_requests_in_flight Current number of scrapes being served.\n# TYPE promhttp_metric_handler_requests_in_flight gauge\npromhttp_metric_handler_requests_in_flight 1\n",
            "promhttp_metric_handler_requests_total{code=\"200\"} 0\n",
        ] {
            assert!(p.contains(family), "{family}: {p}");
        }
        // Families are sorted by name, as the Go client writes them.
        let names: Vec<&str> = p
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn scrapes_are_counted_after_they_complete() {
        let m = filled();
        m.prometheus();
        let p = m.prometheus();
        assert!(
            p.contains("promhttp_metric_handler_requests_total{code=\"200\"} 1\n"),
            "{p}"
        );
    }

    #[test]
    fn floats_render_like_go_g() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (3.0, "3"),
            (20541.0, "20541"),
            (2132312.0, "2.132312e+06"),
            (9.6714e-05, "9.6714e-05"),
            (0.38400888292586466, "0.38400888292586466"),
            (1.79635437922e9, "1.79635437922e+09"),
            (18_446_744_073_709_551_616.0, "1.8446744073709552e+19"),
            (0.0001, "0.0001"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
        ] {
            assert_eq!(go_g(v), want, "{v}");
        }
    }

    #[test]
    fn prometheus_names_are_sanitized() {
        assert_eq!(prom_name("my-app.conn.open"), "my_app_conn_open");
        assert_eq!(prom_name("a b=c/d.e"), "a_b_c_d_e");
        assert_eq!(prom_name("9lives.x"), "_9lives_x");
    }

    #[test]
    fn graphite_lines_have_the_reference_suffixes() {
        let m = filled();
        let g = m.graphite(1.0);
        assert!(g.contains("gt.accept.total.count 2 "), "{g}");
        // The reference's count_ps: the count over the push period, not a rate of change.
        assert!(g.contains("gt.accept.total.count_ps 2.00 "), "{g}");
        assert!(g.contains("gt.conn.lifetime.999-percentile "), "{g}");
        // conn.open is a counter in the reference: `.count`/`.count_ps`, never `.value`.
        assert!(g.contains("gt.conn.open.count 1 "), "{g}");
        assert!(g.contains("gt.conn.open.count_ps 1.00 "), "{g}");
        assert!(!g.contains("gt.conn.open.value"), "{g}");
        assert!(g.contains("gt.runtime.goroutines.value "), "{g}");
        Metrics::inc(&m.accept_total);
        let g = m.graphite(1.0);
        assert!(
            g.contains("gt.accept.total.count 3 ") && g.contains("gt.accept.total.count_ps 3.00 "),
            "{g}"
        );
        for line in g.lines() {
            assert_eq!(line.split(' ').count(), 3, "{line}");
        }
    }

    #[test]
    fn reservoir_is_bounded_and_keeps_recent_samples() {
        let t = Timer::default();
        for i in 0..(RESERVOIR as u64 * 3) {
            t.record(Duration::from_nanos(i));
        }
        let s = t.snapshot(Duration::from_secs(1));
        assert_eq!(s.count, RESERVOIR as u64 * 3);
        assert_eq!(s.sorted.len(), RESERVOIR);
        assert_eq!(s.min, RESERVOIR as u64 * 2);
    }

    #[test]
    fn rates_decay_after_a_burst() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        r.advance(0, t0);
        let (m1, _, _) = r.advance(50, t0 + TICK);
        assert!((m1 - 10.0).abs() < 1e-9, "{m1}");
        // A quiet minute later, the one-minute rate has decayed by e, the others less.
        let (m1, m5, m15) = r.advance(50, t0 + TICK * 13);
        assert!((m1 - 10.0 / std::f64::consts::E).abs() < 1e-9, "{m1}");
        assert!(m15 > m5 && m5 > m1, "{m1} {m5} {m15}");
    }
}
