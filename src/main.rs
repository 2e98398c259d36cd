//! ghostunnel: a TLS proxy with mutual authentication, drop-in compatible with Ghostunnel on
//! Linux. `run` reads like the lifecycle of SPEC 1: every step happens here, in order.

#![deny(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rustls::pki_types::ServerName;

use ghostunnel::config::{Config, IdentitySource, Mode, StatusScheme};
use ghostunnel::metrics::Metrics;
use ghostunnel::net::{self, AddrKind, Listener};
use ghostunnel::proxy::{Connector, Proxy};
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
    /// Parse stage (SPEC 2.7.1): stderr only.
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
    fn startup(logged: impl Into<String>, printed: impl Into<String>) -> Failure {
        Failure::Startup {
            logged: vec![logged.into()],
            printed: printed.into(),
        }
    }

    fn report(self) -> ExitCode {
        let j = logging::stderr_error_prefix();
        match self {
            Failure::Usage(msg) => eprintln!("{j}ghostunnel: error: {msg}, try --help"),
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
    // 1-2. Parse the command line and run the parse-stage checks.
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let raw = match cli::parse(args, &env).map_err(|e| Failure::Usage(e.to_string()))? {
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

    // 4-5. Logger. `--check` sets none: its report is the output, so the steps below log
    // nothing and a failure prints only its `error: <e>` line.
    let check = raw.check;
    if !check {
        logging::init(raw.quiet, raw.syslog).map_err(Failure::Logger)?;
    }
    log::info!("starting ghostunnel in {} mode", raw.mode_name());

    // 8. Mode validation.
    let config = raw
        .into_config()
        .map_err(|e| Failure::startup(format!("error: {e}"), e.to_string()))?;
    let config = Arc::new(config);

    // 9-12. Credentials, target and TLS contexts; then the listener.
    log::info!(
        "{}",
        match config.identity {
            IdentitySource::Keystore { .. } => "using keystore file on disk as certificate source",
            IdentitySource::CertKey { .. } => "using cert/key files on disk as certificate source",
            IdentitySource::None => "no cert source configured -- running without certificate",
        }
    );
    // Read before the sandbox hides /proc.
    let hostname = status::hostname();
    // Metrics exist only when something observes them (SPEC 7.5); otherwise nothing records.
    let metrics = config.metrics_observed().then(|| {
        Arc::new(Metrics::new(
            &config.metrics.prefix,
            hostname.as_deref().unwrap_or_default(),
        ))
    });
    ghostunnel::memory::limit_arenas();
    let proxy = Proxy::new(config.max_concurrent_conns, metrics.clone());
    let https = https_client(&config)?;
    let parts = match &config.mode {
        Mode::Server(opts) => {
            let tls = tls::server(config.clone(), &opts.auth).map_err(cert_failure)?;
            prepare_target(&config)?;
            check_max_tls(&config, "error trying to read CA bundle: ")?;
            let https = https.clone();
            let tls = Arc::new(tls);
            let connector = server::Server {
                tls: tls.clone(),
                target: config.target.clone(),
                timeouts: config.timeouts,
                proxy_protocol: opts.proxy_protocol,
            };
            let (target, connect) = (config.target.clone(), config.timeouts.connect);
            let backend_check: Box<BackendCheck> = match opts.target_status.clone() {
                Some(url) => Box::new(move || {
                    let dial = || net::dial(&target, Instant::now() + connect);
                    report::target_status(&url, dial, https.as_ref(), connect)
                }),
                None => Box::new(move || {
                    net::dial(&target, Instant::now() + connect)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }),
            };
            let (reloader, status_tls, identity) = follow_reloads(tls, metrics.clone());
            ModeParts {
                connector: Arc::new(connector),
                reloader,
                backend_check,
                status_tls,
                identity,
            }
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
            let tls =
                tls::client(config.clone(), &opts.verify, server_name).map_err(cert_failure)?;
            prepare_target(&config)?;
            check_max_tls(&config, "error: unable to build dialer: ")?;
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
            if let Some(p) = &opts.proxy {
                log::info!("using proxy {}", tunnel::redacted(&p.raw));
            }
            let tls = Arc::new(tls);
            let connector = Arc::new(client::Client {
                tls: tls.clone(),
                target: config.target.clone(),
                timeouts: config.timeouts,
                proxy: tunnel,
            });
            let (dialer, connect, p) = (connector.clone(), config.timeouts.connect, proxy.clone());
            let (reloader, status_tls, identity) = follow_reloads(tls, metrics.clone());
            ModeParts {
                connector,
                reloader,
                backend_check: Box::new(move || {
                    dialer.dial(Instant::now() + connect, &p).map(drop)
                }),
                status_tls,
                identity,
            }
        }
    };

    // `--check` ends here: everything a start loads has loaded, and nothing is bound, sandboxed,
    // notified or started.
    if check {
        return check_report(&config);
    }

    // 12. The listener.
    let listener =
        Arc::new(Listener::bind(&config.listen).map_err(|e| listen_failure(&config, &e))?);

    if let Some(m) = &metrics {
        m.set_cert_not_after((parts.identity)().1);
    }

    // 13. The status port. On failure the main listener goes too (a UNIX socket file would
    // otherwise stay behind).
    let status_listener = match &config.status {
        Some(status) => Some(Listener::bind(&status.addr).map(Arc::new).map_err(|e| {
            listener.unlink();
            status_failure(&e)
        })?),
        None => None,
    };

    // Connect the notify socket before the sandbox.
    let notifier = Arc::new(systemd::Notifier::from_env());

    // 6. The sandbox, on this thread before any other thread exists: everything later
    // (reloads, dials, the drain) must fit the plan.
    let sandbox = if config.disable_landlock {
        "landlock: disabled by --disable-landlock".to_string()
    } else {
        log::info!("setting up landlock rules to limit process privileges");
        let notify = std::env::var("NOTIFY_SOCKET").ok();
        let state = sandbox::Plan::from_config(&config, notify.as_deref()).apply();
        if state.starts_with("warning:") {
            log::warn!("{state}");
        } else {
            log::info!("{state}");
        }
        state
    };

    // 14-16. Serve: status port, READY, signal handling and the reload timer.
    let summary = format!(
        "{} proxying {} => {}",
        if matches!(config.mode, Mode::Server(_)) {
            "server"
        } else {
            "client"
        },
        config.listen,
        config.target
    );
    let (sd, counted) = (notifier.clone(), proxy.clone());
    let lifecycle = Arc::new(status::Lifecycle::new(Box::new(move |phase| {
        match phase {
            status::Phase::Listening => sd.send("READY=1"),
            status::Phase::Reloading => sd.reloading(),
            status::Phase::Stopping => sd.send("STOPPING=1"),
            status::Phase::Initializing => return,
        }
        let open = counted.open_connections();
        sd.send(&format!(
            "STATUS={} | {summary} | {open} open connections",
            phase.as_str()
        ));
    })));
    let controller = Arc::new(signals::Controller::new(
        proxy.clone(),
        lifecycle.clone(),
        parts.reloader,
        listener.clone(),
    ));
    if let (Some(status_listener), Some(status)) = (&status_listener, &config.status) {
        let shutdown_controller = controller.clone();
        let info = status::StatusInfo {
            listen: config.listen.raw.clone(),
            target: config.target.raw.clone(),
            hostname,
            sandbox,
            connect_timeout: config.timeouts.connect,
            backend_check: parts.backend_check,
            tls: match (status.scheme, &status.addr.kind) {
                (StatusScheme::None | StatusScheme::Https, AddrKind::Tcp { .. }) => {
                    Some(parts.status_tls)
                }
                _ => None,
            },
            shutdown: config
                .enable_shutdown
                .then(|| -> Box<dyn Fn() + Send + Sync> {
                    Box::new(move || shutdown_controller.shutdown("shutdown request processing"))
                }),
            identity: parts.identity,
            open_connections: {
                let p = proxy.clone();
                Box::new(move || p.open_connections())
            },
            metrics: metrics.clone().unwrap_or_else(|| {
                // Unreachable: `--status` makes metrics observed. A fresh registry keeps the
                // endpoint answering rather than panicking.
                Arc::new(Metrics::new(&config.metrics.prefix, ""))
            }),
        };
        status::serve(status_listener.clone(), lifecycle.clone(), Arc::new(info))
            .map_err(|e| Failure::startup(format!("error: {e}"), e.to_string()))?;
    }
    if let Some(m) = &metrics {
        if let Some(addr) = &config.metrics.graphite {
            log::info!("metrics enabled; reporting metrics via TCP to {addr}");
            report::start_graphite(addr.clone(), config.metrics.interval, m.clone())
                .map_err(|e| Failure::startup(format!("error: {e}"), e.to_string()))?;
        }
        if let Some(url) = &config.metrics.url {
            log::info!("metrics enabled; reporting metrics via POST to {}", url.raw);
            report::start_url_push(url.clone(), https, config.metrics.interval, m.clone())
                .map_err(|e| Failure::startup(format!("error: {e}"), e.to_string()))?;
        }
    }
    let started = signals::start(controller.clone()).and_then(|()| match config.timed_reload {
        Some(every) => signals::start_timer(every, controller.clone()),
        None => Ok(()),
    });
    if let Err(e) = started {
        return Err(Failure::startup(format!("error: {e}"), e.to_string()));
    }
    // The phase first: whoever takes the log line as readiness must find `/_status` listening.
    lifecycle.enter(status::Phase::Listening);
    log::info!("listening for connections on {}", config.listen);
    if let Some(period) = systemd::watchdog_interval() {
        let p = proxy.clone();
        let alive = Box::new(move || p.responsive(period));
        if let Err(e) = systemd::start_watchdog(notifier.clone(), period, alive) {
            log::warn!("warning: unable to start the watchdog: {e}");
        }
    }
    proxy.serve(&listener, parts.connector);

    // 12.2. Drain: the listener is closed (a UNIX socket file removed), pipes finish.
    listener.unlink();
    // The status server keeps answering (`stopping`) during the drain; a UNIX status socket
    // file we created goes now, as the reference's does when its status server closes.
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

/// The `/_status` backend check: `Err` carries the text for `backend_error`.
type BackendCheck = dyn Fn() -> Result<(), String> + Send + Sync;

/// What a mode contributes to the shared lifecycle.
struct ModeParts {
    connector: Arc<dyn Connector>,
    reloader: Arc<signals::ReloadFn>,
    /// The `/_status` backend check (SPEC 8.4).
    backend_check: Box<BackendCheck>,
    /// The status port's TLS configuration, following reloads.
    status_tls: Box<StatusTls>,
    /// The served identity's subject and notAfter, following reloads.
    identity: Box<IdentityView>,
}

type StatusTls = dyn Fn() -> Option<Arc<rustls::ServerConfig>> + Send + Sync;
type IdentityView = dyn Fn() -> (String, Option<SystemTime>) + Send + Sync;

/// The parts of [`ModeParts`] that follow a reloadable context: the reload action (which also
/// refreshes the certificate expiry metric), the status port's configuration and the served
/// identity.
fn follow_reloads<C: AsRef<tls::Served> + Send + Sync + 'static>(
    tls: Arc<tls::Reloadable<C>>,
    metrics: Option<Arc<Metrics>>,
) -> (Arc<signals::ReloadFn>, Box<StatusTls>, Box<IdentityView>) {
    let (t1, t2, t3) = (tls.clone(), tls.clone(), tls);
    let reloader = move || {
        t1.reload()?;
        let current = t1.current();
        let now: &tls::Served = (*current).as_ref();
        if let Some(m) = &metrics {
            m.set_cert_not_after(now.not_after);
        }
        Ok(now.subject.clone())
    };
    let identity = move || {
        let current = t3.current();
        let now: &tls::Served = (*current).as_ref();
        (now.subject.clone(), now.not_after)
    };
    (
        Arc::new(reloader),
        Box::new(move || (*t2.current()).as_ref().status.clone()),
        Box::new(identity),
    )
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

/// The listener could not be opened (SPEC 2.7.3).
fn listen_failure(config: &Config, e: &std::io::Error) -> Failure {
    let e = net::strip_os_error(e);
    let (step, mode) = match config.mode {
        Mode::Server(_) => ("error trying to listen", "server"),
        Mode::Client(_) => ("error opening socket", "client"),
    };
    Failure::Startup {
        logged: vec![
            format!("{step}: {e}"),
            format!("error from {mode} listen: {e}"),
        ],
        printed: e,
    }
}

/// The status port could not be opened (SPEC 2.7.3).
fn status_failure(e: &std::io::Error) -> Failure {
    let e = format!("unable to bind on status port: {}", net::strip_os_error(e));
    Failure::Startup {
        logged: vec![
            format!("error: {e}"),
            format!("error serving /_status: {e}"),
        ],
        printed: e,
    }
}

/// `--check`, after the loading steps of a start succeeded: probes the listeners without
/// binding them (failing as the bind would), then prints the report to stdout and its
/// warnings to stderr. Exit 0.
fn check_report(config: &Config) -> Result<ExitCode, Failure> {
    let listen = check::probe_listen(&config.listen).map_err(|e| listen_failure(config, &e))?;
    let status = match &config.status {
        Some(status) => check::probe_listen(&status.addr).map_err(|e| status_failure(&e))?,
        None => None,
    };
    let mut report = check::report(config, std::time::SystemTime::now()).map_err(cert_failure)?;
    report.warnings.extend(listen.into_iter().chain(status));
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for line in &report.lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A certificate or trust-store load failure (SPEC 3.6).
fn cert_failure(e: String) -> Failure {
    Failure::startup(format!("error: unable to load certificates: {e}"), e)
}

/// Resolves `--target` once at startup unless skipped (SPEC 6.5), and logs it.
fn prepare_target(config: &Config) -> Result<(), Failure> {
    let via_proxy = matches!(&config.mode, Mode::Client(c) if c.proxy.is_some());
    if let AddrKind::Tcp { host, port } = &config.target.kind {
        if !config.skip_resolve && !via_proxy {
            net::resolve(host, port).map_err(|e| {
                Failure::startup(
                    format!("error: invalid target address: {e}"),
                    format!("invalid target address: {e}"),
                )
            })?;
        }
    }
    log::info!("using target address {}", config.target);
    Ok(())
}

/// `--max-tls-version` is checked when the TLS configuration is built (SPEC 2.6).
fn check_max_tls(config: &Config, log_prefix: &str) -> Result<(), Failure> {
    tls::versions(&config.tls.max_version)
        .map(drop)
        .map_err(|e| Failure::startup(format!("{log_prefix}{e}"), e))
}
