//! The command line (SPEC 2): one flag table drives the lexopt parser, `--help` and the
//! parse-stage checks; [`RawArgs::into_config`] does mode validation (2.7.2) and builds the
//! typed [`Config`]. Reads the environment only through the `env` lookup it is given.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{SpkiPin, UriPattern};
use crate::config::{
    Acl, CipherGroup, ClientOpts, ClientVerify, Config, IdentitySource, Mode, ProxyProtocolMode,
    Quiet, ServerAuth, ServerOpts, StatusAddr, StatusScheme, Timeouts, TlsPolicy,
};
use crate::duration::parse_go_duration;
use crate::net::{Addr, AddrKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Duration,
    Uint32,
    Str,
    List,
    IpList,
    /// `--quiet`: an enum list.
    QuietList,
    /// `--proxy-protocol-mode`.
    Enum(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Global,
    Server,
    Client,
}

/// One row of the flag table.
struct Flag {
    name: &'static str,
    aliases: &'static [&'static str],
    kind: Kind,
    scope: Scope,
    env: Option<&'static str>,
    default: &'static str,
    hidden: bool,
    help: &'static str,
}

const fn f(name: &'static str, kind: Kind, scope: Scope, help: &'static str) -> Flag {
    Flag {
        name,
        aliases: &[],
        kind,
        scope,
        env: None,
        default: "",
        hidden: false,
        help,
    }
}

impl Flag {
    const fn env(mut self, env: &'static str) -> Flag {
        self.env = Some(env);
        self
    }
    const fn default(mut self, d: &'static str) -> Flag {
        self.default = d;
        self
    }
    const fn hidden(mut self) -> Flag {
        self.hidden = true;
        self
    }
    const fn aliases(mut self, a: &'static [&'static str]) -> Flag {
        self.aliases = a;
        self
    }
}

use Kind::*;
use Scope::*;

/// Every flag of SPEC 2.3-2.5, in help order.
const FLAGS: &[Flag] = &[
    f(
        "keystore",
        Str,
        Global,
        "Path to keystore (combined PEM with cert/key, or PKCS12 keystore).",
    )
    .env("KEYSTORE_PATH"),
    f(
        "cert",
        Str,
        Global,
        "Path to certificate (PEM with certificate chain).",
    )
    .env("CERT_PATH"),
    f(
        "key",
        Str,
        Global,
        "Path to certificate private key (PEM with private key).",
    )
    .env("KEY_PATH"),
    f(
        "storepass",
        Str,
        Global,
        "Password for keystore (if using PKCS keystore, optional).",
    )
    .env("KEYSTORE_PASS"),
    f(
        "cacert",
        Str,
        Global,
        "Path to CA bundle file (PEM/X509). Uses system trust store by default.",
    )
    .env("CACERT_PATH"),
    f(
        "use-workload-api",
        Bool,
        Global,
        "If true, certificate and root CAs are retrieved via the SPIFFE Workload API (not supported by this build).",
    ),
    f(
        "use-workload-api-addr",
        Str,
        Global,
        "SPIFFE Workload API address (not supported by this build).",
    )
    .env("SPIFFE_ENDPOINT_SOCKET"),
    f(
        "use-workload-api-timeout",
        Duration,
        Global,
        "Initial SPIFFE Workload API wait (not supported by this build).",
    )
    .default("10m"),
    f(
        "timed-reload",
        Duration,
        Global,
        "Reload keystores every given interval (e.g. 300s), refresh listener/client on changes.",
    )
    .default("0"),
    f(
        "shutdown-timeout",
        Duration,
        Global,
        "Process will wait for this duration to allow open connections to finish.",
    )
    .default("5m"),
    f(
        "connect-timeout",
        Duration,
        Global,
        "Timeout for establishing connections, handshakes.",
    )
    .default("10s"),
    f(
        "close-timeout",
        Duration,
        Global,
        "Timeout for closing connections when one side terminates. Zero means immediate closure.",
    )
    .default("60s"),
    f(
        "max-conn-lifetime",
        Duration,
        Global,
        "Maximum lifetime for connections post-handshake, no matter what. Zero means infinite.",
    )
    .default("0s"),
    f(
        "max-concurrent-conns",
        Uint32,
        Global,
        "Maximum number of concurrent connections to handle in the proxy. Zero means infinite.",
    )
    .default("0"),
    f(
        "metrics-graphite",
        Str,
        Global,
        "Collect metrics and report them to the given graphite instance (not supported by this build).",
    ),
    f(
        "metrics-url",
        Str,
        Global,
        "Collect metrics and POST them periodically to the given URL (not supported by this build).",
    ),
    f(
        "metrics-prefix",
        Str,
        Global,
        "Set prefix string for all reported metrics (not supported by this build).",
    )
    .default("ghostunnel"),
    f(
        "metrics-interval",
        Duration,
        Global,
        "Collect (and post/send) metrics every specified interval (not supported by this build).",
    )
    .default("30s"),
    f(
        "status",
        Str,
        Global,
        "Enable serving /_status on given HOST:PORT (or unix:SOCKET).",
    ),
    f(
        "enable-pprof",
        Bool,
        Global,
        "Enable serving /debug/pprof endpoints alongside /_status (not supported by this build).",
    ),
    f(
        "enable-shutdown",
        Bool,
        Global,
        "Enable serving a /_shutdown endpoint alongside /_status to allow terminating via HTTP.",
    ),
    f(
        "quiet",
        QuietList,
        Global,
        "Silence log messages (can be all, conns, conn-errs, handshake-errs; repeat flag for more than one).",
    ),
    f(
        "skip-resolve",
        Bool,
        Global,
        "Skip resolving target host on startup (useful to start Ghostunnel before network is up).",
    ),
    f(
        "syslog",
        Bool,
        Global,
        "Send logs to syslog instead of stdout.",
    ),
    f(
        "pkcs11-module",
        Str,
        Global,
        "Path to PKCS11 module (not supported by this build).",
    )
    .env("PKCS11_MODULE"),
    f(
        "pkcs11-token-label",
        Str,
        Global,
        "Token label for slot/key in PKCS11 module (not supported by this build).",
    )
    .env("PKCS11_TOKEN_LABEL"),
    f(
        "pkcs11-pin",
        Str,
        Global,
        "PIN code for slot/key in PKCS11 module (not supported by this build).",
    )
    .env("PKCS11_PIN"),
    f(
        "disable-landlock",
        Bool,
        Global,
        "Disable Landlock sandboxing.",
    ),
    f(
        "cipher-suites",
        Str,
        Global,
        "Set of cipher suites to enable, comma-separated, in order of preference (AES, CHACHA).",
    )
    .default("AES,CHACHA")
    .hidden(),
    f(
        "allow-unsafe-cipher-suites",
        Bool,
        Global,
        "Allow cipher suites deemed to be unsafe.",
    )
    .hidden(),
    f(
        "max-tls-version",
        Str,
        Global,
        "Maximum TLS version (TLS1.2 or TLS1.3).",
    )
    .hidden(),
    f(
        "use-landlock",
        Bool,
        Global,
        "Accepted for compatibility; Landlock is on unless --disable-landlock.",
    )
    .hidden(),
    // Server mode.
    f(
        "listen",
        Str,
        Server,
        "Address and port to listen on (can be HOST:PORT, unix:PATH, systemd:NAME).",
    ),
    f(
        "target",
        Str,
        Server,
        "Address to forward connections to (can be HOST:PORT or unix:PATH).",
    ),
    f(
        "target-status",
        Str,
        Server,
        "Address to target for status checking downstream healthchecks (not supported by this build).",
    ),
    f(
        "proxy-protocol",
        Bool,
        Server,
        "Enable PROXY protocol v2 to signal connection info to backend.",
    ),
    f(
        "proxy-protocol-mode",
        Enum(&["conn", "tls", "tls-full"]),
        Server,
        "PROXY protocol v2 mode: conn, tls or tls-full.",
    ),
    f(
        "unsafe-target",
        Bool,
        Server,
        "If set, does not limit target to localhost, 127.0.0.1, [::1], or UNIX sockets.",
    ),
    f(
        "allow-all",
        Bool,
        Server,
        "Allow all clients, do not check client cert subject.",
    ),
    f(
        "allow-cn",
        List,
        Server,
        "Allow clients with given common name (can be repeated).",
    ),
    f(
        "allow-ou",
        List,
        Server,
        "Allow clients with given organizational unit name (can be repeated).",
    ),
    f(
        "allow-dns",
        List,
        Server,
        "Allow clients with given DNS subject alternative name (can be repeated).",
    )
    .aliases(&["allow-dns-san"]),
    f(
        "allow-uri",
        List,
        Server,
        "Allow clients with given URI subject alternative name (can be repeated).",
    )
    .aliases(&["allow-uri-san"]),
    f(
        "allow-ip",
        IpList,
        Server,
        "Allow clients with given IP subject alternative name (can be repeated).",
    )
    .aliases(&["allow-ip-san"])
    .hidden(),
    f(
        "allow-spki-pin",
        List,
        Server,
        "Allow clients whose leaf SPKI matches <algo>:<base64> (can be repeated).",
    ),
    f(
        "allow-policy",
        Str,
        Server,
        "OPA policy bundle (not supported by this build).",
    ),
    f(
        "allow-query",
        Str,
        Server,
        "OPA query (not supported by this build).",
    ),
    f(
        "disable-authentication",
        Bool,
        Server,
        "Disable client authentication, no client certificate will be required.",
    ),
    f(
        "auto-acme-cert",
        Str,
        Server,
        "Automatically obtain a certificate via ACME (not supported by this build).",
    ),
    f(
        "auto-acme-email",
        Str,
        Server,
        "ACME email (not supported by this build).",
    ),
    f(
        "auto-acme-agree-to-tos",
        Bool,
        Server,
        "Agree to the ACME CA's terms (not supported by this build).",
    ),
    f(
        "auto-acme-ca",
        Str,
        Server,
        "ACME CA URL (not supported by this build).",
    ),
    f(
        "auto-acme-testca",
        Str,
        Server,
        "ACME test CA URL (not supported by this build).",
    ),
    f(
        "auto-acme-renew-check-interval",
        Duration,
        Server,
        "ACME renewal check interval (not supported by this build).",
    )
    .hidden(),
    f(
        "auto-acme-alt-tls-alpn-port",
        Uint32,
        Server,
        "ACME TLS-ALPN port (not supported by this build).",
    )
    .hidden(),
    // Client mode.
    f(
        "listen",
        Str,
        Client,
        "Address and port to listen on (can be HOST:PORT, unix:PATH, systemd:NAME).",
    ),
    f(
        "target",
        Str,
        Client,
        "Address to forward connections to (must be HOST:PORT).",
    ),
    f(
        "unsafe-listen",
        Bool,
        Client,
        "If set, does not limit listen to localhost, 127.0.0.1, [::1], or UNIX sockets.",
    ),
    f(
        "override-server-name",
        Str,
        Client,
        "If set, overrides the server name used for hostname verification.",
    ),
    f(
        "proxy",
        Str,
        Client,
        "If set, connect to target over given proxy (HTTP CONNECT or SOCKS5).",
    )
    .aliases(&["connect-proxy"]),
    f(
        "verify-cn",
        List,
        Client,
        "Allow servers with given common name (can be repeated).",
    ),
    f(
        "verify-ou",
        List,
        Client,
        "Allow servers with given organizational unit name (can be repeated).",
    ),
    f(
        "verify-dns",
        List,
        Client,
        "Allow servers with given DNS subject alternative name (can be repeated).",
    )
    .aliases(&["verify-dns-san"]),
    f(
        "verify-uri",
        List,
        Client,
        "Allow servers with given URI subject alternative name (can be repeated).",
    )
    .aliases(&["verify-uri-san"]),
    f(
        "verify-ip",
        IpList,
        Client,
        "Allow servers with given IP subject alternative name (can be repeated).",
    )
    .aliases(&["verify-ip-san"])
    .hidden(),
    f(
        "verify-spki-pin",
        List,
        Client,
        "Allow servers whose leaf SPKI matches <algo>:<base64> (can be repeated).",
    ),
    f(
        "verify-policy",
        Str,
        Client,
        "OPA policy bundle (not supported by this build).",
    ),
    f(
        "verify-query",
        Str,
        Client,
        "OPA query (not supported by this build).",
    ),
    f(
        "disable-authentication",
        Bool,
        Client,
        "Disable client authentication, no certificate will be provided to the server.",
    ),
];

/// Flags that this build refuses instead of silently ignoring.
const UNSUPPORTED: &[&str] = &[
    "use-workload-api",
    "use-workload-api-addr",
    "metrics-graphite",
    "metrics-url",
    "metrics-prefix",
    "metrics-interval",
    "enable-pprof",
    "pkcs11-module",
    "pkcs11-token-label",
    "pkcs11-pin",
    "target-status",
    "allow-policy",
    "allow-query",
    "auto-acme-cert",
    "auto-acme-email",
    "auto-acme-agree-to-tos",
    "auto-acme-ca",
    "auto-acme-testca",
    "auto-acme-renew-check-interval",
    "auto-acme-alt-tls-alpn-port",
    "verify-policy",
    "verify-query",
];

/// What parsing decided.
#[derive(Debug)]
pub enum Parsed {
    /// Run with these (not yet mode-validated) arguments.
    Run(RawArgs),
    /// Print `text` to stderr (stdout when `stdout`) and exit 0: help, usage, version.
    Exit { text: String, stdout: bool },
}

#[derive(Debug, Clone)]
enum Value {
    Bool(bool),
    One(String),
    Many(Vec<String>),
}

/// Flags as given, after the parse-stage checks (SPEC 2.7.1).
#[derive(Debug)]
pub struct RawArgs {
    pub quiet: Quiet,
    pub syslog: bool,
    server: bool,
    /// Explicitly given flags (and env fallbacks), by canonical name.
    given: HashMap<&'static str, Value>,
}

/// Parses `args` (without argv[0]). `env` looks up environment fallbacks. The error is the
/// bare message; the caller prints `ghostunnel: error: <msg>, try --help` and exits 1.
pub fn parse(args: Vec<OsString>, env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, String> {
    let args = expand_arg_files(args)?;
    if args.is_empty() {
        return Ok(usage(None));
    }
    let mut command: Option<Scope> = None;
    let mut help = false;
    let mut help_topic: Option<Scope> = None;
    let mut help_command = false;
    let mut given: HashMap<&'static str, Value> = HashMap::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            lexopt::Arg::Short(c) => return Err(format!("unknown short flag '-{c}'")),
            lexopt::Arg::Long(name) => {
                let name = name.to_string();
                match name.as_str() {
                    "help" | "help-long" | "help-man" | "help-custom-man" => {
                        help = true;
                        continue;
                    }
                    "version" => {
                        return Ok(Parsed::Exit {
                            text: version(),
                            stdout: false,
                        });
                    }
                    _ => {}
                }
                let (flag, negated) = lookup(&name, command)
                    .ok_or_else(|| format!("unknown long flag '--{name}'"))?;
                if flag.kind == Bool {
                    if let Some(v) = parser.optional_value() {
                        return Err(format!("unexpected {}", v.to_string_lossy()));
                    }
                    if given.insert(flag.name, Value::Bool(!negated)).is_some() {
                        return Err(format!("flag '{}' cannot be repeated", flag.name));
                    }
                    continue;
                }
                if negated {
                    return Err(format!("unknown long flag '--{name}'"));
                }
                let value = parser
                    .value()
                    .map_err(|_| format!("expected argument for flag '--{}'", flag.name))?
                    .to_string_lossy()
                    .to_string();
                check_value(flag, &value)?;
                match flag.kind {
                    List | IpList | QuietList => {
                        match given.entry(flag.name).or_insert(Value::Many(vec![])) {
                            Value::Many(v) => v.push(value),
                            _ => unreachable_value(),
                        }
                    }
                    _ => {
                        if given.insert(flag.name, Value::One(value)).is_some() {
                            return Err(format!("flag '{}' cannot be repeated", flag.name));
                        }
                    }
                }
            }
            lexopt::Arg::Value(v) => {
                let word = v.to_string_lossy().to_string();
                match (command, help_command, word.as_str()) {
                    (None, false, "server") => command = Some(Server),
                    (None, false, "client") => command = Some(Client),
                    (None, false, "help") => help_command = true,
                    (None, true, "server") if help_topic.is_none() => help_topic = Some(Server),
                    (None, true, "client") if help_topic.is_none() => help_topic = Some(Client),
                    (None, false, _) => return Err(format!("expected command but got \"{word}\"")),
                    _ => return Err(format!("unexpected {word}")),
                }
            }
        }
    }
    if help || help_command {
        return Ok(usage(command.or(help_topic)));
    }
    let Some(command) = command else {
        return Err("command not specified".to_string());
    };
    // Environment fallbacks, only for flags absent from the command line.
    for flag in FLAGS
        .iter()
        .filter(|f| f.scope == Global || f.scope == command)
    {
        if let (Some(var), false) = (flag.env, given.contains_key(flag.name)) {
            if let Some(value) = env(var) {
                check_value(flag, &value)?;
                given.insert(flag.name, Value::One(value));
            }
        }
    }
    let missing: Vec<String> = ["listen", "target"]
        .iter()
        .filter(|n| !given.contains_key(*n))
        .map(|n| format!("'--{n}'"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "required flag(s) {} not provided",
            missing.join(", ")
        ));
    }
    let raw = RawArgs {
        quiet: Quiet::default(),
        syslog: false,
        server: command == Server,
        given,
    };
    let raw = RawArgs {
        quiet: raw.quiet_classes(),
        syslog: raw.bool("syslog"),
        ..raw
    };
    raw.parse_stage_checks()?;
    Ok(Parsed::Run(raw))
}

fn unreachable_value() {}

/// Finds a flag by name or alias in scope; `--no-NAME` negates a boolean.
fn lookup(name: &str, command: Option<Scope>) -> Option<(&'static Flag, bool)> {
    let in_scope = |f: &&Flag| f.scope == Global || Some(f.scope) == command;
    let find = |n: &str| {
        FLAGS
            .iter()
            .filter(in_scope)
            .find(|f| f.name == n || f.aliases.contains(&n))
    };
    if let Some(flag) = find(name) {
        return Some((flag, false));
    }
    let flag = find(name.strip_prefix("no-")?)?;
    (flag.kind == Bool).then_some((flag, true))
}

/// Type checks done while parsing (SPEC 2.2).
fn check_value(flag: &Flag, value: &str) -> Result<(), String> {
    match flag.kind {
        Duration => parse_go_duration(value).map(drop),
        Uint32 => value
            .parse::<u32>()
            .map(drop)
            .map_err(|_| format!("strconv.ParseUint: parsing \"{value}\": invalid syntax")),
        IpList => value
            .parse::<IpAddr>()
            .map(drop)
            .map_err(|_| format!("'{value}' is not an IP address")),
        QuietList => check_enum(&["", "all", "conns", "conn-errs", "handshake-errs"], value),
        Enum(words) => check_enum(words, value),
        Str if flag.name == "proxy" && value.starts_with("://") => Err(format!(
            "invalid URL: parse \"{value}\": missing protocol scheme"
        )),
        _ => Ok(()),
    }
}

fn check_enum(words: &[&str], value: &str) -> Result<(), String> {
    if words.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "enum value must be one of {}, got '{value}'",
            words.join(", ")
        ))
    }
}

/// Replaces `@path` arguments by the file's lines (blank lines and `#` comments skipped).
fn expand_arg_files(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        match arg.to_str().and_then(|s| s.strip_prefix('@')) {
            Some(path) if !path.is_empty() => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "failed to read arguments from '{path}': {}",
                        crate::net::strip_os_error(&e)
                    )
                })?;
                out.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(OsString::from),
                );
            }
            _ => out.push(arg),
        }
    }
    Ok(out)
}

fn version() -> String {
    format!(
        "rev {} built with {} (pkcs11: false, keychain: false)\n",
        env!("CARGO_PKG_VERSION"),
        env!("GHOSTUNNEL_TOOLCHAIN")
    )
}

/// The usage text, generated from the flag table (hidden flags left out).
fn usage(command: Option<Scope>) -> Parsed {
    let mut text = String::from(
        "usage: ghostunnel [<flags>] <command> [<args> ...]\n\nA simple SSL/TLS proxy with mutual authentication for securing non-TLS services.\n\nFlags:\n      --help                     Show context-sensitive help.\n      --version                  Show application version.\n",
    );
    let section = |text: &mut String, scope: Scope| {
        for flag in FLAGS.iter().filter(|f| f.scope == scope && !f.hidden) {
            let head = match flag.kind {
                Bool => format!("--{}", flag.name),
                _ => format!(
                    "--{}={}",
                    flag.name,
                    flag.name.to_uppercase().replace('-', "_")
                ),
            };
            let mut help = flag.help.to_string();
            if let Some(env) = flag.env {
                help.push_str(&format!(" ($${env})").replace("$$", "$"));
            }
            text.push_str(&format!("      {head:<26} {help}\n"));
        }
    };
    section(&mut text, Global);
    match command {
        Some(Server) => {
            text.push_str("\nserver [<flags>]\n    Server mode (TLS listener -> plain TCP/UNIX target).\n\n");
            section(&mut text, Server);
        }
        Some(Client) => {
            text.push_str("\nclient [<flags>]\n    Client mode (plain TCP/UNIX listener -> TLS target).\n\n");
            section(&mut text, Client);
        }
        _ => text.push_str(
            "\nCommands:\n  help [<command>...]\n    Show help.\n\n  server [<flags>]\n    Server mode (TLS listener -> plain TCP/UNIX target).\n\n  client [<flags>]\n    Client mode (plain TCP/UNIX listener -> TLS target).\n",
        ),
    }
    Parsed::Exit {
        text,
        stdout: false,
    }
}

impl RawArgs {
    /// `server` or `client`, for the first log line (before mode validation).
    pub fn mode_name(&self) -> &'static str {
        if self.server { "server" } else { "client" }
    }

    fn bool(&self, name: &str) -> bool {
        matches!(self.given.get(name), Some(Value::Bool(true)))
    }

    fn str(&self, name: &str) -> &str {
        match self.given.get(name) {
            Some(Value::One(s)) => s,
            _ => FLAGS
                .iter()
                .find(|f| f.name == name)
                .map_or("", |f| f.default),
        }
    }

    fn list(&self, name: &str) -> &[String] {
        match self.given.get(name) {
            Some(Value::Many(v)) => v,
            _ => &[],
        }
    }

    /// A duration flag in signed nanoseconds (validated while parsing).
    fn nanos(&self, name: &str) -> i128 {
        parse_go_duration(self.str(name)).unwrap_or(0)
    }

    fn quiet_classes(&self) -> Quiet {
        let mut q = Quiet::default();
        for class in self.list("quiet") {
            match class.as_str() {
                "all" => q.all = true,
                "conns" => q.conns = true,
                "conn-errs" => q.conn_errs = true,
                "handshake-errs" => q.handshake_errs = true,
                _ => {}
            }
        }
        q
    }

    /// SPEC 2.7.1, in order.
    fn parse_stage_checks(&self) -> Result<(), String> {
        let status = self.str("status");
        if self.bool("enable-pprof") && status.is_empty() {
            return Err("--enable-pprof requires --status to be set".into());
        }
        if self.bool("enable-shutdown") && status.is_empty() {
            return Err("--enable-shutdown requires --status to be set".into());
        }
        let url = self.str("metrics-url");
        if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
            return Err("--metrics-url should start with http:// or https://".into());
        }
        let ts = self.str("target-status");
        if !ts.is_empty() && !ts.starts_with("http://") && !ts.starts_with("https://") {
            return Err("--target-status should start with http:// or https://".into());
        }
        if !status.is_empty() {
            parse_status(status)?;
        }
        if self.nanos("connect-timeout") == 0 {
            return Err("--connect-timeout duration must not be zero".into());
        }
        if self.nanos("use-workload-api-timeout") < 0 {
            return Err("--use-workload-api-timeout duration must not be negative (use 0 to wait indefinitely)".into());
        }
        Ok(())
    }

    /// Mode validation (SPEC 2.7.2), first failure wins; the error is `<msg>` for
    /// `error: <msg>`.
    pub fn into_config(self) -> Result<Config, String> {
        if let Some(flag) = UNSUPPORTED.iter().find(|f| self.given.contains_key(*f)) {
            return Err(format!("--{flag} is not supported by this build"));
        }
        let identity = self.identity()?;
        let mode = if self.server {
            Mode::Server(self.server_opts()?)
        } else {
            Mode::Client(self.client_opts()?)
        };
        let listen = Addr::parse(self.str("listen"))
            .map_err(|e| format!("invalid --listen address: {e}"))?;
        let target = Addr::parse(self.str("target"))
            .map_err(|e| format!("invalid --target address: {e}"))?;
        let tls = self.tls_policy()?;
        let duration = |name: &str| Duration::from_nanos(self.nanos(name).max(0) as u64);
        let positive = |name: &str| (self.nanos(name) > 0).then(|| duration(name));
        let timeouts = Timeouts {
            connect: duration("connect-timeout"),
            close: duration("close-timeout"),
            max_lifetime: positive("max-conn-lifetime"),
            shutdown: (self.nanos("shutdown-timeout") >= 0).then(|| duration("shutdown-timeout")),
        };
        let status = match self.str("status") {
            "" => None,
            s => Some(parse_status(s)?),
        };
        Ok(Config {
            mode,
            listen,
            target,
            identity,
            cacert: Some(self.str("cacert"))
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            timeouts,
            max_concurrent_conns: self.str("max-concurrent-conns").parse().unwrap_or(0),
            timed_reload: positive("timed-reload"),
            tls,
            skip_resolve: self.bool("skip-resolve"),
            disable_landlock: self.bool("disable-landlock"),
            status,
            enable_shutdown: self.bool("enable-shutdown"),
        })
    }

    /// The credential count and pairing rules (SPEC 2.7.2 step 1).
    fn identity(&self) -> Result<IdentitySource, String> {
        let (keystore, cert, key) = (self.str("keystore"), self.str("cert"), self.str("key"));
        let disable_auth = !self.server && self.bool("disable-authentication");
        let count = usize::from(!keystore.is_empty())
            + usize::from(!cert.is_empty() && !key.is_empty())
            + usize::from(disable_auth);
        if count == 0 {
            return Err(if self.server {
                "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required"
            } else {
                "at least one of --keystore, --cert/--key, --keychain-identity/issuer (if supported), --use-workload-api or --disable-authentication flags is required"
            }
            .into());
        }
        if count > 1 {
            return Err(if self.server {
                "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive"
            } else {
                "--keystore, --cert/--key, --keychain-identity/issuer, --use-workload-api and --disable-authentication flags are mutually exclusive"
            }
            .into());
        }
        if cert.is_empty() != key.is_empty() {
            return Err(
                "--cert/--key must be set together, unless using PKCS11 for private key".into(),
            );
        }
        Ok(if !keystore.is_empty() {
            let lower = keystore.to_ascii_lowercase();
            if lower.ends_with(".jceks") || lower.ends_with(".jks") {
                return Err("--keystore: JCEKS/JKS keystores are not supported by this build (convert to PKCS#12)".into());
            }
            IdentitySource::Keystore {
                path: keystore.into(),
                password: self.str("storepass").to_string(),
            }
        } else if !cert.is_empty() {
            IdentitySource::CertKey {
                cert: cert.into(),
                key: key.into(),
            }
        } else {
            IdentitySource::None
        })
    }

    fn acl(&self, prefix: &str) -> Result<Acl, String> {
        let uri = self
            .list(&format!("{prefix}-uri"))
            .iter()
            .map(|p| {
                UriPattern::compile(p)
                    .map_err(|e| format!("invalid URI pattern in --{prefix}-uri flag ({e})"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Acl {
            cn: self.list(&format!("{prefix}-cn")).to_vec(),
            ou: self.list(&format!("{prefix}-ou")).to_vec(),
            dns: self.list(&format!("{prefix}-dns")).to_vec(),
            ip: self
                .list(&format!("{prefix}-ip"))
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            uri,
        })
    }

    fn pins(&self, flag: &str) -> Result<Vec<SpkiPin>, String> {
        self.list(flag)
            .iter()
            .map(|p| SpkiPin::parse(p).map_err(|e| format!("--{flag}: {e}")))
            .collect()
    }

    fn server_opts(&self) -> Result<ServerOpts, String> {
        let disable = self.bool("disable-authentication");
        let all = self.bool("allow-all");
        let names = ["allow-cn", "allow-ou", "allow-dns", "allow-ip", "allow-uri"];
        let a = names.iter().any(|n| !self.list(n).is_empty());
        let p = !self.list("allow-spki-pin").is_empty();
        if !(disable || all || a || p) {
            return Err("at least one access control flag (--allow-{all,cn,ou,dns,uri,spki-pin}, or OPA flags, or --disable-authentication) is required".into());
        }
        if all && (a || p) && !disable {
            return Err("--allow-all is mutually exclusive with other access control flags".into());
        }
        if disable && (all || a || p) {
            return Err(
                "--disable-authentication is mutually exclusive with other access control flags"
                    .into(),
            );
        }
        if p && (a || all) {
            return Err(
                "--allow-spki-pin is mutually exclusive with other access control flags".into(),
            );
        }
        let pins = self.pins("allow-spki-pin")?;
        let target = self.str("target");
        if !self.bool("unsafe-target") && !Addr::is_safe(target) {
            return Err(
                "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)"
                    .into(),
            );
        }
        let addr = Addr::parse(target).map_err(|e| format!("invalid --target address: {e}"))?;
        if matches!(addr.kind, AddrKind::Systemd(_) | AddrKind::Launchd(_)) {
            return Err(format!(
                "invalid --target network \"{}\": only tcp and unix targets are supported (systemd:/launchd: cannot be dialed)",
                addr.network()
            ));
        }
        let proxy_protocol = match (self.bool("proxy-protocol"), self.str("proxy-protocol-mode")) {
            (true, "") => Some(ProxyProtocolMode::Conn),
            (true, _) => {
                return Err(
                    "--proxy-protocol and --proxy-protocol-mode are mutually exclusive".into(),
                );
            }
            (false, "") => None,
            (false, "conn") => Some(ProxyProtocolMode::Conn),
            (false, "tls") => Some(ProxyProtocolMode::Tls),
            (false, _) => Some(ProxyProtocolMode::TlsFull),
        };
        self.tls_policy()?;
        let auth = if disable {
            ServerAuth::Disabled
        } else if all {
            ServerAuth::AllowAll
        } else if p {
            ServerAuth::Pins(pins)
        } else {
            ServerAuth::Acl(self.acl("allow")?)
        };
        Ok(ServerOpts {
            auth,
            proxy_protocol,
        })
    }

    fn client_opts(&self) -> Result<ClientOpts, String> {
        let listen = self.str("listen");
        if !self.bool("unsafe-listen") && !Addr::is_safe(listen) {
            return Err("--listen must be unix:PATH, localhost:PORT, systemd:NAME or launchd:NAME (unless --unsafe-listen is set)".into());
        }
        let target = Addr::parse(self.str("target"))
            .map_err(|e| format!("invalid --target address: {e}"))?;
        if !matches!(target.kind, AddrKind::Tcp { .. }) {
            return Err(format!(
                "invalid --target network \"{}\": client mode requires a HOST:PORT TCP target",
                target.network()
            ));
        }
        let names = [
            "verify-cn",
            "verify-ou",
            "verify-dns",
            "verify-ip",
            "verify-uri",
        ];
        let verify = if self.list("verify-spki-pin").is_empty() {
            ClientVerify::Standard(self.acl("verify")?)
        } else {
            if names.iter().any(|n| !self.list(n).is_empty()) {
                return Err(
                    "--verify-spki-pin is mutually exclusive with other verification flags".into(),
                );
            }
            ClientVerify::Pins(self.pins("verify-spki-pin")?)
        };
        self.tls_policy()?;
        Ok(ClientOpts {
            override_server_name: Some(self.str("override-server-name").to_string())
                .filter(|s| !s.is_empty()),
            verify,
            proxy: Some(self.str("proxy").to_string()).filter(|s| !s.is_empty()),
        })
    }

    fn tls_policy(&self) -> Result<TlsPolicy, String> {
        let mut cipher_suites = Vec::new();
        for name in self.str("cipher-suites").split(',').map(str::trim) {
            cipher_suites.push(match name {
                "AES" => CipherGroup::Aes,
                "CHACHA" => CipherGroup::Chacha,
                "UNSAFE-AZURE" if self.bool("allow-unsafe-cipher-suites") => {
                    return Err("cipher suite group 'UNSAFE-AZURE' is not supported by this build (CBC suites are never offered)".into());
                }
                _ => return Err(format!("invalid cipher suite '{name}' selected")),
            });
        }
        Ok(TlsPolicy {
            max_version: self.str("max-tls-version").to_string(),
            cipher_suites,
        })
    }
}

/// `--status`: an optional `http://`/`https://` scheme, then an address (SPEC 2.7.1 step 5).
fn parse_status(s: &str) -> Result<StatusAddr, String> {
    let (scheme, rest) = if let Some(r) = s.strip_prefix("http://") {
        (StatusScheme::Http, r)
    } else if let Some(r) = s.strip_prefix("https://") {
        (StatusScheme::Https, r)
    } else {
        (StatusScheme::None, s)
    };
    let addr = Addr::parse(rest).map_err(|e| format!("invalid --status address: {e}"))?;
    if scheme != StatusScheme::None && !matches!(addr.kind, AddrKind::Tcp { .. }) {
        return Err(format!(
            "invalid --status network \"{}\": http(s):// scheme requires a HOST:PORT target",
            addr.network()
        ));
    }
    Ok(StatusAddr { addr, scheme })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_raw(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(OsString::from).collect(), &|_| None)
    }

    fn config(args: &[&str]) -> Result<Config, String> {
        match parse_raw(args)? {
            Parsed::Run(raw) => raw.into_config(),
            Parsed::Exit { .. } => Err("exit".into()),
        }
    }

    const SERVER: [&str; 6] = [
        "server",
        "--listen",
        ":8443",
        "--target",
        "localhost:80",
        "--keystore=k.pem",
    ];

    fn server(extra: &[&str]) -> Result<Config, String> {
        config(&[&SERVER[..], extra].concat())
    }

    #[test]
    fn grammar_errors() {
        assert_eq!(parse_raw(&["-h"]).unwrap_err(), "unknown short flag '-h'");
        assert_eq!(
            parse_raw(&["bogus"]).unwrap_err(),
            "expected command but got \"bogus\""
        );
        assert_eq!(
            parse_raw(&["server", "--bogus"]).unwrap_err(),
            "unknown long flag '--bogus'"
        );
        assert_eq!(
            parse_raw(&["server", "--allow-all=true"]).unwrap_err(),
            "unexpected true"
        );
        assert_eq!(
            parse_raw(&["server", "--unsafe-listen"]).unwrap_err(),
            "unknown long flag '--unsafe-listen'"
        );
        assert_eq!(
            parse_raw(&["server", "--listen=a:1", "--listen=b:1"]).unwrap_err(),
            "flag 'listen' cannot be repeated"
        );
        assert_eq!(
            parse_raw(&["server", "--allow-all", "--no-allow-all"]).unwrap_err(),
            "flag 'allow-all' cannot be repeated"
        );
        assert_eq!(
            parse_raw(&["server"]).unwrap_err(),
            "required flag(s) '--listen', '--target' not provided"
        );
        assert_eq!(
            parse_raw(&["server", "--listen=:1", "--target=x:1", "extra"]).unwrap_err(),
            "unexpected extra"
        );
        assert_eq!(
            parse_raw(&["server", "--max-concurrent-conns=-1"]).unwrap_err(),
            "strconv.ParseUint: parsing \"-1\": invalid syntax"
        );
        assert_eq!(
            parse_raw(&["server", "--connect-timeout=5"]).unwrap_err(),
            "time: invalid duration \"5\""
        );
        assert_eq!(
            parse_raw(&["server", "--quiet=loud"]).unwrap_err(),
            "enum value must be one of , all, conns, conn-errs, handshake-errs, got 'loud'"
        );
        assert_eq!(
            parse_raw(&["server", "--allow-ip=nope"]).unwrap_err(),
            "'nope' is not an IP address"
        );
    }

    #[test]
    fn help_and_version_exit_zero() {
        for args in [
            &[][..],
            &["--help"],
            &["help"],
            &["help", "server"],
            &["server", "--help"],
            &["--version"],
        ] {
            assert!(
                matches!(parse_raw(args), Ok(Parsed::Exit { stdout: false, .. })),
                "{args:?}"
            );
        }
        let Ok(Parsed::Exit { text, .. }) = parse_raw(&["--version"]) else {
            panic!()
        };
        assert!(
            text.starts_with("rev ") && text.contains("(pkcs11: false, keychain: false)"),
            "{text}"
        );
    }

    #[test]
    fn global_flags_go_either_side_and_env_falls_back() {
        let args = [
            "--quiet=conns",
            "server",
            "--listen=:1",
            "--target=localhost:2",
            "--allow-all",
        ];
        let env = |n: &str| (n == "KEYSTORE_PATH").then(|| "/k.pem".to_string());
        let Ok(Parsed::Run(raw)) = parse(args.iter().map(OsString::from).collect(), &env) else {
            panic!()
        };
        assert!(raw.quiet.conns && !raw.quiet.all);
        let c = raw.into_config().unwrap();
        assert!(
            matches!(c.identity, IdentitySource::Keystore { ref path, .. } if path.to_str() == Some("/k.pem"))
        );
    }

    #[test]
    fn parse_stage_checks_in_order() {
        let base = ["server", "--listen=:1", "--target=localhost:2"];
        let err = |extra: &[&str]| parse_raw(&[&base[..], extra].concat()).unwrap_err();
        assert_eq!(
            err(&["--enable-shutdown"]),
            "--enable-shutdown requires --status to be set"
        );
        assert_eq!(
            err(&["--connect-timeout=0s"]),
            "--connect-timeout duration must not be zero"
        );
        assert_eq!(
            err(&["--status=http://unix:/x"]),
            "invalid --status network \"unix\": http(s):// scheme requires a HOST:PORT target"
        );
        assert_eq!(
            err(&["--status=nohost"]),
            "invalid --status address: address nohost: missing port in address"
        );
    }

    #[test]
    fn server_mode_validation() {
        let none = config(&[
            "server",
            "--listen=:1",
            "--target=localhost:2",
            "--allow-all",
        ])
        .unwrap_err();
        assert!(none.starts_with("at least one of --keystore"), "{none}");
        assert_eq!(
            server(&["--cert=c", "--allow-all"]).unwrap_err(),
            "--cert/--key must be set together, unless using PKCS11 for private key"
        );
        assert!(
            server(&[])
                .unwrap_err()
                .starts_with("at least one access control flag")
        );
        assert_eq!(
            server(&["--allow-all", "--allow-cn=x"]).unwrap_err(),
            "--allow-all is mutually exclusive with other access control flags"
        );
        assert_eq!(
            server(&["--disable-authentication", "--allow-cn=x"]).unwrap_err(),
            "--disable-authentication is mutually exclusive with other access control flags"
        );
        let pin = "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(
            server(&["--allow-spki-pin", pin, "--allow-cn=x"]).unwrap_err(),
            "--allow-spki-pin is mutually exclusive with other access control flags"
        );
        assert!(
            server(&["--allow-spki-pin=md5:x"])
                .unwrap_err()
                .starts_with("--allow-spki-pin: invalid pin")
        );
        assert!(matches!(
            server(&["--allow-spki-pin", pin]).unwrap().mode,
            Mode::Server(ServerOpts {
                auth: ServerAuth::Pins(_),
                ..
            })
        ));
        let unsafe_target = config(&[
            "server",
            "--listen=:1",
            "--target=10.0.0.1:2",
            "--keystore=k",
            "--allow-all",
        ]);
        assert_eq!(
            unsafe_target.unwrap_err(),
            "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)"
        );
        assert_eq!(
            config(&[
                "server",
                "--listen=:1",
                "--target=systemd:x",
                "--keystore=k",
                "--allow-all"
            ])
            .unwrap_err(),
            "invalid --target network \"systemd\": only tcp and unix targets are supported (systemd:/launchd: cannot be dialed)"
        );
        assert_eq!(
            server(&[
                "--allow-all",
                "--proxy-protocol",
                "--proxy-protocol-mode=tls"
            ])
            .unwrap_err(),
            "--proxy-protocol and --proxy-protocol-mode are mutually exclusive"
        );
        assert_eq!(
            server(&["--allow-all", "--cipher-suites=RC4"]).unwrap_err(),
            "invalid cipher suite 'RC4' selected"
        );
        assert_eq!(
            server(&["--allow-all", "--allow-policy=x"]).unwrap_err(),
            "--allow-policy is not supported by this build"
        );
        assert!(
            server(&["--allow-uri=spiffe://a/**/b"])
                .unwrap_err()
                .starts_with("invalid URI pattern in --allow-uri flag (")
        );
    }

    #[test]
    fn client_mode_validation() {
        let client = |extra: &[&str]| {
            config(
                &[
                    &[
                        "client",
                        "--listen=localhost:1",
                        "--target=h:2",
                        "--keystore=k",
                    ][..],
                    extra,
                ]
                .concat(),
            )
        };
        assert!(client(&[]).is_ok());
        assert_eq!(
            client(&["--disable-authentication"]).unwrap_err(),
            "--keystore, --cert/--key, --keychain-identity/issuer, --use-workload-api and --disable-authentication flags are mutually exclusive"
        );
        assert_eq!(
            config(&[
                "client",
                "--listen=0.0.0.0:1",
                "--target=h:2",
                "--keystore=k"
            ])
            .unwrap_err(),
            "--listen must be unix:PATH, localhost:PORT, systemd:NAME or launchd:NAME (unless --unsafe-listen is set)"
        );
        assert_eq!(
            config(&[
                "client",
                "--listen=localhost:1",
                "--target=unix:/x",
                "--keystore=k"
            ])
            .unwrap_err(),
            "invalid --target network \"unix\": client mode requires a HOST:PORT TCP target"
        );
        let pin = "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(
            client(&["--verify-spki-pin", pin, "--verify-cn=x"]).unwrap_err(),
            "--verify-spki-pin is mutually exclusive with other verification flags"
        );
    }

    #[test]
    fn negative_durations_follow_the_reference() {
        let c = server(&[
            "--allow-all",
            "--shutdown-timeout=-1s",
            "--max-conn-lifetime=-1s",
            "--close-timeout=-1s",
        ])
        .unwrap();
        assert!(c.timeouts.shutdown.is_none() && c.timeouts.max_lifetime.is_none());
        assert_eq!(c.timeouts.close, Duration::ZERO);
    }
}
