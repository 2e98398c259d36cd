//! PROXY protocol v2 (docs/behaviour.md §7.4): the header ghostunnel writes to the backend, decoded
//! by an independent parser (the `proxy-protocol` Python package) inside a real backend that then
//! answers the client with what it decoded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rustls::ClientConfig;

use crate::util::*;

/// A Python that can import `proxyprotocol`.
fn python() -> &'static str {
    python_with("proxyprotocol.v2", "pip install proxy-protocol")
}

/// The backend: reads the PROXY v2 header with `proxyprotocol`, then one payload line, and
/// answers `key=value` lines describing both, ending with `end`. A connection whose header
/// cannot be read gets nothing back and is reported on stdout as `rejected`.
const BACKEND: &str = r#"
import os, socket, sys
from proxyprotocol.v2 import ProxyProtocolV2

where = sys.argv[1]
if where.startswith("unix:"):
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(where[5:])
else:
    srv = socket.socket(socket.AF_INET)
    srv.bind(("127.0.0.1", 0))
    where = "127.0.0.1:%d" % srv.getsockname()[1]
srv.listen(16)
print(where, flush=True)

def exact(c, n):
    data = b""
    while len(data) < n:
        chunk = c.recv(n - len(data))
        if not chunk:
            raise EOFError("header cut short after %d bytes" % len(data))
        data += chunk
    return data

def addr(a):
    return a if isinstance(a, str) else "%s:%d" % (a[0], a[1])

while True:
    c, _ = srv.accept()
    c.settimeout(15)
    try:
        pp = ProxyProtocolV2()
        head = exact(c, 16)
        whole = head + exact(c, pp.unpack_header(head).data_len)
        r = pp.unpack(whole)
        out = ["family=" + r.type.name, "src=" + addr(r.source), "dst=" + addr(r.dest),
               "tlvs=" + ",".join("%02x" % t for t in r.tlv)]
        if r.tlv.alpn is not None:
            out.append("alpn=" + r.tlv.alpn.decode())
        if r.tlv.authority is not None:
            out.append("authority=" + r.tlv.authority)
        ssl = r.tlv.ssl
        if ssl:
            out += ["ssl_client=%d" % ssl.client, "ssl_verify=%d" % ssl.verify,
                    "ssl_subtlvs=" + ",".join("%02x" % t for t in ssl),
                    "ssl_version=%s" % ssl.version]
            if ssl.cn is not None:
                out.append("ssl_cn=" + ssl.cn)
            if 0x28 in ssl:
                out.append("ssl_cert=" + ssl[0x28].hex())
        line = b""
        while not line.endswith(b"\n"):
            chunk = c.recv(1)
            if not chunk:
                break
            line += chunk
        out.append("payload=" + line.decode().strip())
        c.sendall(("\n".join(out) + "\nend\n").encode())
        print("decoded", flush=True)
    except Exception as e:
        print("rejected %r" % e, flush=True)
    c.close()
"#;

/// The Python backend process; killed on drop.
struct PyBackend {
    child: Child,
    /// `127.0.0.1:<port>` or `unix:<path>`, for `--target`.
    target: String,
    reports: mpsc::Receiver<String>,
}

impl PyBackend {
    /// Listens on a free TCP port, or at `unix:<path>` when given.
    fn start(unix: Option<&std::path::Path>) -> PyBackend {
        let arg = unix.map_or("tcp".to_string(), |p| format!("unix:{}", p.display()));
        let mut child = Command::new(python())
            .args(["-c", BACKEND, &arg])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the python backend");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut target = String::new();
        stdout.read_line(&mut target).expect("backend address");
        assert!(!target.is_empty(), "the python backend did not start");
        let (tx, reports) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        PyBackend {
            child,
            target: target.trim().to_string(),
            reports,
        }
    }

    /// The backend's report of its next connection: `decoded` or `rejected <reason>`.
    fn next_report(&self) -> String {
        self.reports
            .recv_timeout(IO_TIMEOUT)
            .unwrap_or_else(|_| "no connection reached the backend".to_string())
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS session over `sock` (SNI `sni`): sends `payload\n` and returns the backend's decoded
/// `key=value` lines, or an error if the connection ends without an answer.
fn decode_via<S: Read + Write>(
    sock: S,
    cfg: Arc<ClientConfig>,
    sni: &str,
    payload: &str,
) -> Result<BTreeMap<String, String>, String> {
    let conn = rustls::ClientConnection::new(cfg, sni.to_string().try_into().unwrap())
        .map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    s.write_all(format!("{payload}\n").as_bytes())
        .and_then(|()| s.flush())
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    if !answer.ends_with("end\n") {
        return Err(format!("no answer from the backend, got {answer:?}"));
    }
    Ok(answer
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = tcp_connect(addr);
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

fn get<'a>(m: &'a BTreeMap<String, String>, k: &str) -> &'a str {
    m.get(k).map_or("<absent>", String::as_str)
}

/// `--proxy-protocol`: addresses only. Source is the client's address, destination the
/// listener's, and the payload follows the header intact.
#[test]
fn addresses_only_over_tcp() {
    let pki = Pki::new();
    let backend = PyBackend::start(None);
    let (_d, addr) = start_server(&pki, &backend.target, &["--allow-all", "--proxy-protocol"]);
    let sock = tcp(addr);
    let local = sock.local_addr().unwrap();
    let got = decode_via(
        sock,
        client_config(&pki.ca.cert_der, Some(&pki.client)),
        "localhost",
        "hello",
    )
    .unwrap();
    assert_eq!(backend.next_report(), "decoded");
    assert_eq!(get(&got, "family"), "IPv4");
    assert_eq!(get(&got, "src"), local.to_string());
    assert_eq!(get(&got, "dst"), addr.to_string());
    assert_eq!(get(&got, "tlvs"), "", "conn mode sends no TLVs: {got:?}");
    assert_eq!(get(&got, "payload"), "hello");
}

/// `--proxy-protocol-mode=tls`: SNI as AUTHORITY and the SSL TLV with the version, but no
/// client identity even though the client presented a certificate.
#[test]
fn tls_mode_carries_sni_and_version_for_both_tls_versions() {
    let pki = Pki::new();
    let backend = PyBackend::start(None);
    let (_d, addr) = start_server(
        &pki,
        &backend.target,
        &["--allow-all", "--proxy-protocol-mode=tls"],
    );
    for (versions, name) in [
        (&[&rustls::version::TLS13][..], "TLS 1.3"),
        (&[&rustls::version::TLS12][..], "TLS 1.2"),
    ] {
        let cfg = client_config_versions(&pki.ca.cert_der, Some(&pki.client), versions);
        let got = decode_via(tcp(addr), cfg, "localhost", "hi").unwrap();
        assert_eq!(backend.next_report(), "decoded");
        assert_eq!(get(&got, "tlvs"), "02,20", "{got:?}");
        assert_eq!(get(&got, "authority"), "localhost");
        assert_eq!(get(&got, "ssl_version"), name);
        assert_eq!(get(&got, "ssl_client"), "1");
        assert_eq!(get(&got, "ssl_verify"), "0");
        assert_eq!(get(&got, "ssl_subtlvs"), "21", "{got:?}");
        assert_eq!(get(&got, "payload"), "hi");
    }
}

/// `--proxy-protocol-mode=tls-full`: the client's CN and certificate DER, client flags
/// SSL|CERT_CONN|CERT_SESS. A client without a certificate (authentication disabled) gets
/// the plain SSL TLV. Connecting by IP sends no SNI, so there is no AUTHORITY.
#[test]
fn tls_full_mode_carries_the_client_certificate() {
    let pki = Pki::new();
    let backend = PyBackend::start(None);
    let (_d, addr) = start_server(
        &pki,
        &backend.target,
        &["--allow-all", "--proxy-protocol-mode=tls-full"],
    );
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let got = decode_via(tcp(addr), cfg.clone(), "localhost", "x").unwrap();
    assert_eq!(backend.next_report(), "decoded");
    assert_eq!(get(&got, "ssl_client"), "7");
    assert_eq!(get(&got, "ssl_subtlvs"), "21,22,28", "{got:?}");
    assert_eq!(get(&got, "ssl_cn"), "client");
    assert_eq!(get(&got, "ssl_cert"), hex(&pki.client.cert_der));

    let got = decode_via(tcp(addr), cfg, "127.0.0.1", "x").unwrap();
    assert_eq!(backend.next_report(), "decoded");
    assert_eq!(get(&got, "tlvs"), "20", "an IP address is no SNI: {got:?}");

    let (_d2, addr2) = start_server(
        &pki,
        &backend.target,
        &["--disable-authentication", "--proxy-protocol-mode=tls-full"],
    );
    let anonymous = client_config(&pki.ca.cert_der, None);
    let got = decode_via(tcp(addr2), anonymous, "localhost", "x").unwrap();
    assert_eq!(backend.next_report(), "decoded");
    assert_eq!(get(&got, "ssl_client"), "1");
    assert_eq!(get(&got, "ssl_subtlvs"), "21", "{got:?}");
}

/// A client connecting to a dual-stack `[::]` listener over IPv4 is announced as IPv4; one
/// connecting over `::1` as IPv6.
#[test]
fn ipv4_mapped_clients_are_ipv4_and_ipv6_clients_ipv6() {
    let pki = Pki::new();
    let backend = PyBackend::start(None);
    let port = free_port();
    let _d = Cmd::new("server")
        .args([
            "--listen",
            &format!("[::]:{port}"),
            "--target",
            &backend.target,
        ])
        .args(pki.server_cred_args())
        .args(["--allow-all", "--proxy-protocol"])
        .spawn();
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let sock = tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    let local = sock.local_addr().unwrap();
    let got = decode_via(sock, cfg.clone(), "localhost", "v4").unwrap();
    assert_eq!(backend.next_report(), "decoded");
    assert_eq!(get(&got, "family"), "IPv4", "{got:?}");
    assert_eq!(get(&got, "src"), local.to_string());
    assert_eq!(get(&got, "dst"), format!("127.0.0.1:{port}"));

    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let sock = TcpStream::connect_timeout(&v6, IO_TIMEOUT).expect("connect over ::1");
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let local = sock.local_addr().unwrap();
    let got = decode_via(sock, cfg, "localhost", "v6").unwrap();
    assert_eq!(backend.next_report(), "decoded");
    assert_eq!(get(&got, "family"), "IPv6", "{got:?}");
    assert_eq!(get(&got, "src"), format!("{}:{}", local.ip(), local.port()));
    assert_eq!(get(&got, "dst"), format!("::1:{port}"));
}

/// A UNIX listener: family UNIX, source `@` (the unnamed client), destination the listening
/// socket's path; with a UNIX target as well.
#[test]
fn unix_listener_and_unix_target() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let backend = PyBackend::start(Some(&dir.join("backend.sock")));
    assert!(backend.target.starts_with("unix:"));
    let listen = dir.join("gt.sock");
    let mut d = Cmd::new("server")
        .args([
            "--listen",
            &format!("unix:{}", listen.display()),
            "--target",
            &backend.target,
        ])
        .args(pki.server_cred_args())
        .args(["--allow-all", "--proxy-protocol-mode=tls"])
        .spawn();
    let sock = UnixStream::connect(&listen).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let got = decode_via(sock, cfg, "localhost", "over unix")
        .unwrap_or_else(|e| panic!("{e}{}", d.describe()));
    assert_eq!(backend.next_report(), "decoded");
    assert_eq!(get(&got, "family"), "UNIX");
    assert_eq!(get(&got, "src"), "@");
    assert_eq!(get(&got, "dst"), listen.display().to_string());
    assert_eq!(get(&got, "authority"), "localhost");
    assert_eq!(get(&got, "payload"), "over unix");
    d.wait_log("opening pipe: unix:@ [CN=client", Duration::from_secs(5));
}

/// A header that cannot be encoded (a long SNI and a client certificate so large that the
/// PROXY v2 length overflows) closes the connection without sending the backend anything:
/// fail closed, with `error building proxy header`. The same client passes in `tls` mode,
/// which omits the certificate.
#[test]
fn unencodable_header_fails_closed() {
    let pki = Pki::new();
    // A 247-byte server name: with it, the header overflows 65 535 bytes once the client
    // certificate's DER exceeds about 65 243 bytes. rustls accepts a certificate message of up
    // to 64 KiB on the wire, about 65 500 bytes of DER over TLS 1.2. Aim between.
    let name = format!(
        "{}.{}.{}.{}.test",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(50)
    );
    let server = pki.issue("long-name", &LeafSpec::server("long-name").dns(&name));
    let mut padding = 65_000;
    let mut big = pki.issue("big", &LeafSpec::client("big").padding(padding));
    padding = padding + 65_350 - big.cert_der.len();
    big = pki.issue("big", &LeafSpec::client("big").padding(padding));
    assert!(
        (65_300..65_400).contains(&big.cert_der.len()),
        "padding missed: {}",
        big.cert_der.len()
    );
    let backend = PyBackend::start(None);
    let cfg = client_config_versions(&pki.ca.cert_der, Some(&big), &[&rustls::version::TLS12]);
    let start = |mode: &str| {
        let (listen, addr) = free_addr();
        let d = Cmd::new("server")
            .args(["--listen", &listen, "--target", &backend.target])
            .args(server.keystore_args())
            .args(pki.cacert_args())
            .args(["--allow-all", mode])
            .spawn();
        (d, addr)
    };

    let (mut d, addr) = start("--proxy-protocol-mode=tls-full");
    let err = decode_via(tcp(addr), cfg.clone(), &name, "secret").unwrap_err();
    assert!(err.contains("no answer"), "{err}");
    let report = backend.next_report();
    assert!(
        report.starts_with("rejected") && report.contains("after 0 bytes"),
        "the backend received bytes: {report}{}",
        d.describe()
    );
    d.wait_log(
        "error building proxy header: header of",
        Duration::from_secs(5),
    );
    assert_eq!(d.count_log("opening pipe"), 0, "{}", d.describe());

    let (_d, addr) = start("--proxy-protocol-mode=tls");
    let got = decode_via(tcp(addr), cfg, &name, "fine").unwrap();
    assert_eq!(backend.next_report(), "decoded");
    assert_eq!(get(&got, "authority"), name);
    assert_eq!(get(&got, "payload"), "fine");
}
