//! The Landlock sandbox (docs/behaviour.md §11): a [`Plan`] derived from the validated
//! configuration, applied best-effort on the main thread before any other thread exists.
//!
//! Owns building and applying the ruleset from a `Plan`; never reads flags. Listeners are bound
//! before the sandbox, so the plan grants no TCP bind at all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};

use crate::authz::Authorizer;
use crate::config::{Config, Mode};
use crate::identity::IdentitySource;
use crate::net::AddrKind;

/// The ABI we ask for; older kernels get the subset they support.
const ABI_WANTED: ABI = ABI::V7;

/// What the process may still touch once sandboxed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Read-only (read file, read dir): certificate directories, trust stores, resolver files.
    pub read_only: BTreeSet<PathBuf>,
    /// Directories of UNIX sockets we created and must remove at shutdown.
    pub remove_in: BTreeSet<PathBuf>,
    /// Directories a back-end keeps state in (read, write, create, remove): the ACME storage.
    pub read_write: BTreeSet<PathBuf>,
    /// TCP ports we may connect to: targets and DNS.
    pub connect: BTreeSet<u16>,
    /// TCP ports a back-end may bind besides the listeners bound before the sandbox: the ACME
    /// challenge port when it is not the listen port.
    pub bind: BTreeSet<u16>,
    /// Whether abstract UNIX sockets must stay reachable (an abstract `NOTIFY_SOCKET`).
    pub allow_abstract_unix: bool,
    /// Why Landlock is not applied at all (`--disable-landlock`, or a back-end that cannot
    /// work inside it); `None` applies the plan.
    pub disabled: Option<Disabled>,
}

/// Why the sandbox is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disabled {
    /// `--disable-landlock`: the operator's choice, not logged.
    ByFlag,
    /// A back-end needs access no plan can describe; the reason is logged as a warning.
    Needed(String),
}

/// What applying the plan achieved: the line logged at startup and shown as `sandbox` in
/// `/_status`. The result, not its text, says whether it is a warning.
#[derive(Debug)]
pub enum Outcome {
    /// Landlock restricts the process (fully, partially, or not at all on an old kernel).
    Applied(RulesetStatus, BTreeSet<u16>),
    /// Not applied, on purpose.
    Disabled(Disabled),
    /// Landlock was asked for but could not be set up; the process runs unsandboxed.
    Failed(landlock::RulesetError),
}

impl Outcome {
    /// Whether the outcome is logged as a warning.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Outcome::Failed(_) | Outcome::Disabled(Disabled::Needed(_))
        )
    }

    /// Logs the outcome at its level; a sandbox disabled by flag logs nothing.
    pub fn log(&self) {
        match self {
            Outcome::Disabled(Disabled::ByFlag) => {}
            o if o.is_warning() => log::warn!("{o}"),
            o => log::info!("{o}"),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Applied(RulesetStatus::FullyEnforced, connect) => write!(
                f,
                "landlock: fully enforced (filesystem, network: connect to ports {connect:?} only, scoping)"
            ),
            Outcome::Applied(RulesetStatus::PartiallyEnforced, _) => f.write_str(
                "landlock: partially enforced (the kernel lacks some Landlock features)",
            ),
            Outcome::Applied(RulesetStatus::NotEnforced, _) => {
                f.write_str("landlock: not enforced (Landlock is unavailable in this kernel)")
            }
            Outcome::Disabled(Disabled::ByFlag) => {
                f.write_str("landlock: disabled by --disable-landlock")
            }
            Outcome::Disabled(Disabled::Needed(why)) => {
                write!(f, "warning: landlock disabled: {why}")
            }
            Outcome::Failed(e) => write!(f, "warning: unable to set up landlock: {e}"),
        }
    }
}

impl Plan {
    /// Derives the plan from the configuration and what the identity source and the
    /// authorizer ask for. `abstract_notify` says the systemd notify socket is abstract.
    pub fn from_config(
        config: &Config,
        identity: &dyn IdentitySource,
        authz: &dyn Authorizer,
        abstract_notify: bool,
    ) -> Plan {
        let mut plan = Plan::default();
        if config.disable_landlock {
            plan.disabled = Some(Disabled::ByFlag);
        }
        identity.sandbox(&mut plan);
        authz.sandbox(&mut plan);
        // The CA file: its directory (so rename rotation plus reload works) and, for a
        // symlink, the directory of the resolved target.
        if let Some(file) = config.cacert.as_deref() {
            plan.add_file_dir(file);
        }
        if config.cacert.is_none() {
            // The system trust store, re-read on reload.
            for dir in [
                "/etc/ssl",
                "/etc/pki",
                "/usr/share/ca-certificates",
                "/usr/local/share/ca-certificates",
                "/var/lib/ca-certificates",
            ] {
                plan.read_only.insert(dir.into());
            }
            if let Some(file) = &config.system_trust.file {
                plan.add_file_dir(file);
            }
            if let Some(dirs) = &config.system_trust.dir {
                for dir in std::env::split_paths(dirs).filter(|d| !d.as_os_str().is_empty()) {
                    plan.read_only.insert(dir);
                }
            }
        }
        // Name resolution at dial time: the resolver's configuration and NSS modules.
        for path in [
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/nsswitch.conf",
            "/etc/gai.conf",
            "/etc/host.conf",
        ] {
            plan.read_only.insert(path.into());
        }
        // The UNIX listeners' socket files are removed at shutdown.
        let status = config.status.as_ref().map(|s| &s.addr.kind);
        for kind in [Some(&config.listen.kind), status].into_iter().flatten() {
            if let AddrKind::Unix(path) = kind {
                plan.remove_in.insert(parent(path));
            }
        }
        // Connect: the target port, and DNS over TCP.
        let target_is_tcp = matches!(config.target.kind, AddrKind::Tcp { .. });
        if let Some(port) = config.target.tcp_port() {
            plan.connect.insert(port);
        }
        if target_is_tcp {
            plan.connect.insert(53);
        }
        if let Mode::Client(opts) = &config.mode {
            // An unusable URL has already failed startup before the sandbox is planned.
            let proxy = opts.proxy.as_ref().and_then(|p| p.url.as_ref().ok());
            if let Some(port) = proxy.and_then(|p| p.addr.tcp_port()) {
                plan.connect.insert(port);
            }
        }
        // Metrics push: the collectors' ports, and DNS for their names. `--target-status` needs
        // nothing more: its request goes through the backend dialer, to `--target`'s port.
        let pushes = [
            config.metrics.graphite.as_ref(),
            config.metrics.url.as_ref().map(|u| &u.addr),
        ];
        for addr in pushes.into_iter().flatten() {
            if let Some(port) = addr.tcp_port() {
                plan.connect.insert(port);
                plan.connect.insert(53);
            }
        }
        // The status port's process figures (`process_*`, `/debug/pprof/goroutine`) read the
        // process's own `/proc` entry; the magic links in it (`root`, `cwd`, `fd/*`) resolve
        // outside it and stay denied.
        if config.status.is_some() {
            plan.read_only
                .insert(PathBuf::from(format!("/proc/{}", std::process::id())));
        }
        plan.allow_abstract_unix = abstract_notify;
        plan
    }

    /// Grants reading `file`'s directory (so that a file renamed into place is readable on a
    /// reload) and, for a symlink, the directory of its target as resolved now.
    pub fn add_file_dir(&mut self, file: &Path) {
        self.read_only.insert(parent(file));
        if let Ok(real) = std::fs::canonicalize(file) {
            self.read_only.insert(parent(&real));
        }
    }

    /// Turns Landlock off, for a back-end that cannot work inside it; `why` is logged as a
    /// warning and shown in `/_status`. `--disable-landlock` wins (nothing is logged then).
    pub fn disable(&mut self, why: impl Into<String>) {
        if self.disabled.is_none() {
            self.disabled = Some(Disabled::Needed(why.into()));
        }
    }

    /// Applies the plan to the calling thread and every thread it starts later, unless it is
    /// disabled. Must run before any other thread exists.
    pub fn apply(&self) -> Outcome {
        if let Some(why) = &self.disabled {
            return Outcome::Disabled(why.clone());
        }
        match self.try_apply() {
            Ok(status) => Outcome::Applied(status, self.connect.clone()),
            Err(e) => Outcome::Failed(e),
        }
    }

    fn try_apply(&self) -> Result<RulesetStatus, landlock::RulesetError> {
        let abi = ABI_WANTED;
        let read = AccessFs::from_read(abi);
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(AccessNet::from_all(abi))?;
        let mut scopes = Scope::from_all(abi);
        if self.allow_abstract_unix {
            scopes.remove(Scope::AbstractUnixSocket);
        }
        ruleset = ruleset.scope(scopes)?;
        let existing = |set: &BTreeSet<PathBuf>| {
            set.iter()
                .filter(|p| p.exists())
                .cloned()
                .collect::<Vec<_>>()
        };
        let created =
            ruleset
                .create()?
                .add_rules(path_beneath_rules(existing(&self.read_only), read))?
                .add_rules(path_beneath_rules(
                    existing(&self.remove_in),
                    read | AccessFs::RemoveFile,
                ))?
                .add_rules(path_beneath_rules(nss_dirs(), read))?
                .add_rules(path_beneath_rules(
                    existing(&self.read_write),
                    AccessFs::from_all(abi),
                ))?
                .add_rules(self.connect.iter().map(|&p| {
                    Ok::<_, landlock::RulesetError>(NetPort::new(p, AccessNet::ConnectTcp))
                }))?
                .add_rules(self.bind.iter().map(|&p| {
                    Ok::<_, landlock::RulesetError>(NetPort::new(p, AccessNet::BindTcp))
                }))?;
        Ok(created.restrict_self()?.ruleset)
    }
}

/// Where glibc finds NSS modules and their libraries, for name resolution at dial time.
fn nss_dirs() -> Vec<PathBuf> {
    ["/lib", "/lib64", "/usr/lib", "/usr/lib64"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;
    use crate::cli::{self, Parsed};

    fn plan(args: &[&str], notify: Option<&str>) -> Plan {
        plan_env(args, notify, &[])
    }

    fn plan_env(args: &[&str], notify: Option<&str>, vars: &[(&str, &str)]) -> Plan {
        let args = args.iter().map(OsString::from).collect();
        let env = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let Ok(Parsed::Run(raw)) = cli::parse(args, &env) else {
            panic!("parse")
        };
        let config = raw.into_config().expect("valid");
        let identity = crate::identity::from_config(&config).expect("identity");
        let authz = crate::authz::from_config(&config).expect("authorizer");
        let abstract_notify = notify.is_some_and(|s| s.starts_with('@'));
        Plan::from_config(&config, &*identity, &*authz, abstract_notify)
    }

    /// The Workload API agent: its TCP port, or its socket's directory; a directory missing at
    /// startup is not granted and the rest of the plan stands.
    #[cfg(feature = "spiffe")]
    #[test]
    fn workload_api_grants() {
        let base = ["client", "--listen=localhost:1", "--target=h:2"];
        let tcp = plan(
            &[&base[..], &["--use-workload-api-addr=tcp://127.0.0.1:8081"]].concat(),
            None,
        );
        assert!(tcp.connect.contains(&8081), "{tcp:?}");
        let dir = std::env::temp_dir();
        let unix = format!(
            "--use-workload-api-addr=unix://{}/agent.sock",
            dir.display()
        );
        let unix = plan(&[&base[..], &[unix.as_str()]].concat(), None);
        assert!(unix.read_only.contains(&dir), "{unix:?}");
        let missing = plan(
            &[
                &base[..],
                &["--use-workload-api-addr=unix:///nonexistent-gt-dir/agent.sock"],
            ]
            .concat(),
            None,
        );
        assert!(!missing.read_only.contains(Path::new("/nonexistent-gt-dir")));
        assert_eq!(missing.disabled, None);
    }

    /// `SSL_CERT_FILE=` (set but empty) is an unset variable: it used to grant read access to
    /// the working directory (the "parent" of an empty path), while the trust store ignored it.
    #[test]
    fn empty_ssl_cert_variables_grant_nothing() {
        let args = [
            "server",
            "--listen=:8443",
            "--target=localhost:8080",
            "--keystore=/k/s.p12",
            "--allow-all",
        ];
        let p = plan_env(&args, None, &[("SSL_CERT_FILE", ""), ("SSL_CERT_DIR", "")]);
        assert_eq!(p.read_only, plan(&args, None).read_only);
        assert!(!p.read_only.contains(Path::new(".")), "{:?}", p.read_only);
        let p = plan_env(
            &args,
            None,
            &[("SSL_CERT_FILE", "/b/ca.pem"), ("SSL_CERT_DIR", "/d1::/d2")],
        );
        for dir in ["/b", "/d1", "/d2"] {
            assert!(
                p.read_only.contains(Path::new(dir)),
                "{dir}: {:?}",
                p.read_only
            );
        }
        assert!(!p.read_only.contains(Path::new(".")), "{:?}", p.read_only);
    }

    #[test]
    fn server_plan_grants_cert_dirs_the_target_port_and_dns_only() {
        let p = plan(
            &[
                "server",
                "--listen=unix:/run/gt/in.sock",
                "--target=localhost:8080",
                "--cert=/etc/gt/c.pem",
                "--key=/keys/k.pem",
                "--cacert=/etc/ca/ca.pem",
                "--allow-all",
            ],
            None,
        );
        for dir in ["/etc/gt", "/keys", "/etc/ca"] {
            assert!(
                p.read_only.contains(Path::new(dir)),
                "{dir} in {:?}",
                p.read_only
            );
        }
        assert!(
            !p.read_only.contains(Path::new("/etc/ssl")),
            "no system store with --cacert"
        );
        assert_eq!(p.remove_in, BTreeSet::from([PathBuf::from("/run/gt")]));
        assert_eq!(p.connect, BTreeSet::from([53, 8080]));
        assert!(!p.allow_abstract_unix);
    }

    #[test]
    fn unix_target_needs_no_network_and_system_store_is_readable() {
        let p = plan(
            &[
                "server",
                "--listen=:8443",
                "--target=unix:/run/app.sock",
                "--keystore=/k/s.p12",
                "--allow-all",
            ],
            None,
        );
        assert!(p.connect.is_empty(), "{:?}", p.connect);
        assert!(p.remove_in.is_empty());
        assert!(p.read_only.contains(Path::new("/etc/ssl")));
    }

    #[test]
    fn client_plan_adds_the_proxy_port_and_keeps_abstract_notify_reachable() {
        let p = plan(
            &[
                "client",
                "--listen=localhost:8001",
                "--target=remote:443",
                "--keystore=/k/c.pem",
                "--proxy=socks5://127.0.0.1",
            ],
            Some("@notify"),
        );
        assert_eq!(p.connect, BTreeSet::from([53, 443, 1080]));
        assert!(p.allow_abstract_unix);
        assert!(
            !plan(
                &[
                    "client",
                    "--listen=localhost:1",
                    "--target=r:443",
                    "--keystore=/k/c.pem"
                ],
                Some("/run/n")
            )
            .allow_abstract_unix
        );
    }

    #[test]
    fn a_unix_status_socket_may_be_removed_at_shutdown() {
        let p = plan(
            &[
                "server",
                "--listen=:8443",
                "--target=localhost:8080",
                "--keystore=/k/s.p12",
                "--allow-all",
                "--status=unix:/run/gt-status/s.sock",
            ],
            None,
        );
        assert_eq!(
            p.remove_in,
            BTreeSet::from([PathBuf::from("/run/gt-status")])
        );
    }

    #[test]
    fn metrics_push_ports_are_planned_and_target_status_needs_none() {
        let p = plan(
            &[
                "server",
                "--listen=:8443",
                "--target=unix:/run/app.sock",
                "--keystore=/k/s.p12",
                "--allow-all",
                "--metrics-graphite=127.0.0.1:2003",
                "--metrics-url=https://collector.example/push",
                "--target-status=http://localhost:9999/health",
            ],
            None,
        );
        // 9999 is only the Host header: the check dials the (UNIX) target.
        assert_eq!(p.connect, BTreeSet::from([53, 443, 2003]));
        assert!(p.remove_in.is_empty(), "{:?}", p.remove_in);
        let p = plan(
            &[
                "client",
                "--listen=localhost:8001",
                "--target=remote:8443",
                "--keystore=/k/c.pem",
                "--metrics-url=http://127.0.0.1:8125",
            ],
            None,
        );
        assert_eq!(p.connect, BTreeSet::from([53, 8125, 8443]));
    }

    #[test]
    fn a_back_end_that_needs_no_landlock_gets_a_warning_with_its_reason_but_the_flag_wins() {
        let mut p = Plan::default();
        p.disable("the PKCS#11 module needs device access");
        let outcome = p.apply();
        assert!(outcome.is_warning());
        assert_eq!(
            outcome.to_string(),
            "warning: landlock disabled: the PKCS#11 module needs device access"
        );
        let mut p = Plan {
            disabled: Some(Disabled::ByFlag),
            ..Plan::default()
        };
        p.disable("ignored");
        let outcome = p.apply();
        assert!(!outcome.is_warning());
        assert_eq!(
            outcome.to_string(),
            "landlock: disabled by --disable-landlock"
        );
    }

    /// The child half of `network_rules_refuse_unplanned_ports`: sandboxes this process and
    /// reports through its exit code. Does nothing unless the parent test started it.
    #[test]
    fn network_child() {
        let Ok(ports) = std::env::var("GT_SANDBOX_CHILD_PORTS") else {
            return;
        };
        let (allowed, denied) = ports.split_once(',').expect("two ports");
        let (allowed, denied): (u16, u16) = (allowed.parse().unwrap(), denied.parse().unwrap());
        let plan = Plan {
            connect: BTreeSet::from([allowed]),
            ..Plan::default()
        };
        if !matches!(
            plan.apply(),
            Outcome::Applied(RulesetStatus::FullyEnforced, _)
        ) {
            std::process::exit(3);
        }
        let connect = |port| std::net::TcpStream::connect(("127.0.0.1", port));
        let ok = connect(allowed).is_ok();
        let refused =
            connect(denied).is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
        std::process::exit(if ok && refused { 0 } else { 1 });
    }

    /// Landlock's network rules, applied by `Plan::apply` in a separate process: a connection
    /// to the planned port works, one to any other port is refused with EACCES although a
    /// listener is there.
    #[test]
    fn network_rules_refuse_unplanned_ports() {
        let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let denied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ports = format!(
            "{},{}",
            allowed.local_addr().unwrap().port(),
            denied.local_addr().unwrap().port()
        );
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sandbox::tests::network_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GT_SANDBOX_CHILD_PORTS", ports)
            .status()
            .unwrap();
        match status.code() {
            Some(3) => eprintln!("Landlock network rules are not enforced on this kernel: skipped"),
            code => assert_eq!(
                code,
                Some(0),
                "the sandboxed child could reach an unplanned port"
            ),
        }
    }
}
