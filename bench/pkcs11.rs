//! Handshake rate of a server whose key sits in a SoftHSM token, beside the same key in a
//! file (README "PKCS#11"; not a test). For ECDSA P-256 and RSA-2048 server keys it starts
//! `ghostunnel server` once with `--keystore` and once with `--cert` + `--pkcs11-module`,
//! then runs `--threads` clients doing full mutual-TLS 1.3 handshakes (no resumption) for
//! `--secs` seconds each, and prints handshakes per second and the server's CPU per
//! handshake (from /proc/PID/stat, meaningful on a shared machine).
//!
//! ```text
//! cargo build --release && cargo run --release --example pkcs11-bench -- [--secs N] [--threads N] [--gt PATH]
//! ```
//!
//! Needs softhsm2 (`/usr/lib/softhsm/libsofthsm2.so`, `softhsm2-util`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn main() {
    let mut secs = 5u64;
    let mut threads = 4usize;
    let mut gt = PathBuf::from("target/release/ghostunnel");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--secs" => secs = value().parse().expect("--secs N"),
            "--threads" => threads = value().parse().expect("--threads N"),
            "--gt" => gt = PathBuf::from(value()),
            _ => panic!("usage: pkcs11-bench [--secs N] [--threads N] [--gt PATH]"),
        }
    }
    let work = std::env::temp_dir().join(format!("gt-pkcs11-bench-{}", std::process::id()));
    std::fs::create_dir_all(work.join("tokens")).expect("work dir");
    let conf = work.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            work.join("tokens").display()
        ),
    )
    .expect("softhsm2.conf");

    // CA, client, and one server identity per key type.
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    std::fs::write(work.join("ca.pem"), ca.pem()).expect("write");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |cn: &str, alg, server: bool| {
        let key = KeyPair::generate_for(alg).expect("keygen");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .subject_alt_names
            .push(SanType::DnsName("localhost".try_into().unwrap()));
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert, key)
    };
    let (client_cert, client_key) = leaf("client", &rcgen::PKCS_ECDSA_P256_SHA256, false);
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![client_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.serialize_der())),
            )
            .expect("client auth"),
    );

    let backend = TcpListener::bind("127.0.0.1:0").expect("backend");
    let target = backend.local_addr().expect("addr").to_string();
    thread::spawn(move || {
        for conn in backend.incoming() {
            drop(conn);
        }
    });

    println!("full mutual-TLS 1.3 handshakes, {threads} client threads, {secs} s per row");
    println!("| server key | source | handshakes/s | server CPU ms/handshake |");
    println!("|---|---|---|---|");
    for (name, alg) in [
        ("ECDSA P-256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("RSA 2048", &rcgen::PKCS_RSA_SHA256),
    ] {
        let label = name.replace(' ', "-");
        let (cert, key) = leaf("server", alg, true);
        let cert_path = work.join(format!("{label}.crt"));
        let key_path = work.join(format!("{label}.key"));
        let pem = work.join(format!("{label}.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        std::fs::write(&pem, format!("{}{}", cert.pem(), key.serialize_pem())).expect("write");
        softhsm(
            &conf,
            &[
                "--init-token",
                "--free",
                "--label",
                &label,
                "--so-pin",
                "0000",
                "--pin",
                "1234",
            ],
        );
        softhsm(
            &conf,
            &[
                "--import",
                key_path.to_str().unwrap(),
                "--token",
                &label,
                "--label",
                "k",
                "--id",
                "01",
                "--pin",
                "1234",
            ],
        );
        let base = |port: u16| {
            let mut c = Command::new(&gt);
            c.args(["server", "--quiet=all", "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["--target", &target, "--allow-cn", "client", "--cacert"])
                .arg(work.join("ca.pem"))
                .env("SOFTHSM2_CONF", &conf)
                .stdout(Stdio::null());
            c
        };
        let file_port = free_port();
        let mut file = base(file_port);
        file.arg("--keystore").arg(&pem);
        let hsm_port = free_port();
        let mut hsm = base(hsm_port);
        hsm.arg("--cert").arg(&cert_path).args([
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token-label",
            &label,
            "--pkcs11-pin",
            "1234",
        ]);
        for (source, mut cmd, port) in [("file", file, file_port), ("SoftHSM", hsm, hsm_port)] {
            let server = Server(cmd.spawn().expect("start ghostunnel"));
            wait_listening(port);
            let (rate, cpu) = measure(&server, port, &client_config, threads, secs);
            println!("| {name} | {source} | {rate:.0} | {cpu:.2} |");
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn softhsm(conf: &Path, args: &[&str]) {
    let out = Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .expect("softhsm2-util");
    assert!(
        out.status.success(),
        "softhsm2-util {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "ghostunnel did not listen on {port}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Handshakes per second and server CPU milliseconds per handshake.
fn measure(
    server: &Server,
    port: u16,
    config: &Arc<ClientConfig>,
    threads: usize,
    secs: u64,
) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_ticks(server.0.id());
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, done, config) = (stop.clone(), done.clone(), config.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if handshake(port, &config) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed).max(1) as f64;
    let ticks = (cpu_ticks(server.0.id()) - cpu_before) as f64;
    (n / elapsed, ticks * 10.0 / n)
}

fn handshake(port: u16, config: &Arc<ClientConfig>) -> bool {
    let Ok(mut sock) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let name = ServerName::try_from("localhost").expect("name");
    let mut conn = ClientConnection::new(config.clone(), name).expect("client");
    while conn.is_handshaking() {
        if conn.complete_io(&mut sock).is_err() {
            return false;
        }
    }
    // The server's verdict on the client certificate comes after the client's Finished; a
    // one-byte round trip would need a backend, so a clean handshake is what is counted.
    let _ = conn.writer().write_all(b"x");
    let _ = conn.complete_io(&mut sock);
    let mut buf = [0u8; 1];
    let _ = sock.read(&mut buf);
    true
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}
