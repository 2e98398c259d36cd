//! The status endpoint (SPEC 8): `/_status` reflects the backend, `/_shutdown` drains.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::util::*;

/// One plain HTTP/1.1 request; returns the status code and body.
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to status port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

#[test]
fn status_reports_backend_health_and_shutdown_drains() {
    let pki = Pki::new();
    // Nothing listens on the target yet: the backend check fails.
    let (target, target_addr) = free_addr();
    let (status, _) = free_addr();
    let (mut d, _) = start_server(
        &pki,
        &target,
        &[
            "--allow-all",
            &format!("--status=http://{status}"),
            "--enable-shutdown",
        ],
    );
    let (code, body) = http(&status, "GET", "/_status");
    assert_eq!(code, 503, "{body}{}", d.describe());
    assert!(
        body.starts_with("{\"ok\":false,\"status\":\"critical\",\"listen_address\":"),
        "{body}"
    );
    assert!(body.contains("\"backend_error\":\"dial tcp "), "{body}");
    assert_eq!(http(&status, "GET", "/nope").0, 404);
    assert_eq!(http(&status, "GET", "/_shutdown").0, 405);

    // Once the backend is up, the same endpoint says ok.
    let _backend = std::net::TcpListener::bind(target_addr).expect("bind the target port");
    let (code, body) = http(&status, "GET", "/_status");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"message\":\"listening\"") && !body.contains("backend_error"),
        "{body}"
    );
    // The sandbox state is reported too (what Landlock enforces, or why not).
    assert!(body.contains("\"sandbox\":\"landlock: "), "{body}");

    assert_eq!(http(&status, "POST", "/_shutdown").0, 200);
    d.wait_log(
        "shutdown was requested via status endpoint",
        Duration::from_secs(10),
    );
    assert_eq!(
        d.wait_exit(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        d.describe()
    );
}
