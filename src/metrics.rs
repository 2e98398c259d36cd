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
    /// The authorizer whose own counters (`Authorizer::counters`) are exported too.
    authz: OnceLock<Arc<dyn Authorizer>>,
}

impl Metrics {
    pub fn new(prefix: &str, hostname: &str) -> Metrics {
        Metrics {
            prefix: prefix.to_string(),
            hostname: hostname.to_string(),
            started: Instant::now(),
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
            ("conn.open", g(&self.conn_open)),
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

    /// Prometheus text format 0.0.4 (see the module header for the naming decision).
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut family = |help: &str, name: &str, kind: &str, samples: &[(String, String)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (series, value) in samples {
                out.push_str(&format!("{series} {value}\n"));
            }
        };
        let single = |name: &str, v: String| vec![(name.to_string(), v)];
        for (dotted_name, value) in self.snapshot() {
            let help = self.dotted(dotted_name);
            let base = prom_name(&help);
            match (dotted_name, value) {
                // Series this port adds: Prometheus conventions.
                ("bytes.forwarded" | "bytes.returned" | "reload.success" | "reload.failure", v) => {
                    let name = format!("{base}_total");
                    family(&help, &name, "counter", &single(&name, v.to_string()));
                }
                (name, v @ Value::Counter(_)) if self.is_authz_counter(name) => {
                    let name = format!("{base}_total");
                    family(&help, &name, "counter", &single(&name, v.to_string()));
                }
                ("reload.last_success" | "cert.not_after", v) => {
                    let name = format!("{base}_timestamp_seconds");
                    family(&help, &name, "gauge", &single(&name, v.to_string()));
                }
                // The reference's series: its names, every one a gauge.
                (_, Value::Timer(t)) => {
                    let rates = [
                        ("count", t.count.to_string()),
                        ("sum", t.sum.to_string()),
                        ("min", t.min.to_string()),
                        ("max", t.max.to_string()),
                        ("mean", prom_f64(t.mean)),
                        ("std_dev", prom_f64(t.std_dev)),
                        ("variance", prom_f64(t.std_dev * t.std_dev)),
                        ("rate1", prom_f64(t.rate1)),
                        ("rate5", prom_f64(t.rate5)),
                        ("rate15", prom_f64(t.rate15)),
                        ("rate_mean", prom_f64(t.rate_mean)),
                    ];
                    for (field, v) in rates {
                        let name = format!("{base}_{field}");
                        family(&help, &name, "gauge", &single(&name, v));
                    }
                    // The reference's pseudo-histogram: `le` carries the quantile and each
                    // bucket its value in nanoseconds; `+Inf` holds the count.
                    let name = format!("{base}_timer");
                    let mut samples: Vec<(String, String)> = [0.5, 0.95, 0.99, 0.999]
                        .iter()
                        .map(|q| {
                            (
                                format!("{name}_bucket{{le=\"{q}\"}}"),
                                prom_f64(t.percentile(*q)),
                            )
                        })
                        .collect();
                    samples.push((format!("{name}_bucket{{le=\"+Inf\"}}"), t.count.to_string()));
                    samples.push((format!("{name}_sum"), t.sum.to_string()));
                    samples.push((format!("{name}_count"), t.count.to_string()));
                    family(&help, &name, "histogram", &samples);
                }
                (_, v) => family(&help, &base, "gauge", &single(&base, v.to_string())),
            }
        }
        out
    }

    /// Graphite plaintext lines (docs/behaviour.md §8.5) for one flush. `previous` holds each
    /// series' count at the last flush, for the per-second rates, and is updated; `secs` is the
    /// flush period.
    pub fn graphite(&self, previous: &mut Vec<(String, u64)>, secs: f64) -> String {
        let now = unix_secs(SystemTime::now());
        let mut out = String::new();
        let mut per_sec = |name: &str, count: u64| {
            let last = match previous.iter_mut().find(|(n, _)| n == name) {
                Some((_, last)) => std::mem::replace(last, count),
                None => {
                    previous.push((name.to_string(), count));
                    0
                }
            };
            count.saturating_sub(last) as f64 / secs.max(f64::MIN_POSITIVE)
        };
        for (name, value) in self.snapshot() {
            let name = self.dotted(name);
            let mut line = |field: &str, v: String| {
                out.push_str(&format!("{name}.{field} {v} {now}\n"));
            };
            match value {
                Value::Counter(v) => {
                    line("count", v.to_string());
                    line("count_ps", format!("{:.2}", per_sec(&name, v)));
                }
                Value::Gauge(v) => line("value", v.to_string()),
                Value::Timer(t) => {
                    line("count", t.count.to_string());
                    line("count_ps", format!("{:.2}", per_sec(&name, t.count)));
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

impl std::fmt::Display for Value {
    /// A counter's or gauge's value; timers have no single value and render empty.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Counter(v) => write!(f, "{v}"),
            Value::Gauge(v) => write!(f, "{v}"),
            Value::Timer(_) => Ok(()),
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

fn prom_f64(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "NaN".to_string()
    }
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
        assert!(p.contains("# HELP gt_conn_open gt.conn.open\n"), "{p}");
        assert!(
            p.contains("# TYPE gt_bytes_forwarded_total counter\ngt_bytes_forwarded_total 1234\n"),
            "{p}"
        );
        assert!(
            p.contains("gt_reload_success_total 1\n") && p.contains("gt_reload_failure_total 1\n"),
            "{p}"
        );
        assert!(p.contains("# TYPE gt_cert_not_after_timestamp_seconds gauge\ngt_cert_not_after_timestamp_seconds 2000000000\n"), "{p}");
        assert!(p.contains("gt_conn_lifetime_count 100\n"), "{p}");
        assert!(p.contains("gt_conn_lifetime_max 100000000\n"), "{p}");
        assert!(
            p.contains("gt_conn_lifetime_timer_bucket{le=\"+Inf\"} 100\n"),
            "{p}"
        );
        assert!(
            p.contains("gt_conn_lifetime_timer_bucket{le=\"0.5\"} 50500000\n"),
            "{p}"
        );
    }

    #[test]
    fn prometheus_names_are_sanitized() {
        assert_eq!(prom_name("my-app.conn.open"), "my_app_conn_open");
        assert_eq!(prom_name("a b=c/d.e"), "a_b_c_d_e");
        assert_eq!(prom_name("9lives.x"), "_9lives_x");
    }

    #[test]
    fn graphite_lines_and_rates_per_flush() {
        let m = filled();
        let mut prev = Vec::new();
        let g = m.graphite(&mut prev, 2.0);
        assert!(g.contains("gt.accept.total.count 2 "), "{g}");
        assert!(g.contains("gt.accept.total.count_ps 1.00 "), "{g}");
        assert!(g.contains("gt.conn.lifetime.999-percentile "), "{g}");
        assert!(g.contains("gt.conn.open.value 1 "), "{g}");
        Metrics::inc(&m.accept_total);
        let g = m.graphite(&mut prev, 2.0);
        assert!(
            g.contains("gt.accept.total.count 3 ") && g.contains("gt.accept.total.count_ps 0.50 "),
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
