//! Logging destinations (docs/behaviour.md §13.1): `--syslog` framing on the local syslog socket,
//! with a severity per line, and journald-style `<N>` lines when stdout is the journal stream named
//! by `JOURNAL_STREAM`.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const LOG_WAIT: Duration = Duration::from_secs(5);

/// Runs the binary in a private mount namespace where the syslog socket paths (docs/behaviour.md
/// §13.1: `/dev/log`, then `/var/run/syslog`) lead into `dir`: a real `/dev/log` socket is hidden
/// and `dir` is mounted on `/var/run`, so `dir/syslog` is what the binary finds. Needs root (as CI
/// runs) for `unshare -m` and `mount`.
fn in_syslog_namespace(dir: &std::path::Path) -> Vec<String> {
    assert!(
        Command::new("unshare")
            .args(["-m", "true"])
            .status()
            .is_ok_and(|s| s.success()),
        "these tests need `unshare -m` (util-linux) and root, to give the binary its own /dev/log"
    );
    let script = r#"
set -e
dir=$1; shift
if [ -S /dev/log ] && [ ! -L /dev/log ]; then mount --bind /dev/null /dev/log; fi
mount --bind "$dir" /var/run
exec "$@"
"#;
    let dir = dir.display().to_string();
    ["unshare", "-m", "sh", "-c", script, "sh", &dir]
        .map(String::from)
        .to_vec()
}

/// Collects datagrams until one contains `needle`; panics after `timeout`.
fn recv_until(sock: &UnixDatagram, got: &mut Vec<String>, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    while !got.iter().any(|m| m.contains(needle)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no syslog message with {needle:?}; got {got:#?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

/// Checks `<PRI>Mmm dd hh:mm:ss <argv0>[<pid>]: [<pid>] YYYY/MM/DD hh:mm:ss.µµµµµµ <msg>\n`
/// and returns (PRI, msg).
fn parse_syslog(datagram: &str, pid: i32) -> (u8, String) {
    fn fail<T>(datagram: &str) -> T {
        panic!("bad syslog framing: {datagram:?}")
    }
    let rest = datagram.strip_prefix('<').unwrap_or_else(|| fail(datagram));
    let (pri, rest) = rest.split_once('>').unwrap_or_else(|| fail(datagram));
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    assert!(months.contains(&&rest[..3]), "month: {datagram:?}");
    let stamp = rest.as_bytes();
    let day_ok = (stamp[4] == b' ' || stamp[4].is_ascii_digit()) && stamp[5].is_ascii_digit();
    let shape = " dd:dd:dd ";
    let time_ok = stamp[6..16].iter().zip(shape.bytes()).all(|(c, s)| {
        if s == b'd' {
            c.is_ascii_digit()
        } else {
            *c == s
        }
    });
    assert!(
        stamp[3] == b' ' && day_ok && time_ok,
        "timestamp: {datagram:?}"
    );
    let tag = format!("{BIN}[{pid}]: ");
    let line = rest[16..]
        .strip_prefix(&tag)
        .unwrap_or_else(|| fail(datagram));
    let line = line.strip_suffix('\n').unwrap_or_else(|| fail(datagram));
    let msg = log_message(line, pid).unwrap_or_else(|| fail(datagram));
    (
        pri.parse().unwrap_or_else(|_| fail(datagram)),
        msg.to_string(),
    )
}

/// `--syslog`: every line goes to the syslog socket as facility daemon, tagged with argv[0]
/// and the pid, carrying the usual `[pid] timestamp` line; every line at severity info
/// (`<30>`, errors included, as the reference sends everything). Nothing on stdout.
/// A restarted syslog daemon (a new socket at the same path) keeps receiving.
#[test]
fn syslog_framing_and_severity() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let path = dir.join("syslog");
    let sock = UnixDatagram::bind(&path).unwrap();
    let closed = free_port();
    let (listen, addr) = free_addr();
    let mut d = Cmd::new("server")
        .wrapped(in_syslog_namespace(dir.path()))
        .args(["--syslog", "--listen", &listen])
        .args(["--target", &format!("127.0.0.1:{closed}")])
        .args(pki.server_cred_args())
        .arg("--allow-all")
        .start();
    let mut got = Vec::new();
    recv_until(
        &sock,
        &mut got,
        "listening for connections on",
        STARTUP_TIMEOUT,
    );
    let cfg = client_config(&pki.ca.cert_der, Some(&pki.client));
    let _ = try_echo(addr, cfg, b"x");
    recv_until(&sock, &mut got, "error on dial", Duration::from_secs(5));

    drop(sock);
    std::fs::remove_file(&path).unwrap();
    let sock = UnixDatagram::bind(&path).unwrap();
    d.signal(libc::SIGHUP);
    let mut after = Vec::new();
    recv_until(
        &sock,
        &mut after,
        "reloading configuration complete",
        LOG_WAIT,
    );
    d.signal(libc::SIGTERM);
    recv_until(&sock, &mut after, "shutting down", LOG_WAIT);
    d.wait_exit(Duration::from_secs(10));
    for m in &after {
        parse_syslog(m, d.pid());
    }

    let parsed: Vec<(u8, String)> = got.iter().map(|m| parse_syslog(m, d.pid())).collect();
    assert_eq!(
        parsed[0],
        (30, "starting ghostunnel in server mode".to_string())
    );
    assert!(
        parsed.contains(&(30, format!("listening for connections on {listen}"))),
        "{parsed:#?}"
    );
    let dial = parsed
        .iter()
        .find(|(_, m)| m.starts_with("error on dial: "))
        .unwrap();
    assert_eq!(
        dial.1,
        format!("error on dial: dial tcp 127.0.0.1:{closed}: connect: connection refused")
    );
    assert_eq!(dial.0, 30, "error lines keep the reference's severity info");
    assert_eq!(d.stdout(), "", "nothing is logged to stdout with --syslog");
}

/// `--syslog` without a reachable syslog socket is a startup error (docs/behaviour.md §13.1).
#[test]
fn syslog_unreachable_is_a_startup_error() {
    let pki = Pki::new();
    let empty = TempDir::new();
    let o = Cmd::new("server")
        .wrapped(in_syslog_namespace(empty.path()))
        .args([
            "--syslog",
            "--listen",
            "127.0.0.1:0",
            "--target",
            "127.0.0.1:1",
        ])
        .args(pki.server_cred_args())
        .arg("--allow-all")
        .run(Duration::from_secs(10));
    o.assert_code(1);
    assert_eq!(
        o.stderr,
        "error: unable to set up logger: Unix syslog delivery error\n",
        "{}",
        o.describe()
    );
}

/// stdout connected to the journal (its `dev:inode` is `JOURNAL_STREAM`): `<N>` priority
/// prefixes (sd-daemon(3)) and no pid or timestamp of ours, so journald's own metadata is the
/// only copy and `journalctl -p warning` selects the failures.
#[test]
fn journal_stream_gets_priority_prefixes() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let out_path = dir.join("stdout");
    let out = File::create(&out_path).unwrap();
    let meta = out.metadata().unwrap();
    let closed = free_port();
    let (listen, addr) = free_addr();
    let mut child = Command::new(BIN)
        .args(["server", "--listen", &listen])
        .args(["--target", &format!("127.0.0.1:{closed}")])
        .args(pki.server_cred_args())
        .arg("--allow-all")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&out_path).unwrap();
    let wait = |needle: &str| {
        let seen = eventually(STARTUP_TIMEOUT, || text().contains(needle));
        assert!(seen, "{needle:?} not logged:\n{}", text());
    };
    wait(READY_LINE);
    // A failed dial (error) and a failed handshake (warning).
    let _ = try_echo(
        addr,
        client_config(&pki.ca.cert_der, Some(&pki.client)),
        b"x",
    );
    wait("error on dial");
    let mut plain = tcp_connect(addr);
    let port = plain.local_addr().unwrap().port();
    std::io::Write::write_all(&mut plain, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = read_to_end_lossy(&mut plain);
    wait("error on TLS handshake");
    // SAFETY: kill(2) on our own, not yet reaped child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    child.wait().unwrap();

    let log = text();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "<6>starting ghostunnel in server mode", "{log}");
    assert!(lines.contains(&format!("<6>listening for connections on {listen}").as_str()));
    assert!(
        lines.contains(
            &format!("<3>error on dial: dial tcp 127.0.0.1:{closed}: connect: connection refused")
                .as_str()
        ),
        "{log}"
    );
    let handshake = format!("<4>error on TLS handshake from 127.0.0.1:{port}: ");
    assert!(lines.iter().any(|l| l.starts_with(&handshake)), "{log}");
    assert!(
        lines.contains(&"<6>received terminated, shutting down"),
        "{log}"
    );
    for line in &lines {
        let pri = line.strip_prefix('<').and_then(|l| l.split_once('>'));
        assert!(
            matches!(pri, Some((n, msg)) if n.len() == 1 && !msg.starts_with('[')),
            "not a journal line: {line:?}"
        );
    }
}

/// A startup failure with stdout and stderr on the journal stream (as systemd connects them):
/// the logged line and the `error:` line on stderr both carry `<3>`, so `journalctl -p err`
/// shows why the unit failed.
#[test]
fn journal_stream_startup_failure_is_an_error() {
    let dir = TempDir::new();
    let out_path = dir.join("journal");
    let out = File::create(&out_path).unwrap();
    let meta = out.metadata().unwrap();
    let status = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--target",
            "127.0.0.1:1",
        ])
        .args(["--keystore", "/nonexistent/server.pem", "--allow-all"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(&out_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let failure = "error: unable to load certificates: ";
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("<3>{failure}"))),
        "{log}"
    );
    assert!(
        lines.last().is_some_and(|l| l.starts_with("<3>error: ")),
        "the stderr line: {log}"
    );
}

/// A `JOURNAL_STREAM` naming some other stream (inherited from a parent whose output went
/// to the journal) leaves the normal format.
#[test]
fn journal_stream_of_another_file_is_ignored() {
    let pki = Pki::new();
    let (listen, _) = free_addr();
    let d = Cmd::new("server")
        .args(["--listen", &listen, "--target", "127.0.0.1:1"])
        .args(pki.server_cred_args())
        .arg("--allow-all")
        .env("JOURNAL_STREAM", "1:2")
        .spawn();
    let out = d.stdout();
    let first = out.lines().next().unwrap();
    assert_eq!(
        log_message(first, d.pid()),
        Some("starting ghostunnel in server mode"),
        "{out}"
    );
    assert!(!out.contains("<6>"), "{out}");
}
