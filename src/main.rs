//! ghostunnel: a TLS proxy with mutual authentication, drop-in compatible with Ghostunnel on
//! Linux. `run` reads like the lifecycle: every step happens here, numbered in the order it runs;
//! what a step needs from a back-end goes through `identity.rs` and `authz.rs`, never through here.

#![deny(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use ghostunnel::authz::{self, Authorizer};
use ghostunnel::certs::CertError;
use ghostunnel::config::{Config, Mode, StatusScheme};
use ghostunnel::identity::{self, IdentitySource};
use ghostunnel::lifecycle::{Announcer, Lifecycle, Phase};
use ghostunnel::metrics::Metrics;
use ghostunnel::net::{self, AddrKind, ListenError, Listener};
use ghostunnel::proxy::{Connector, Proxy};
use ghostunnel::reload::Reloader;
use ghostunnel::{
    check, cli, client, logging, report, sandbox, server, signals, status, systemd, tls, tunnel,
};

fn main() -> ExitCode {
    ghostunnel::memory::tune_allocator();
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    match run(args) {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

/// A startup failure, reported once: lines for the logger, then one line on stderr.
enum Failure {
    /// Parse stage (docs/behaviour.md §2.7.1): stderr only.
    Usage(String),
    /// Logger setup: stderr only.
    Logger(String),
    /// Later steps: the logged lines, then `error: <e>` on stderr.
    Startup {
        logged: Vec<String>,
        printed: String,
    },
}

impl Failure {
    /// Adds a log line: `prefix` and the printed message (the reference logs some startup
    /// failures twice).
    fn also_logged(self, prefix: &str) -> Failure {
        match self {
            Failure::Startup {
                mut logged,
                printed,
            } => {
                logged.push(format!("{prefix}{printed}"));
                Failure::Startup { logged, printed }
            }
            other => other,
        }
    }

    fn startup(logged: impl Into<String>, printed: impl Into<String>) -> Failure {
        Failure::Startup {
            logged: vec![logged.into()],
            printed: printed.into(),
        }
    }

    fn report(self) -> ExitCode {
        let j = logging::stderr_error_prefix();
        match self {
            Failure::Usage(msg) => eprintln!("{j}ghostunnel: error: {msg}"),
            Failure::Logger(msg) => eprintln!("{j}error: unable to set up logger: {msg}"),
            Failure::Startup { logged, printed } => {
                for line in logged {
                    log::error!("{line}");
                }
                eprintln!("{j}error: {printed}");
            }
        }
        ExitCode::from(1)
    }
}

fn run(args: Vec<std::ffi::OsString>) -> Result<ExitCode, Failure> {
    // 1. Parse the command line and run the parse-stage checks.
    let raw = match cli::parse_process_args(args).map_err(|e| Failure::Usage(e.usage_line()))? {
        cli::Parsed::Run(raw) => raw,
        cli::Parsed::Exit { text, stdout } => {
            if stdout {
                print!("{text}");
            } else {
                eprint!("{text}");
            }
            return Ok(ExitCode::SUCCESS);
        }
    };

    // 2. Logger. `--check` sets none: its report is the output, so the steps below log
    // nothing and a failure prints only its `error: <e>` line.
    let check = raw.check;
    if !check {
        logging::init(raw.quiet, raw.syslog).map_err(Failure::Logger)?;
    }
    log::info!("starting ghostunnel in {} mode", raw.mode_name());
    // Announced here, where the reference announces it; applied after the listeners are bound.
    if let Some(line) = raw.landlock_announcement() {
        log::info!("{line}");
    }

    // 3. Mode validation.
    let server = raw.mode_name() == "server";
    let config = raw.into_config().map_err(|e| match &e {
        // The reference's two lines and its bare message for a pattern that does not compile.
        cli::CliError::UriPattern(_, why) => Failure::Startup {
            logged: vec![
                e.to_string(),
                if server {
                    format!("error from server listen: {why}")
                } else {
                    format!("error: unable to build dialer: {why}")
                },
            ],
            printed: why.clone(),
        },
        _ => Failure::startup(format!("error: {e}"), e.to_string()),
    })?;
    let config = Arc::new(config);

    // 4. The identity source and the authorizer.
    let identity = identity::from_config(&config).map_err(cert_failure)?;
    let authz = authz::from_config(&config).map_err(|e| Failure::Startup {
        logged: e.logged,
        printed: e.printed,
    })?;
    log::info!("{}", identity.describe());

    // 5. Metrics (only when something observes them; otherwise nothing records) and the
    // connection accounting. The host name is read before the sandbox hides /proc.
    let hostname = status::hostname();
    let metrics = config.metrics_observed().then(|| {
        Arc::new(Metrics::new(
            &config.metrics.prefix,
            hostname.as_deref().unwrap_or_default(),
        ))
    });
    ghostunnel::memory::limit_arenas();
    let proxy = Proxy::new(config.max_concurrent_conns, metrics.clone());
    let https = https_client(&config)?;

    // 6. TLS contexts (credentials and trust loaded), the target resolved, the mode's
    // connector and backend check.
    let mode = mode_parts(&config, &identity, &authz, &proxy, https.clone())?;
    let reloader = Reloader::new(
        mode.contexts,
        identity.clone(),
        authz.clone(),
        metrics.clone(),
    );

    // 7. `--check` ends here: everything a start loads has loaded, and nothing is bound,
    // sandboxed, notified or started.
    if check {
        return check_report(&config, &*identity, &*authz);
    }

    // 8. The listener.
    let listener =
        Arc::new(Listener::bind(&config.listen).map_err(|e| listen_failure(&config, e))?);

    // 9. The status port. On failure the main listener goes too (a UNIX socket file would
    // otherwise stay behind).
    let status_listener = match &config.status {
        Some(status) => Some(Listener::bind(&status.addr).map(Arc::new).map_err(|e| {
            listener.unlink();
            Failure::from(ListenError::Status {
                server: matches!(config.mode, Mode::Server(_)),
                error: e,
            })
        })?),
        None => None,
    };

    // 10. The systemd notify socket, connected before the sandbox.
    let notifier = Arc::new(systemd::Notifier::from_env());

    // 11. The sandbox, on this thread before any other thread exists: everything later
    // (reloads, dials, the drain, back-end threads) must fit the plan.
    let plan = sandbox::Plan::from_config(&config, &*identity, &*authz, notifier.is_abstract());
    let sandbox = plan.apply();
    sandbox.log();

    // 12. Lifecycle and signal controller; the status server and metrics pushes start.
    let announcer = Announcer::new(notifier.clone(), proxy.clone(), summary(&config));
    let lifecycle = Arc::new(Lifecycle::new(announcer));
    let controller = Arc::new(signals::Controller::new(
        proxy.clone(),
        lifecycle.clone(),
        reloader.clone(),
        listener.clone(),
    ));
    if let (Some(status_listener), Some(status)) = (&status_listener, &config.status) {
        let info = status::StatusInfo {
            listen: config.listen.raw.clone(),
            target: config.target.raw.clone(),
            hostname,
            sandbox: sandbox.to_string(),
            connect_timeout: config.timeouts.connect,
            backend: mode.backend,
            tls: matches!(
                (status.scheme, &status.addr.kind),
                (
                    StatusScheme::None | StatusScheme::Https,
                    AddrKind::Tcp { .. }
                )
            ),
            reloader: reloader.clone(),
            shutdown: config.enable_shutdown.then(|| controller.clone()),
            proxy: proxy.clone(),
            metrics: metrics.clone().unwrap_or_else(|| {
                // Unreachable: `--status` makes metrics observed. A fresh registry keeps the
                // endpoint answering rather than panicking.
                Arc::new(Metrics::new(&config.metrics.prefix, ""))
            }),
        };
        if config.enable_pprof {
            ghostunnel::pprof::enable();
        }
        status::serve(status_listener.clone(), lifecycle.clone(), Arc::new(info))
            .map_err(thread_failure)?;
    }
    if let Some(m) = &metrics {
        if let Some(addr) = &config.metrics.graphite {
            log::info!("metrics enabled; reporting metrics via TCP to {addr}");
            report::start_graphite(addr.clone(), config.metrics.interval, m.clone())
                .map_err(thread_failure)?;
        }
        if let Some(url) = &config.metrics.url {
            log::info!("metrics enabled; reporting metrics via POST to {}", url.raw);
            report::start_url_push(url.clone(), https, config.metrics.interval, m.clone())
                .map_err(thread_failure)?;
        }
    }

    // 13. Signals, the reload timer, and the identity source's own updates.
    signals::start(controller.clone()).map_err(thread_failure)?;
    if let Some(every) = config.timed_reload {
        signals::start_timer(every, controller.clone()).map_err(thread_failure)?;
    }
    reloader.start().map_err(thread_failure)?;

    // 14. READY. The phase first: whoever takes the log line as readiness must find
    // `/_status` listening.
    lifecycle.enter(Phase::Listening);
    log::info!("listening for connections on {}", config.listen);
    if let Some(period) = systemd::watchdog_interval() {
        if let Err(e) = systemd::start_watchdog(notifier.clone(), period, proxy.clone()) {
            log::warn!("warning: unable to start the watchdog: {e}");
        }
    }

    // 15. Serve until shutdown.
    proxy.serve(&listener, mode.connector);

    // 16. Drain: the listener is closed (a UNIX socket file removed), pipes finish. The
    // status server keeps answering (`stopping`) during the drain; a UNIX status socket file
    // we created goes now, as the reference's does when its status server closes.
    listener.unlink();
    if let Some(l) = &status_listener {
        l.unlink();
    }
    drop(controller);
    drop(listener);
    log::info!("shutdown proxy, waiting for drain");
    let drained = match config.timeouts.shutdown {
        Some(limit) => proxy.wait_drained(Some(limit)),
        None => false,
    };
    if drained {
        Ok(ExitCode::SUCCESS)
    } else {
        log::error!("graceful shutdown timeout: forcing exit");
        Ok(ExitCode::from(1))
    }
}

/// What a mode contributes to the shared lifecycle.
struct ModeParts {
    connector: Arc<dyn Connector>,
    /// The reloadable TLS contexts, handed to the reloader.
    contexts: tls::Contexts,
    /// The `/_status` backend check.
    backend: status::BackendCheck,
}

/// Step 6 for either mode: the TLS contexts, the target resolved and logged, the connector.
fn mode_parts(
    config: &Arc<Config>,
    identity: &Arc<dyn IdentitySource>,
    authz: &Arc<dyn Authorizer>,
    proxy: &Arc<Proxy>,
    https: Option<Arc<rustls::ClientConfig>>,
) -> Result<ModeParts, Failure> {
    let timeout = config.timeouts.connect;
    match &config.mode {
        Mode::Server(opts) => {
            let tls = tls::server(config, &opts.auth, identity.clone(), authz.clone())
                .map_err(cert_failure)?;
            prepare_target(config)?;
            check_max_tls(config, "error trying to read CA bundle: ")
                .map_err(|f| f.also_logged("error from server listen: "))?;
            let tls = Arc::new(tls);
            let connector = server::Server {
                tls: tls.clone(),
                target: config.target.clone(),
                timeouts: config.timeouts,
                proxy_protocol: opts.proxy_protocol,
            };
            let target = config.target.clone();
            let backend = match opts.target_status.clone() {
                Some(url) => status::BackendCheck::TargetStatus {
                    url,
                    target,
                    https,
                    timeout,
                },
                None => status::BackendCheck::Dial { target, timeout },
            };
            Ok(ModeParts {
                connector: Arc::new(connector),
                contexts: tls::Contexts::Server(tls),
                backend,
            })
        }
        Mode::Client(opts) => {
            let name = match (&opts.override_server_name, &config.target.kind) {
                (Some(name), _) => name.clone(),
                (None, AddrKind::Tcp { host, .. }) => host.clone(),
                (None, _) => String::new(),
            };
            let server_name = ServerName::try_from(name.clone()).map_err(|e| {
                let e = format!("invalid server name '{name}': {e}");
                Failure::startup(format!("error: unable to build dialer: {e}"), e)
            })?;
            let tls = tls::client(
                config,
                &opts.verify,
                server_name,
                identity.clone(),
                authz.clone(),
            )
            .map_err(cert_failure)?;
            prepare_target(config)?;
            check_max_tls(config, "error: unable to build dialer: ")?;
            // Logged before it is checked, as the reference does.
            if let Some(p) = &opts.proxy {
                log::info!("using proxy {}", tunnel::redacted(&p.raw));
            }
            let tunnel = opts
                .proxy
                .as_ref()
                .map(|p| p.url.clone())
                .transpose()
                .map_err(|e| Failure::Startup {
                    logged: vec![
                        format!("error: error configuring proxy: {e}"),
                        format!("error: unable to build dialer: {e}"),
                    ],
                    printed: e,
                })?;
            let tls = Arc::new(tls);
            let connector = Arc::new(client::Client {
                tls: tls.clone(),
                target: config.target.clone(),
                timeouts: config.timeouts,
                proxy: tunnel,
            });
            Ok(ModeParts {
                connector: connector.clone(),
                contexts: tls::Contexts::Client(tls),
                backend: status::BackendCheck::TlsDial {
                    client: connector,
                    proxy: proxy.clone(),
                    timeout,
                },
            })
        }
    }
}

/// `<mode> proxying <listen> => <target>`, for systemd's `STATUS=`.
fn summary(config: &Config) -> String {
    let mode = match config.mode {
        Mode::Server(_) => "server",
        Mode::Client(_) => "client",
    };
    format!("{mode} proxying {} => {}", config.listen, config.target)
}

/// A thread that could not be started.
fn thread_failure(e: std::io::Error) -> Failure {
    Failure::startup(format!("error: {e}"), e.to_string())
}

/// The TLS client for `https://` in `--metrics-url` or `--target-status`, built (trust store
/// read) before the sandbox; `None` when neither uses https.
fn https_client(config: &Config) -> Result<Option<Arc<rustls::ClientConfig>>, Failure> {
    let flag = match &config.mode {
        Mode::Server(o) if o.target_status.as_ref().is_some_and(|u| u.https) => "--target-status",
        _ if config.metrics.url.as_ref().is_some_and(|u| u.https) => "--metrics-url",
        _ => return Ok(None),
    };
    tls::https_client(config).map(Some).map_err(|e| {
        let e = format!("{flag}: unable to set up https: {e}");
        Failure::startup(format!("error: {e}"), e)
    })
}

/// `--listen` could not be opened.
fn listen_failure(config: &Config, error: std::io::Error) -> Failure {
    let server = matches!(config.mode, Mode::Server(_));
    Failure::from(ListenError::Listen { server, error })
}

impl From<ListenError> for Failure {
    fn from(e: ListenError) -> Failure {
        Failure::Startup {
            logged: e.log_lines(),
            printed: e.to_string(),
        }
    }
}

/// `--check`, after the loading steps of a start succeeded: probes the listeners without
/// binding them (failing as the bind would), then prints the report to stdout and its
/// warnings to stderr. Exit 0.
fn check_report(
    config: &Config,
    identity: &dyn IdentitySource,
    authz: &dyn Authorizer,
) -> Result<ExitCode, Failure> {
    let listen = check::probe_listen(&config.listen).map_err(|e| listen_failure(config, e))?;
    let status = match &config.status {
        Some(status) => check::probe_listen(&status.addr).map_err(|e| {
            Failure::from(ListenError::Status {
                server: matches!(config.mode, Mode::Server(_)),
                error: e,
            })
        })?,
        None => None,
    };
    let now = std::time::SystemTime::now();
    let mut report = check::report(config, identity, authz, now).map_err(cert_failure)?;
    report.warnings.extend(listen.into_iter().chain(status));
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for line in &report.lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A certificate or trust-store load failure.
fn cert_failure(e: CertError) -> Failure {
    Failure::startup(
        format!("error: unable to load certificates: {e}"),
        e.to_string(),
    )
}

/// Resolves `--target` once at startup unless skipped (docs/behaviour.md §6.5), and logs it.
fn prepare_target(config: &Config) -> Result<(), Failure> {
    let via_proxy = matches!(&config.mode, Mode::Client(c) if c.proxy.is_some());
    if let AddrKind::Tcp { host, port } = &config.target.kind {
        if !config.skip_resolve && !via_proxy {
            net::resolve(host, port).map_err(|e| {
                Failure::startup(format!("error: invalid target address: {e}"), e.to_string())
            })?;
        }
    }
    log::info!("using target address {}", config.target);
    Ok(())
}

/// `--max-tls-version` is checked when the TLS configuration is built (docs/behaviour.md §2.6).
fn check_max_tls(config: &Config, log_prefix: &str) -> Result<(), Failure> {
    tls::versions(&config.tls.max_version)
        .map(drop)
        .map_err(|e| Failure::startup(format!("{log_prefix}{e}"), e))
}
