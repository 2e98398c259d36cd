//! Client-mode `--proxy` (docs/behaviour.md §6.6) through real proxies started by the test:
//! tinyproxy for HTTP CONNECT (with Basic credentials) and microsocks for SOCKS5 (with and without
//! username/password, local and remote name resolution).

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::*;

const LOG_WAIT: Duration = Duration::from_secs(5);

/// A proxy process listening on 127.0.0.1; killed on drop.
struct ProxyProcess {
    child: Child,
    port: u16,
    /// Keeps the configuration file alive.
    _dir: TempDir,
}

impl ProxyProcess {
    fn spawn(program: &str, package: &str, args: &[String], port: u16, dir: TempDir) -> Self {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} ({e}): apt-get install {package}"));
        let mut p = ProxyProcess {
            child,
            port,
            _dir: dir,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        if !up {
            let status = p.child.try_wait();
            panic!("{program} is not listening on {addr} ({status:?})");
        }
        p
    }

    /// tinyproxy, with `BasicAuth user pass` when given.
    fn tinyproxy(basic_auth: Option<(&str, &str)>) -> ProxyProcess {
        let dir = TempDir::new();
        let port = free_port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nLogLevel Critical\n"
        );
        if let Some((user, pass)) = basic_auth {
            conf.push_str(&format!("BasicAuth {user} {pass}\n"));
        }
        let path = dir.write("tinyproxy.conf", conf);
        let args = ["-d".to_string(), "-c".into(), path.display().to_string()];
        ProxyProcess::spawn("tinyproxy", "tinyproxy", &args, port, dir)
    }

    /// microsocks, requiring `-u user -P pass` when given.
    fn microsocks(auth: Option<(&str, &str)>) -> ProxyProcess {
        let port = free_port();
        let mut args = vec![
            "-i".to_string(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        if let Some((user, pass)) = auth {
            args.extend(["-u".into(), user.into(), "-P".into(), pass.into()]);
        }
        ProxyProcess::spawn("microsocks", "microsocks", &args, port, TempDir::new())
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plain client is served end to end, and the pipe's outbound side is the proxy: the
/// tunnel went through it.
fn assert_served_via(d: &mut Daemon, addr: SocketAddr, proxy_port: u16) {
    let mut s = tcp_connect(addr);
    let port = s.local_addr().unwrap().port();
    s.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    if let Err(e) = std::io::Read::read_exact(&mut s, &mut back) {
        panic!("client not served through the proxy: {e}{}", d.describe());
    }
    assert_eq!(&back, b"hello");
    d.wait_log(
        &format!(
            "opening pipe: tcp:127.0.0.1:{port} [no tls] <-> tcp:127.0.0.1:{proxy_port} [CN=server,OU=servers,O=Acme] "
        ),
        LOG_WAIT,
    );
}

/// HTTP CONNECT through tinyproxy requiring Basic authentication: the URL's credentials
/// (percent-decoded) get through; without them the proxy's 407 is reported.
#[test]
fn http_connect_with_basic_credentials() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    let proxy = ProxyProcess::tinyproxy(Some(("alice", "s3cret")));
    let url = format!("http://alice:s3%63ret@127.0.0.1:{}", proxy.port);
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &["--proxy", &url]);
    // The password stays out of the log.
    d.wait_log(
        &format!("using proxy http://alice:xxxxx@127.0.0.1:{}", proxy.port),
        LOG_WAIT,
    );
    assert!(!d.stdout().contains("s3%63ret"), "{}", d.describe());
    assert_served_via(&mut d, addr, proxy.port);
    assert_eq!(srv.sni(), vec![Some("localhost".to_string())]);

    let anonymous = format!("http://127.0.0.1:{}", proxy.port);
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &["--proxy", &anonymous]);
    assert_dial_fails(
        &mut d,
        addr,
        "http_tunnel: failed proxying 407: 407 Proxy Authentication Required",
    );
}

/// The hidden alias `--connect-proxy` is the same flag: an open tinyproxy, default scheme
/// handling, and a target the proxy cannot reach reported with the proxy's status line.
#[test]
fn connect_proxy_alias_and_proxy_errors() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    let proxy = ProxyProcess::tinyproxy(None);
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let (mut d, addr) = start_client(&pki, &srv.target(), &["--connect-proxy", &url]);
    assert_served_via(&mut d, addr, proxy.port);

    let closed = free_port();
    let (mut d, addr) = start_client(
        &pki,
        &format!("127.0.0.1:{closed}"),
        &["--connect-proxy", &url],
    );
    assert_dial_fails(
        &mut d,
        addr,
        "http_tunnel: failed proxying 500: 500 Unable to connect",
    );
}

/// SOCKS5 through microsocks with username/password: right credentials tunnel, wrong ones
/// fail the dial.
#[test]
fn socks5_with_credentials() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    let proxy = ProxyProcess::microsocks(Some(("bob", "hunter2")));
    for scheme in ["socks5", "socks5h"] {
        let url = format!("{scheme}://bob:hunter2@127.0.0.1:{}", proxy.port);
        let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &["--proxy", &url]);
        assert_served_via(&mut d, addr, proxy.port);
    }
    let wrong = format!("socks5h://bob:wrong@127.0.0.1:{}", proxy.port);
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &["--proxy", &wrong]);
    assert_dial_fails(
        &mut d,
        addr,
        "socks5: username/password authentication failed",
    );
}

/// `socks5h://` hands the name to the proxy (which fails to resolve it and says so);
/// `socks5://` resolves it here first (and fails with the local lookup error, never asking
/// the proxy). Both reach a resolvable target.
#[test]
fn socks5_name_resolution_local_or_remote() {
    let pki = Pki::new();
    let srv = TlsServer::start(&pki.server, ClientAuth::Required(pki.ca.cert_der.clone()));
    let proxy = ProxyProcess::microsocks(None);
    let unknown = "doesnotexist.invalid:443";
    let remote = format!("socks5h://127.0.0.1:{}", proxy.port);
    let (mut d, addr) = start_client(
        &pki,
        unknown,
        &["--proxy", &remote, "--override-server-name", "localhost"],
    );
    assert_dial_fails(
        &mut d,
        addr,
        "socks5: connect to doesnotexist.invalid:443 failed: ",
    );
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &["--proxy", &remote]);
    assert_served_via(&mut d, addr, proxy.port);

    let local = format!("socks5://127.0.0.1:{}", proxy.port);
    let (mut d, addr) = start_client(
        &pki,
        unknown,
        &["--proxy", &local, "--override-server-name", "localhost"],
    );
    assert_dial_fails(&mut d, addr, "lookup doesnotexist.invalid: ");
    let (mut d, addr) = start_client(&pki, &srv.target_localhost(), &["--proxy", &local]);
    assert_served_via(&mut d, addr, proxy.port);
}
