//! Metrics (docs/behaviour.md §7.5, §8.5): what the proxy counts, as `/_metrics` serves it (checked
//! by the real Prometheus text parser and a real JSON parser), and the Graphite and `--metrics-url`
//! pushes under the Landlock sandbox.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::*;

/// A Python that can import `prometheus_client` (pip or Debian's python3-prometheus-client).
fn python() -> &'static str {
    python_with(
        "prometheus_client",
        "apt-get install python3-prometheus-client (or pip install prometheus_client)",
    )
}

/// Runs `script` with `input` on stdin; panics with its stderr if it fails.
fn run_python(script: &str, input: &str) -> String {
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python rejected the input: {}\n--- input ---\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Parses Prometheus text with `prometheus_client`; returns family → type and
/// `sample{labels}` → value.
fn parse_prometheus(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, f64>) {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    print("family", fam.name, fam.type)
    for s in fam.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        print("sample", s.name + ("{" + labels + "}" if labels else ""), repr(float(s.value)))
"#;
    let (mut families, mut samples) = (BTreeMap::new(), BTreeMap::new());
    for line in run_python(script, text).lines() {
        let mut f = line.splitn(3, ' ');
        match (f.next(), f.next(), f.next()) {
            (Some("family"), Some(name), Some(kind)) => {
                families.insert(name.to_string(), kind.to_string());
            }
            (Some("sample"), Some(name), Some(v)) => {
                samples.insert(name.to_string(), v.parse().unwrap_or(f64::NAN));
            }
            _ => panic!("unexpected parser output {line:?}"),
        }
    }
    (families, samples)
}

/// Parses the JSON metrics with Python's json module; checks every entry has exactly the
/// reference's keys and returns metric → value.
fn parse_json(text: &str) -> BTreeMap<String, f64> {
    let script = r#"
import sys, json
doc = json.loads(sys.stdin.read())
assert isinstance(doc, list) and doc, "not a non-empty array"
for e in doc:
    assert sorted(e) == ["hostname", "metric", "timestamp", "value"], e
    assert isinstance(e["timestamp"], int), e
    print(e["metric"], repr(float(e["value"])))
"#;
    run_python(script, text)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN)))
        .collect()
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One good connection (13 bytes each way) and one refused handshake, then every format.
#[test]
fn metrics_count_connections_and_prometheus_text_parses() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (status, _) = free_addr();
    let (d, addr) = start_server(
        &pki,
        &backend.target(),
        &["--allow-all", &format!("--status=http://{status}")],
    );
    let good = client_config(&pki.ca.cert_der, Some(&pki.client));
    drop(try_echo(addr, good, b"hello metrics").expect("echo"));
    let anonymous = client_config(&pki.ca.cert_der, None);
    assert!(
        try_echo(addr, anonymous, b"x").is_err(),
        "accepted without a certificate"
    );

    // Connections are counted when they close: wait for both.
    let mut json = BTreeMap::new();
    let settled = eventually(Duration::from_secs(10), || {
        json = parse_json(&http(&status, "GET", "/_metrics/json").body);
        json.get("ghostunnel.accept.error") == Some(&1.0)
            && json.get("ghostunnel.bytes.returned") == Some(&13.0)
            && json.get("ghostunnel.conn.open") == Some(&0.0)
    });
    assert!(settled, "metrics never settled: {json:?}{}", d.describe());
    assert_eq!(json["ghostunnel.accept.total"], 2.0, "{json:?}");
    assert_eq!(json["ghostunnel.accept.success"], 1.0, "{json:?}");
    assert_eq!(json["ghostunnel.bytes.forwarded"], 13.0, "{json:?}");
    assert_eq!(json["ghostunnel.conn.lifetime.count"], 2.0, "{json:?}");
    assert_eq!(json["ghostunnel.conn.handshake.count"], 2.0, "{json:?}");
    assert!(json["ghostunnel.conn.lifetime.max"] > 0.0, "{json:?}");
    for field in [
        "min",
        "mean",
        "50-percentile",
        "75-percentile",
        "95-percentile",
        "99-percentile",
    ] {
        assert!(
            json.contains_key(&format!("ghostunnel.conn.lifetime.{field}")),
            "{field}"
        );
    }

    let r = http(&status, "GET", "/_metrics/prometheus");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (families, samples) = parse_prometheus(&r.body);
    // Every sample landed in a declared family: nothing fell back to untyped.
    for (name, kind) in &families {
        assert!(
            ["gauge", "counter", "histogram"].contains(&kind.as_str()),
            "{name} parsed as {kind}\n{}",
            r.body
        );
    }
    let kind = |f: &str| families.get(f).map(String::as_str);
    let value = |s: &str| {
        *samples
            .get(s)
            .unwrap_or_else(|| panic!("no sample {s} in\n{}", r.body))
    };
    // The reference's series: its names, all gauges.
    for f in [
        "ghostunnel_conn_open",
        "ghostunnel_conn_timeout",
        "ghostunnel_accept_total",
        "ghostunnel_accept_success",
        "ghostunnel_accept_error",
        "ghostunnel_accept_timeout",
        "ghostunnel_conn_lifetime_count",
        "ghostunnel_conn_lifetime_rate1",
        "ghostunnel_conn_handshake_std_dev",
    ] {
        assert_eq!(kind(f), Some("gauge"), "{f}");
    }
    assert_eq!(value("ghostunnel_accept_total"), 2.0);
    assert_eq!(value("ghostunnel_accept_error"), 1.0);
    assert_eq!(value("ghostunnel_conn_open"), 0.0);
    assert_eq!(kind("ghostunnel_conn_lifetime_timer"), Some("histogram"));
    assert_eq!(
        value("ghostunnel_conn_lifetime_timer_bucket{le=\"+Inf\"}"),
        2.0
    );
    // Ours: conventional counters (the parser strips `_total` from the family name).
    assert_eq!(kind("ghostunnel_bytes_forwarded"), Some("counter"));
    assert_eq!(value("ghostunnel_bytes_forwarded_total"), 13.0);
    assert_eq!(value("ghostunnel_bytes_returned_total"), 13.0);
    assert_eq!(value("ghostunnel_reload_success_total"), 0.0);
    assert_eq!(
        kind("ghostunnel_cert_not_after_timestamp_seconds"),
        Some("gauge")
    );
    let expiry = value("ghostunnel_cert_not_after_timestamp_seconds");
    let cert = {
        use x509_cert::der::Decode;
        x509_cert::Certificate::from_der(&pki.server.cert_der).unwrap()
    };
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration();
    assert_eq!(expiry, not_after.as_secs() as f64, "certificate expiry");
}

/// A Graphite collector on loopback: each accepted connection's text, in order.
fn graphite_collector() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            g.lock().unwrap().push(text);
        }
    });
    (port, got)
}

/// Graphite push (docs/behaviour.md §8.5) every `--metrics-interval`, a new connection per flush,
/// with the Landlock sandbox on: the collector's port must be in the plan.
#[test]
fn graphite_push_under_landlock() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (port, got) = graphite_collector();
    let (mut d, addr) = start_server(
        &pki,
        &backend.target(),
        &[
            "--allow-all",
            &format!("--metrics-graphite=127.0.0.1:{port}"),
            "--metrics-interval=200ms",
            "--metrics-prefix=edge",
        ],
    );
    let log = d.wait_log(
        &format!("metrics enabled; reporting metrics via TCP to 127.0.0.1:{port}"),
        Duration::from_secs(5),
    );
    assert!(!log.contains("landlock: disabled"), "{log}");
    if log.contains("landlock: fully enforced") {
        assert!(
            log.contains(&format!("{port}")),
            "port not in the sandbox plan: {log}"
        );
    }
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    drop(try_echo(addr, cfg, b"graphite").expect("echo"));
    let pushed = eventually(Duration::from_secs(10), || {
        let got = got.lock().unwrap();
        got.len() >= 2
            && got
                .iter()
                .any(|t| t.contains("edge.bytes.forwarded.count 8 "))
    });
    assert!(
        pushed,
        "no flush with the connection's bytes: {:?}{}",
        got.lock().unwrap(),
        d.describe()
    );
    let flushes = got.lock().unwrap().clone();
    assert!(flushes.len() >= 2, "one connection per flush: {flushes:?}");
    let last = flushes.last().unwrap();
    for line in last.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{line}");
        assert!(f[0].starts_with("edge."), "{line}");
        assert!(f[1].parse::<f64>().is_ok(), "{line}");
        let ts: f64 = f[2].parse().unwrap();
        assert!((ts - now_secs()).abs() < 60.0, "{line}");
    }
    for name in [
        "edge.accept.total.count 1 ",
        "edge.accept.success.count_ps ",
        "edge.conn.open.value 0 ",
        "edge.conn.lifetime.99-percentile ",
        "edge.conn.lifetime.one-minute ",
    ] {
        assert!(last.contains(name), "{name} missing from {last}");
    }
    assert!(d.stderr().is_empty(), "{}", d.describe());
}

/// A collector that is down costs a line on stderr per flush and nothing else.
#[test]
fn graphite_collector_down_is_reported_on_stderr_only() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (dead, _) = free_addr();
    let (d, addr) = start_server(
        &pki,
        &backend.target(),
        &[
            "--allow-all",
            &format!("--metrics-graphite={dead}"),
            "--metrics-interval=100ms",
        ],
    );
    assert!(
        eventually(Duration::from_secs(5), || d.stderr().contains(&format!(
            "error sending metrics to graphite {dead}: dial tcp"
        ))),
        "{}",
        d.describe()
    );
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    try_echo(addr, cfg, b"still proxying").expect("echo");
    assert!(
        !d.stdout().contains("error sending metrics"),
        "{}",
        d.describe()
    );
}

/// `--metrics-url`: the JSON array POSTed every interval; failures are logged.
#[test]
fn metrics_url_posts_json_under_landlock() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let collector = HttpServer::start(200);
    let url = format!("http://127.0.0.1:{}/push", collector.addr.port());
    let (mut d, _) = start_server(
        &pki,
        &backend.target(),
        &[
            "--allow-all",
            &format!("--metrics-url={url}"),
            "--metrics-interval=200ms",
            "--metrics-prefix=edge",
        ],
    );
    d.wait_log(
        &format!("metrics enabled; reporting metrics via POST to {url}"),
        Duration::from_secs(5),
    );
    assert!(
        eventually(Duration::from_secs(10), || !collector.seen().is_empty()),
        "nothing was posted{}",
        d.describe()
    );
    let post = collector.seen()[0].clone();
    assert!(post.head.starts_with("POST /push HTTP/1.1\r\n"), "{post:?}");
    assert!(
        post.head
            .to_ascii_lowercase()
            .contains("\r\ncontent-type: application/json"),
        "{post:?}"
    );
    let json = parse_json(&post.body);
    assert_eq!(json.get("edge.conn.open"), Some(&0.0), "{json:?}");
    assert!(json.contains_key("edge.cert.not_after"), "{json:?}");

    collector
        .code
        .store(500, std::sync::atomic::Ordering::SeqCst);
    d.wait_log(
        "error reporting metrics: server returned status: 500",
        Duration::from_secs(10),
    );
    assert!(d.try_status().is_none(), "{}", d.describe());
}

/// `--metrics-url https://…` and `--target-status https://…` go through our rustls, trusting
/// `--cacert` and checking the URL's host name.
#[test]
fn https_metrics_url_and_target_status() {
    let pki = Pki::new();
    let collector = HttpServer::start_tls(200, server_config(&pki.server));
    let url = format!("https://localhost:{}/push", collector.addr.port());
    let health = HttpServer::start_tls(204, server_config(&pki.server));
    let port = health.addr.port();
    let (status, _) = free_addr();
    let (d, _) = start_server(
        &pki,
        &format!("127.0.0.1:{port}"),
        &[
            "--allow-all",
            &format!("--metrics-url={url}"),
            "--metrics-interval=200ms",
            &format!("--status=http://{status}"),
            &format!("--target-status=https://localhost:{port}/health"),
        ],
    );
    assert!(
        eventually(Duration::from_secs(10), || !collector.seen().is_empty()),
        "nothing was posted over https{}",
        d.describe()
    );
    let post = collector.seen()[0].clone();
    assert!(post.head.starts_with("POST /push HTTP/1.1\r\n"), "{post:?}");
    assert!(post.body.starts_with("[{\"hostname\":"), "{post:?}");
    // 204 is not 200: the reference's rule, kept.
    let r = http(&status, "GET", "/_status");
    assert!(
        r.body
            .contains("\"backend_error\":\"target returned status: 204\""),
        "{}{}",
        r.body,
        d.describe()
    );
    health.code.store(200, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(http(&status, "GET", "/_status").code, 200);
    assert!(
        !d.stdout().contains("error reporting metrics"),
        "{}",
        d.describe()
    );
}

/// Client mode counts the same way: a tunnelled connection is a success with its bytes, a
/// refused TLS dial an error; `/_status` names the client certificate it presents.
#[test]
fn client_mode_metrics_and_identity() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    let (status, _) = free_addr();
    let (d, addr) = start_client(
        &pki,
        &srv.target_localhost(),
        &[&format!("--status=http://{status}")],
    );
    let mut s = tcp_connect(addr);
    assert_echo(&mut s, b"client-mode");
    drop(s);
    let mut json = BTreeMap::new();
    let settled = eventually(Duration::from_secs(10), || {
        json = parse_json(&http(&status, "GET", "/_metrics").body);
        json.get("ghostunnel.bytes.forwarded") == Some(&11.0)
    });
    assert!(settled, "{json:?}{}", d.describe());
    assert_eq!(json["ghostunnel.accept.success"], 1.0, "{json:?}");
    assert_eq!(json["ghostunnel.bytes.returned"], 11.0, "{json:?}");
    // Client mode has no inbound handshake.
    assert_eq!(json["ghostunnel.conn.handshake.count"], 0.0, "{json:?}");
    let r = http(&status, "GET", "/_status");
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(
        r.body
            .contains("\"certificate_subject\":\"CN=client,OU=clients,O=Acme\""),
        "{}",
        r.body
    );
}
