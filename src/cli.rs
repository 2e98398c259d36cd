//! The command line (SPEC 2): one flag table drives the lexopt parser, `--help`, `--help-man`
//! and the parse-stage checks; [`RawArgs::into_config`] does mode validation (2.7.2) and builds
//! the typed [`Config`]. Reads the environment only through the `env` lookup it is given; owns
//! no I/O besides reading `@path` argument files.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{SpkiPin, UriPattern};
use crate::config::{
    Acl, CipherGroup, ClientOpts, ClientVerify, Config, IdentitySource, MetricsOpts, Mode,
    ProxyProtocolMode, Quiet, ServerAuth, ServerOpts, StatusAddr, StatusScheme, Timeouts,
    TlsPolicy,
};
use crate::duration::parse_go_duration;
use crate::net::{Addr, AddrKind};
use crate::report::HttpUrl;

mod doc;

pub use doc::{bash_completion, man_page, zsh_completion};

/// The value type of a flag (SPEC 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Duration,
    Uint32,
    Str,
    /// A string parsed as a URL at parse time (`--proxy`).
    Url,
    List,
    IpList,
    /// `--quiet`: a repeatable enum.
    QuietList,
    /// `--proxy-protocol-mode`.
    Enum(&'static [&'static str]),
}

impl Kind {
    fn is_list(self) -> bool {
        matches!(self, List | IpList | QuietList)
    }
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
    /// Hidden alternative names (`--allow-dns-san`); they fill the same value.
    aliases: &'static [&'static str],
    kind: Kind,
    scope: Scope,
    /// Environment fallback, used only when the flag is absent (an empty variable is absent).
    env: Option<&'static str>,
    default: &'static str,
    /// The `=VALUE` shown in help; empty means the default, else the upper-cased name.
    placeholder: &'static str,
    hidden: bool,
    /// The value is a file path: shells complete file names for it.
    file: bool,
    /// A feature this build lacks: setting it to a non-default value fails mode validation.
    unsupported: bool,
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
        placeholder: "",
        hidden: false,
        file: false,
        unsupported: false,
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
    const fn placeholder(mut self, p: &'static str) -> Flag {
        self.placeholder = p;
        self
    }
    const fn hidden(mut self) -> Flag {
        self.hidden = true;
        self
    }
    const fn file(mut self) -> Flag {
        self.file = true;
        self
    }
    const fn unsupported(mut self) -> Flag {
        self.unsupported = true;
        self
    }
    const fn aliases(mut self, a: &'static [&'static str]) -> Flag {
        self.aliases = a;
        self
    }

    /// `--name` or `--name=PLACEHOLDER`, as in the help text.
    fn head(&self) -> String {
        if self.kind == Bool {
            return format!("--{}", self.name);
        }
        let value = match (self.placeholder, self.default) {
            ("", "") => self.name.to_uppercase().replace('-', "_"),
            ("", d) => d.to_string(),
            (p, _) => p.to_string(),
        };
        format!("--{}={value}", self.name)
    }

    /// The help text with its environment fallback, e.g. `... ($KEYSTORE_PATH)`.
    fn help_text(&self) -> String {
        match self.env {
            Some(var) => format!("{} (${var})", self.help),
            None => self.help.to_string(),
        }
    }
}

use Kind::*;
use Scope::*;

/// The `--quiet` classes (SPEC 13.2).
const QUIET_CLASSES: &[&str] = &["", "all", "conns", "conn-errs", "handshake-errs"];

/// Every flag of SPEC 2.3-2.5, in help order, plus `--check` and `--storepass-file`.
/// `--help`, `--version`, `--help-long`, `--help-man`, `--help-custom-man` and
/// `--completion-script-{bash,zsh}` are handled by the parser itself.
const FLAGS: &[Flag] = &[
    f("keystore", Str, Global, "Path to keystore (combined PEM with cert/key, or PKCS12 keystore).")
        .env("KEYSTORE_PATH")
        .placeholder("PATH")
        .file(),
    f("cert", Str, Global, "Path to certificate (PEM with certificate chain).")
        .env("CERT_PATH")
        .placeholder("PATH")
        .file(),
    f("key", Str, Global, "Path to certificate private key (PEM with private key).")
        .env("KEY_PATH")
        .placeholder("PATH")
        .file(),
    f("storepass", Str, Global, "Password for keystore (if using PKCS keystore, optional).")
        .env("KEYSTORE_PASS")
        .placeholder("PASS"),
    f("storepass-file", Str, Global, "Read the keystore password from the first line of this file (e.g. a systemd credential), so it never appears in ps.")
        .placeholder("PATH")
        .file(),
    f("cacert", Str, Global, "Path to CA bundle file (PEM/X509). Uses system trust store by default.")
        .env("CACERT_PATH")
        .placeholder("CACERT")
        .file(),
    f("use-workload-api", Bool, Global, "If true, certificate and root CAs are retrieved via the SPIFFE Workload API (not supported by this build).")
        .unsupported(),
    f("use-workload-api-addr", Str, Global, "If set, certificates and root CAs are retrieved via the SPIFFE Workload API at the specified address (not supported by this build).")
        .env("SPIFFE_ENDPOINT_SOCKET")
        .placeholder("ADDR")
        .unsupported(),
    f("use-workload-api-timeout", Duration, Global, "Timeout for the initial SPIFFE Workload API certificate fetch; 0 waits indefinitely (not supported by this build).")
        .default("10m")
        .unsupported(),
    f("timed-reload", Duration, Global, "Reload keystores every given interval (e.g. 300s), refresh listener/client on changes.")
        .default("0"),
    f("shutdown-timeout", Duration, Global, "Process will wait for this duration to allow open connections to finish.")
        .default("5m"),
    f("connect-timeout", Duration, Global, "Timeout for establishing connections, handshakes.")
        .default("10s"),
    f("close-timeout", Duration, Global, "Timeout for closing connections when one side terminates. Zero means immediate closure.")
        .default("60s"),
    f("max-conn-lifetime", Duration, Global, "Maximum lifetime for connections post-handshake, no matter what. Zero means infinite.")
        .default("0s"),
    f("max-concurrent-conns", Uint32, Global, "Maximum number of concurrent connections to handle in the proxy. Zero means infinite.")
        .default("0"),
    f("metrics-graphite", Str, Global, "Collect metrics and report them to the given graphite instance (raw TCP, a new connection every --metrics-interval).")
        .placeholder("ADDR"),
    f("metrics-url", Str, Global, "Collect metrics and POST them periodically to the given URL (via HTTP/JSON; HTTPS trusts --cacert or the system roots).")
        .placeholder("URL"),
    f("metrics-prefix", Str, Global, "Set prefix string for all reported metrics.")
        .default("ghostunnel")
        .placeholder("PREFIX"),
    f("metrics-interval", Duration, Global, "Collect (and post/send) metrics every specified interval.")
        .default("30s"),
    f("status", Str, Global, "Enable serving /_status and /_metrics on given HOST:PORT (or unix:SOCKET).")
        .placeholder("ADDR"),
    f("enable-pprof", Bool, Global, "Enable serving /debug/pprof endpoints alongside /_status (not supported by this build).")
        .unsupported(),
    f("enable-shutdown", Bool, Global, "Enable serving a /_shutdown endpoint alongside /_status to allow terminating via HTTP."),
    f("quiet", QuietList, Global, "Silence log messages (can be all, conns, conn-errs, handshake-errs; repeat flag for more than one).")
        .placeholder("CLASS"),
    f("skip-resolve", Bool, Global, "Skip resolving target host on startup (useful to start Ghostunnel before network is up)."),
    f("syslog", Bool, Global, "Send logs to syslog instead of stdout."),
    f("pkcs11-module", Str, Global, "Path to PKCS11 module (SO) file (not supported by this build).")
        .env("PKCS11_MODULE")
        .placeholder("PATH")
        .file()
        .unsupported(),
    f("pkcs11-token-label", Str, Global, "Token label for slot/key in PKCS11 module (not supported by this build).")
        .env("PKCS11_TOKEN_LABEL")
        .placeholder("LABEL")
        .unsupported(),
    f("pkcs11-pin", Str, Global, "PIN code for slot/key in PKCS11 module (not supported by this build).")
        .env("PKCS11_PIN")
        .placeholder("PIN")
        .unsupported(),
    f("disable-landlock", Bool, Global, "Disable Landlock sandboxing."),
    f("check", Bool, Global, "Validate the flags and load every certificate, key and CA file as a start would, print the identity and its expiry, then exit without binding anything."),
    f("cipher-suites", Str, Global, "Set of cipher suites to enable, comma-separated, in order of preference (AES, CHACHA).")
        .default("AES,CHACHA")
        .hidden(),
    f("allow-unsafe-cipher-suites", Bool, Global, "Allow cipher suites deemed to be unsafe to be enabled via the cipher-suites flag.")
        .hidden(),
    f("max-tls-version", Str, Global, "Maximum TLS version to use (TLS1.2 or TLS1.3).")
        .hidden(),
    f("use-landlock", Bool, Global, "Accepted for compatibility; Landlock is on unless --disable-landlock.")
        .hidden(),
    // Server mode.
    f("listen", Str, Server, "Address and port to listen on (can be HOST:PORT, unix:PATH, systemd:NAME or launchd:NAME).")
        .placeholder("ADDR"),
    f("target", Str, Server, "Address to forward connections to (can be HOST:PORT or unix:PATH).")
        .placeholder("ADDR"),
    f("target-status", Str, Server, "Address to target for status checking downstream healthchecks (an http:// or https:// URL, dialed through --target). Defaults to a TCP healthcheck if this flag is not passed.")
        .placeholder("URL"),
    f("proxy-protocol", Bool, Server, "Enable PROXY protocol v2 to signal connection info to backend."),
    f("proxy-protocol-mode", Enum(&["conn", "tls", "tls-full"]), Server, "PROXY protocol v2 mode: conn (addresses only), tls (adds TLS info) or tls-full (adds the client certificate).")
        .placeholder("MODE"),
    f("unsafe-target", Bool, Server, "If set, does not limit target to localhost, 127.0.0.1, [::1], or UNIX sockets."),
    f("allow-all", Bool, Server, "Allow all clients, do not check client cert subject."),
    f("allow-cn", List, Server, "Allow clients with given common name (can be repeated).")
        .placeholder("CN"),
    f("allow-ou", List, Server, "Allow clients with given organizational unit name (can be repeated).")
        .placeholder("OU"),
    f("allow-dns", List, Server, "Allow clients with given DNS subject alternative name (can be repeated).")
        .aliases(&["allow-dns-san"])
        .placeholder("DNS"),
    f("allow-uri", List, Server, "Allow clients with given URI subject alternative name (can be repeated).")
        .aliases(&["allow-uri-san"])
        .placeholder("URI"),
    f("allow-ip", IpList, Server, "Allow clients with given IP subject alternative name (can be repeated).")
        .aliases(&["allow-ip-san"])
        .placeholder("IP")
        .hidden(),
    f("allow-spki-pin", List, Server, "Allow clients whose leaf certificate's SPKI hash matches <algo>:<base64> (can be repeated).")
        .placeholder("PIN"),
    f("allow-policy", Str, Server, "Allow passing the location of an OPA bundle (not supported by this build).")
        .placeholder("BUNDLE")
        .unsupported(),
    f("allow-query", Str, Server, "Allow defining a query to validate against the client certificate and the policy (not supported by this build).")
        .placeholder("QUERY")
        .unsupported(),
    f("disable-authentication", Bool, Server, "Disable client authentication, no client certificate will be required."),
    f("auto-acme-cert", Str, Server, "Automatically obtain a certificate via ACME for the specified FQDN (not supported by this build).")
        .placeholder("FQDN")
        .unsupported(),
    f("auto-acme-email", Str, Server, "Email address associated with all ACME requests (not supported by this build).")
        .placeholder("EMAIL")
        .unsupported(),
    f("auto-acme-agree-to-tos", Bool, Server, "Agree to the Terms of Service of the ACME CA (not supported by this build).")
        .unsupported(),
    f("auto-acme-ca", Str, Server, "Specify the URL to the ACME CA (not supported by this build).")
        .placeholder("URL")
        .unsupported(),
    f("auto-acme-testca", Str, Server, "Specify the URL to the ACME CA's Test/Staging environment (not supported by this build).")
        .placeholder("URL")
        .unsupported(),
    f("auto-acme-renew-check-interval", Duration, Server, "ACME renewal check interval (not supported by this build).")
        .hidden()
        .unsupported(),
    f("auto-acme-alt-tls-alpn-port", Uint32, Server, "ACME TLS-ALPN challenge port (not supported by this build).")
        .hidden()
        .unsupported(),
    // Client mode.
    f("listen", Str, Client, "Address and port to listen on (can be HOST:PORT, unix:PATH, systemd:NAME or launchd:NAME).")
        .placeholder("ADDR"),
    f("target", Str, Client, "Address to forward connections to (must be HOST:PORT).")
        .placeholder("ADDR"),
    f("unsafe-listen", Bool, Client, "If set, does not limit listen to localhost, 127.0.0.1, [::1], or UNIX sockets."),
    f("override-server-name", Str, Client, "If set, overrides the server name used for hostname verification.")
        .placeholder("NAME"),
    f("proxy", Url, Client, "If set, connect to target over given proxy (HTTP CONNECT or SOCKS5). Must be a proxy URL.")
        .aliases(&["connect-proxy"])
        .placeholder("URL"),
    f("verify-cn", List, Client, "Allow servers with given common name (can be repeated).")
        .placeholder("CN"),
    f("verify-ou", List, Client, "Allow servers with given organizational unit name (can be repeated).")
        .placeholder("OU"),
    f("verify-dns", List, Client, "Allow servers with given DNS subject alternative name (can be repeated).")
        .aliases(&["verify-dns-san"])
        .placeholder("DNS"),
    f("verify-uri", List, Client, "Allow servers with given URI subject alternative name (can be repeated).")
        .aliases(&["verify-uri-san"])
        .placeholder("URI"),
    f("verify-ip", IpList, Client, "Allow servers with given IP subject alternative name (can be repeated).")
        .aliases(&["verify-ip-san"])
        .placeholder("IP")
        .hidden(),
    f("verify-spki-pin", List, Client, "Allow servers whose leaf certificate's SPKI hash matches <algo>:<base64> (can be repeated).")
        .placeholder("PIN"),
    f("verify-policy", Str, Client, "Allow passing the location of an OPA bundle (not supported by this build).")
        .placeholder("BUNDLE")
        .unsupported(),
    f("verify-query", Str, Client, "Allow defining a query to validate against the server certificate and the policy (not supported by this build).")
        .placeholder("QUERY")
        .unsupported(),
    f("disable-authentication", Bool, Client, "Disable client authentication, no certificate will be provided to the server."),
];

const ABOUT: &str =
    "A simple SSL/TLS proxy with mutual authentication for securing non-TLS services.";
const SERVER_ABOUT: &str = "Server mode (TLS listener -> plain TCP/UNIX target).";
const CLIENT_ABOUT: &str = "Client mode (plain TCP/UNIX listener -> TLS target).";

/// The parser's own flags, shown first in help: (head, help).
const BUILTIN_HELP: &[(&str, &str)] = &[
    (
        "--help",
        "Show context-sensitive help (also try --help-long and --help-man).",
    ),
    ("--version", "Show application version."),
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
    /// `--quiet` classes, for the logger (set up before mode validation).
    pub quiet: Quiet,
    /// `--syslog`, for the logger.
    pub syslog: bool,
    /// `--check`: validate and load, then exit without binding (see `main.rs`).
    pub check: bool,
    server: bool,
    /// Explicitly given flags and env fallbacks, by canonical name.
    given: HashMap<&'static str, Value>,
}

/// An action the parser runs as soon as it sees it, even when a later argument is wrong
/// (kingpin's pre-actions): `--version`, `--help-long`, `--help-man`, the `help` command.
enum PreAction {
    Version,
    LongHelp,
    Man,
    BashCompletion,
    ZshCompletion,
    HelpCommand,
}

/// Parser state between tokens.
#[derive(Default)]
struct Scan {
    command: Option<Scope>,
    help_command: bool,
    help_topic: Option<Scope>,
    /// `--help` seen.
    help: bool,
    /// The `help` command was given a word that names no command.
    bad_help_topic: bool,
    pre_action: Option<PreAction>,
    /// The first positional word after the command: parsing stops there.
    stray: Option<String>,
    /// The first value or repeat error; reported after help and stray words.
    deferred: Option<String>,
    given: HashMap<&'static str, Value>,
}

impl Scan {
    fn defer(&mut self, err: String) {
        self.deferred.get_or_insert(err);
    }

    /// A positional word. Returns `Ok(true)` when parsing must stop (a stray word).
    fn positional(&mut self, word: String) -> Result<bool, String> {
        if self.command.is_some() {
            self.stray = Some(word);
            return Ok(true);
        }
        let scope = match word.as_str() {
            "server" => Some(Server),
            "client" => Some(Client),
            _ => None,
        };
        if self.help_command {
            match scope {
                Some(s) if self.help_topic.is_none() => self.help_topic = Some(s),
                _ => {
                    self.bad_help_topic = true;
                    return Err(format!("expected command but got \"{word}\""));
                }
            }
            return Ok(false);
        }
        match (scope, word.as_str()) {
            (Some(s), _) => self.command = Some(s),
            (None, "help") => {
                self.help_command = true;
                self.pre_action.get_or_insert(PreAction::HelpCommand);
            }
            _ => return Err(format!("expected command but got \"{word}\"")),
        }
        Ok(false)
    }

    /// Reads one token; `Ok(false)` ends the scan.
    fn token(&mut self, parser: &mut lexopt::Parser) -> Result<bool, String> {
        let Some(arg) = parser.next().map_err(|e| e.to_string())? else {
            return Ok(false);
        };
        let name = match arg {
            lexopt::Arg::Short(c) => return Err(format!("unknown short flag '-{c}'")),
            lexopt::Arg::Value(v) if v == "-" => return Err("unknown short flag '-'".into()),
            lexopt::Arg::Value(v) => return self.positional(lossy(&v)).map(|stop| !stop),
            lexopt::Arg::Long(name) => name.to_string(),
        };
        let builtin = match name.as_str() {
            "help" => Some(None),
            "version" => Some(Some(PreAction::Version)),
            "help-long" => Some(Some(PreAction::LongHelp)),
            "help-man" | "help-custom-man" => Some(Some(PreAction::Man)),
            "completion-script-bash" => Some(Some(PreAction::BashCompletion)),
            "completion-script-zsh" => Some(Some(PreAction::ZshCompletion)),
            _ => None,
        };
        if let Some(action) = builtin {
            match action {
                Some(action) => {
                    self.pre_action.get_or_insert(action);
                }
                None => self.help = true,
            }
            // Booleans take no value: `--help=x` leaves `x` as a positional word.
            return match parser.optional_value() {
                Some(v) => self.positional(lossy(&v)).map(|stop| !stop),
                None => Ok(true),
            };
        }
        let (flag, negated) =
            lookup(&name, self.command).ok_or_else(|| format!("unknown long flag '--{name}'"))?;
        if flag.kind == Bool {
            if self.given.contains_key(flag.name) {
                self.defer(format!("flag '{}' cannot be repeated", flag.name));
            } else {
                self.given.insert(flag.name, Value::Bool(!negated));
            }
            return match parser.optional_value() {
                Some(v) => self.positional(lossy(&v)).map(|stop| !stop),
                None => Ok(true),
            };
        }
        let value = match parser.optional_value() {
            Some(v) => lossy(&v),
            None => parser
                .raw_args()
                .map_err(|e| e.to_string())?
                .next_if(|v| !v.as_encoded_bytes().starts_with(b"-"))
                .map(|v| lossy(&v))
                .ok_or_else(|| format!("expected argument for flag '--{name}'"))?,
        };
        if flag.kind.is_list() {
            if let Err(e) = check_value(flag, &value) {
                self.defer(e);
            }
            if let Value::Many(values) = self
                .given
                .entry(flag.name)
                .or_insert_with(|| Value::Many(Vec::new()))
            {
                values.push(value);
            }
        } else if self.given.contains_key(flag.name) {
            self.defer(format!("flag '{}' cannot be repeated", flag.name));
        } else {
            if let Err(e) = check_value(flag, &value) {
                self.defer(e);
            }
            self.given.insert(flag.name, Value::One(value));
        }
        Ok(true)
    }
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

/// Parses `args` (without argv[0]). `env` looks up environment fallbacks. The error is the
/// bare message; the caller prints `ghostunnel: error: <msg>, try --help` and exits 1.
///
/// Precedence follows the reference parser: a parse error (unknown flag or command, missing
/// flag argument) stops the scan; `--version`, `--help-long`, `--help-man` and `help` seen
/// before it still win. Then `--help`, then the first stray word (nothing after it is read),
/// then the first bad or repeated value, then usage when no command was given, then missing
/// required flags, then the parse-stage checks (SPEC 2.7.1).
pub fn parse(args: Vec<OsString>, env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, String> {
    let args = expand_arg_files(args, 0)?;
    if args.is_empty() {
        return Ok(usage(None));
    }
    let mut scan = Scan::default();
    let mut parser = lexopt::Parser::from_args(args);
    let scanned = loop {
        match scan.token(&mut parser) {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if let (true, Err(e)) = (scan.bad_help_topic, &scanned) {
        return Err(e.clone());
    }
    if let Some(action) = scan.pre_action {
        let topic = scan.command.or(scan.help_topic);
        return Ok(match action {
            PreAction::Version => Parsed::Exit {
                text: version(),
                stdout: false,
            },
            PreAction::LongHelp => Parsed::Exit {
                text: long_help(),
                stdout: true,
            },
            PreAction::Man => Parsed::Exit {
                text: doc::man_page(),
                stdout: true,
            },
            PreAction::BashCompletion => Parsed::Exit {
                text: doc::bash_completion(),
                stdout: true,
            },
            PreAction::ZshCompletion => Parsed::Exit {
                text: doc::zsh_completion(),
                stdout: true,
            },
            PreAction::HelpCommand => usage(topic),
        });
    }
    scanned?;
    if scan.help {
        return Ok(usage(scan.command));
    }
    if let Some(word) = scan.stray {
        return Err(format!("unexpected {word}"));
    }
    if let Some(e) = scan.deferred {
        return Err(e);
    }
    let Some(command) = scan.command else {
        return Ok(usage(None));
    };
    let mut given = scan.given;
    // Environment fallbacks, only for flags absent from the command line.
    for flag in FLAGS
        .iter()
        .filter(|f| f.scope == Global || f.scope == command)
    {
        let Some(var) = flag.env else { continue };
        if given.contains_key(flag.name) {
            continue;
        }
        if let Some(value) = env(var).filter(|v| !v.is_empty()) {
            check_value(flag, &value)?;
            given.insert(flag.name, Value::One(value));
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
    let mut raw = RawArgs {
        quiet: Quiet::default(),
        syslog: false,
        check: false,
        server: command == Server,
        given,
    };
    raw.quiet = raw.quiet_classes();
    raw.syslog = raw.bool("syslog");
    raw.check = raw.bool("check");
    raw.parse_stage_checks()?;
    Ok(Parsed::Run(raw))
}

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
        Uint32 => parse_go_uint32(value).map(drop),
        IpList => value
            .parse::<IpAddr>()
            .map(drop)
            .map_err(|_| format!("'{value}' is not an IP address")),
        QuietList => check_enum(QUIET_CLASSES, value),
        Enum(words) => check_enum(words, value),
        Url => check_url(value).map_err(|e| format!("invalid URL: parse {}: {e}", go_quote(value))),
        Bool | Str | List => Ok(()),
    }
}

fn check_enum(words: &[&str], value: &str) -> Result<(), String> {
    if words.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "enum value must be one of {}, got '{value}'",
            words.join(",")
        ))
    }
}

/// Go's `strconv.ParseUint(s, 0, 32)`: base prefixes `0x`, `0o`, `0b`, a leading `0` for
/// octal, and `_` separators; errors `strconv.ParseUint: parsing "<s>": <why>`.
fn parse_go_uint32(s: &str) -> Result<u32, String> {
    let err = |why: &str| format!("strconv.ParseUint: parsing {}: {why}", go_quote(s));
    let bytes = s.as_bytes();
    let (base, digits) = match bytes {
        [] => return Err(err("invalid syntax")),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'x') => (16, &bytes[2..]),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'o') => (8, &bytes[2..]),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'b') => (2, &bytes[2..]),
        [b'0', ..] => (8, &bytes[1..]),
        _ => (10, bytes),
    };
    let mut n: u64 = 0;
    let mut underscores = false;
    for &c in digits {
        let d = match c {
            b'_' => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => c - b'0',
            c if c.is_ascii_alphabetic() => c.to_ascii_lowercase() - b'a' + 10,
            _ => return Err(err("invalid syntax")),
        };
        if u64::from(d) >= base {
            return Err(err("invalid syntax"));
        }
        n = n * base + u64::from(d);
        if n > u64::from(u32::MAX) {
            return Err(err("value out of range"));
        }
    }
    if underscores && !underscores_ok(s) {
        return Err(err("invalid syntax"));
    }
    u32::try_from(n).map_err(|_| err("value out of range"))
}

/// Go's `underscoreOK`: `_` only between digits or after a base prefix.
fn underscores_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    for &c in &b[i..] {
        if c.is_ascii_digit() || hex && c.is_ascii_hexdigit() {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// The parse-time part of Go's `url.Parse` that users hit (`--proxy`): control characters, a
/// missing scheme before `:`, and a colon in the first segment of a scheme-less URL.
fn check_url(s: &str) -> Result<(), &'static str> {
    let s = s.split_once('#').map_or(s, |(u, _)| u);
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL");
    }
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme"),
            b':' => return Ok(()),
            _ => break,
        }
    }
    let rest = s.split_once('?').map_or(s, |(p, _)| p);
    if !rest.starts_with('/') && rest.split('/').next().is_some_and(|seg| seg.contains(':')) {
        return Err("first path segment in URL cannot contain colon");
    }
    Ok(())
}

/// Go's `%q` for the strings in our messages.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Replaces `@path` arguments by the lines of the file (blank lines and lines starting with
/// `#` skipped), recursively. Arguments after `--` are left alone.
fn expand_arg_files(args: Vec<OsString>, depth: usize) -> Result<Vec<OsString>, String> {
    let mut out = Vec::with_capacity(args.len());
    let mut args_only = false;
    for arg in args {
        args_only |= arg == "--";
        let Some(path) = arg.as_bytes().strip_prefix(b"@").filter(|_| !args_only) else {
            out.push(arg);
            continue;
        };
        let path = Path::new(OsStr::from_bytes(path));
        if depth >= 10 {
            return Err(format!("open {}: too many nested @files", path.display()));
        }
        let text = std::fs::read(path).map_err(|e| {
            format!(
                "open {}: {}",
                path.display(),
                crate::net::strip_os_error(&e)
            )
        })?;
        let lines = String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(OsString::from)
            .collect();
        out.extend(expand_arg_files(lines, depth + 1)?);
    }
    Ok(out)
}

/// `--version`: the reference's shape with our toolchain (SPEC 2.1).
fn version() -> String {
    format!(
        "rev {} built with {} (pkcs11: false, keychain: false)\n",
        env!("CARGO_PKG_VERSION"),
        env!("GHOSTUNNEL_TOOLCHAIN")
    )
}

/// Appends the visible flags of `scope` as aligned help rows.
fn flag_rows(text: &mut String, rows: impl Iterator<Item = (String, String)>) {
    for (head, help) in rows {
        text.push_str(&format!("  {head:<30} {help}\n"));
    }
}

fn visible(scope: Scope) -> impl Iterator<Item = (String, String)> {
    FLAGS
        .iter()
        .filter(move |f| f.scope == scope && !f.hidden)
        .map(|f| (f.head(), f.help_text()))
}

/// The usage text (stderr), generated from the flag table; hidden flags are left out.
/// `command` selects the context-sensitive form (`server --help`, `help client`).
fn usage(command: Option<Scope>) -> Parsed {
    let mut text = String::new();
    match command {
        Some(Server) => {
            text.push_str("usage: ghostunnel server --listen=ADDR --target=ADDR [<flags>]\n\n")
        }
        Some(Client) => {
            text.push_str("usage: ghostunnel client --listen=ADDR --target=ADDR [<flags>]\n\n")
        }
        _ => text.push_str("usage: ghostunnel [<flags>] <command> [<args> ...]\n\n"),
    }
    text.push_str(&format!("{}\n\nFlags:\n", command.map_or(ABOUT, about)));
    let builtin = BUILTIN_HELP
        .iter()
        .map(|(h, t)| (h.to_string(), t.to_string()));
    flag_rows(&mut text, builtin.chain(visible(Global)));
    match command {
        Some(scope) => flag_rows(&mut text, visible(scope)),
        None => text.push_str(&format!(
            "\nCommands:\n  help [<command>...]\n    Show help.\n\n  server --listen=ADDR --target=ADDR [<flags>]\n    {SERVER_ABOUT}\n\n  client --listen=ADDR --target=ADDR [<flags>]\n    {CLIENT_ABOUT}\n"
        )),
    }
    Parsed::Exit {
        text,
        stdout: false,
    }
}

fn about(scope: Scope) -> &'static str {
    match scope {
        Global => ABOUT,
        Server => SERVER_ABOUT,
        Client => CLIENT_ABOUT,
    }
}

/// `--help-long` (stdout): global flags, then every command with its flags.
fn long_help() -> String {
    let mut text =
        format!("usage: ghostunnel [<flags>] <command> [<args> ...]\n\n{ABOUT}\n\nFlags:\n");
    let builtin = BUILTIN_HELP
        .iter()
        .map(|(h, t)| (h.to_string(), t.to_string()));
    flag_rows(&mut text, builtin.chain(visible(Global)));
    text.push_str("\nCommands:\n  help [<command>...]\n    Show help.\n");
    for scope in [Server, Client] {
        let name = if scope == Server { "server" } else { "client" };
        text.push_str(&format!(
            "\n  {name} --listen=ADDR --target=ADDR [<flags>]\n    {}\n\n",
            about(scope)
        ));
        let mut rows = String::new();
        flag_rows(&mut rows, visible(scope));
        for line in rows.lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    text
}

impl RawArgs {
    /// `server` or `client`, for the first log line (before mode validation).
    pub fn mode_name(&self) -> &'static str {
        if self.server { "server" } else { "client" }
    }

    fn bool(&self, name: &str) -> bool {
        matches!(self.given.get(name), Some(Value::Bool(true)))
    }

    /// A scalar flag's value, or its default.
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

    /// Whether `flag` was given (or came from the environment) with a non-default value.
    fn is_set(&self, flag: &Flag) -> bool {
        match self.given.get(flag.name) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Many(v)) => !v.is_empty(),
            Some(Value::One(_)) if flag.kind == Duration => {
                self.nanos(flag.name) != parse_go_duration(flag.default).unwrap_or(0)
            }
            Some(Value::One(v)) if flag.kind == Uint32 => {
                parse_go_uint32(v).unwrap_or(0) != parse_go_uint32(flag.default).unwrap_or(0)
            }
            Some(Value::One(v)) => v != flag.default,
        }
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
        let http = |s: &str| s.starts_with("http://") || s.starts_with("https://");
        let url = self.str("metrics-url");
        if !url.is_empty() && !http(url) {
            return Err("--metrics-url should start with http:// or https://".into());
        }
        let target_status = self.str("target-status");
        if !target_status.is_empty() && !http(target_status) {
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
    /// `error: <msg>`. Flags for features this build lacks fail first, so that no
    /// configuration runs with one of them silently ignored.
    pub fn into_config(self) -> Result<Config, String> {
        let scope = if self.server { Server } else { Client };
        if let Some(flag) = FLAGS
            .iter()
            .filter(|f| f.unsupported && (f.scope == Global || f.scope == scope))
            .find(|f| self.is_set(f))
        {
            return Err(format!("--{} is not supported by this build", flag.name));
        }
        let identity = self.identity()?;
        let mode = if self.server {
            Mode::Server(self.server_opts()?)
        } else {
            Mode::Client(self.client_opts()?)
        };
        let tls = self.tls_policy()?;
        // Both were checked by the mode step above (`--listen` only for its prefix).
        let listen = Addr::parse(self.str("listen"))
            .map_err(|e| format!("invalid --listen address: {e}"))?;
        let target = Addr::parse(self.str("target"))
            .map_err(|e| format!("invalid --target address: {e}"))?;
        // URI patterns compile last: the reference only compiles them after loading
        // certificates (SPEC 5.4), so every 2.7.2 message comes first.
        let mode = match mode {
            Mode::Server(mut opts) => {
                if let ServerAuth::Acl(acl) = &mut opts.auth {
                    acl.uri = self.uri_patterns("allow-uri")?;
                }
                Mode::Server(opts)
            }
            Mode::Client(mut opts) => {
                if let ClientVerify::Standard(acl) = &mut opts.verify {
                    acl.uri = self.uri_patterns("verify-uri")?;
                }
                Mode::Client(opts)
            }
        };
        let duration = |name: &str| {
            Duration::from_nanos(u64::try_from(self.nanos(name).max(0)).unwrap_or(u64::MAX))
        };
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
        let metrics = self.metrics_opts()?;
        let path = |name: &str| {
            Some(self.str(name))
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        Ok(Config {
            mode,
            listen,
            target,
            identity,
            cacert: path("cacert"),
            timeouts,
            max_concurrent_conns: parse_go_uint32(self.str("max-concurrent-conns")).unwrap_or(0),
            timed_reload: positive("timed-reload"),
            tls,
            skip_resolve: self.bool("skip-resolve"),
            disable_landlock: self.bool("disable-landlock"),
            status,
            enable_shutdown: self.bool("enable-shutdown"),
            metrics,
        })
    }

    /// `--metrics-*` (SPEC 8.5), checked after the mode steps.
    fn metrics_opts(&self) -> Result<MetricsOpts, String> {
        let graphite = match self.str("metrics-graphite") {
            "" => None,
            raw => {
                let addr = Addr::parse(raw)
                    .map_err(|e| format!("invalid --metrics-graphite address: {e}"))?;
                if addr.tcp_port().is_none_or(|p| p == 0) {
                    return Err(format!(
                        "invalid --metrics-graphite address {raw}: must be HOST:PORT with a non-zero port"
                    ));
                }
                Some(addr)
            }
        };
        let url = match self.str("metrics-url") {
            "" => None,
            raw => Some(HttpUrl::parse(raw).map_err(|e| format!("invalid --metrics-url: {e}"))?),
        };
        if self.nanos("metrics-interval") <= 0 {
            return Err("--metrics-interval duration must be positive".into());
        }
        let interval =
            Duration::from_nanos(u64::try_from(self.nanos("metrics-interval")).unwrap_or(u64::MAX));
        Ok(MetricsOpts {
            graphite,
            url,
            prefix: self.str("metrics-prefix").to_string(),
            interval,
        })
    }

    /// The credential count and pairing rules (SPEC 2.7.2 step 1). PKCS#11, ACME and the
    /// workload API never count here: they were refused as unsupported.
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
                password: self.storepass()?,
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

    /// `--storepass`, or the first line of `--storepass-file` (never both).
    fn storepass(&self) -> Result<String, String> {
        let file = self.str("storepass-file");
        if file.is_empty() {
            return Ok(self.str("storepass").to_string());
        }
        if self.given.contains_key("storepass") {
            return Err("--storepass and --storepass-file are mutually exclusive".into());
        }
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "--storepass-file: open {file}: {}",
                crate::net::strip_os_error(&e)
            )
        })?;
        Ok(text.lines().next().unwrap_or_default().to_string())
    }

    /// The name ACL of `--allow-*` or `--verify-*`; URI patterns are filled in later.
    fn acl(&self, prefix: &str) -> Acl {
        let list = |kind: &str| self.list(&format!("{prefix}-{kind}")).to_vec();
        Acl {
            cn: list("cn"),
            ou: list("ou"),
            dns: list("dns"),
            // Validated while parsing.
            ip: list("ip").iter().filter_map(|s| s.parse().ok()).collect(),
            uri: Vec::new(),
        }
    }

    fn uri_patterns(&self, flag: &str) -> Result<Vec<UriPattern>, String> {
        self.list(flag)
            .iter()
            .map(|p| {
                UriPattern::compile(p)
                    .map_err(|e| format!("invalid URI pattern in --{flag} flag ({e})"))
            })
            .collect()
    }

    fn pins(&self, flag: &str) -> Result<Vec<SpkiPin>, String> {
        self.list(flag)
            .iter()
            .map(|p| SpkiPin::parse(p).map_err(|e| format!("--{flag}: {e}")))
            .collect()
    }

    fn any_list(&self, names: &[&str]) -> bool {
        names.iter().any(|n| !self.list(n).is_empty())
    }

    /// SPEC 2.7.2 server steps 2-8 (step 1 is [`RawArgs::identity`]).
    fn server_opts(&self) -> Result<ServerOpts, String> {
        let disable = self.bool("disable-authentication");
        let all = self.bool("allow-all");
        let a = self.any_list(&["allow-cn", "allow-ou", "allow-dns", "allow-ip", "allow-uri"]);
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
            (false, "") => None,
            (true, "") => Some(ProxyProtocolMode::Conn),
            (true, _) => {
                return Err(
                    "--proxy-protocol and --proxy-protocol-mode are mutually exclusive".into(),
                );
            }
            (false, "tls") => Some(ProxyProtocolMode::Tls),
            (false, "tls-full") => Some(ProxyProtocolMode::TlsFull),
            // The enum was checked while parsing, so this is `conn`.
            (false, _) => Some(ProxyProtocolMode::Conn),
        };
        self.tls_policy()?;
        let auth = if disable {
            ServerAuth::Disabled
        } else if all {
            ServerAuth::AllowAll
        } else if p {
            ServerAuth::Pins(pins)
        } else {
            ServerAuth::Acl(self.acl("allow"))
        };
        let target_status = match self.str("target-status") {
            "" => None,
            url => Some(HttpUrl::parse(url).map_err(|e| format!("invalid --target-status: {e}"))?),
        };
        Ok(ServerOpts {
            auth,
            proxy_protocol,
            target_status,
        })
    }

    /// SPEC 2.7.2 client steps 2-6 (step 1 is [`RawArgs::identity`]).
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
            ClientVerify::Standard(self.acl("verify"))
        } else {
            if self.any_list(&names) {
                return Err(
                    "--verify-spki-pin is mutually exclusive with other verification flags".into(),
                );
            }
            ClientVerify::Pins(self.pins("verify-spki-pin")?)
        };
        self.tls_policy()?;
        let non_empty = |name: &str| Some(self.str(name).to_string()).filter(|s| !s.is_empty());
        Ok(ClientOpts {
            override_server_name: non_empty("override-server-name"),
            verify,
            proxy: non_empty("proxy"),
        })
    }

    /// `--cipher-suites` and `--max-tls-version` (SPEC 2.6).
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

    const PIN: &str = "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn parse_raw(a: &[&str]) -> Result<Parsed, String> {
        parse(args(a), &|_| None)
    }

    fn parse_env(a: &[&str], vars: &[(&str, &str)]) -> Result<Parsed, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(args(a), &|n| vars.get(n).cloned())
    }

    fn err(a: &[&str]) -> String {
        match parse_raw(a) {
            Err(e) => e,
            Ok(p) => panic!("{a:?} parsed: {p:?}"),
        }
    }

    fn raw(a: &[&str]) -> RawArgs {
        match parse_raw(a) {
            Ok(Parsed::Run(raw)) => raw,
            other => panic!("{a:?}: {other:?}"),
        }
    }

    /// `(text, stdout)` of an exit-0 result.
    fn exit(a: &[&str]) -> (String, bool) {
        match parse_raw(a) {
            Ok(Parsed::Exit { text, stdout }) => (text, stdout),
            other => panic!("{a:?}: {other:?}"),
        }
    }

    fn config(a: &[&str]) -> Result<Config, String> {
        match parse_raw(a)? {
            Parsed::Run(raw) => raw.into_config(),
            Parsed::Exit { .. } => Err("exit".into()),
        }
    }

    fn cat(base: &[&str], extra: &[&str]) -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    }

    const SERVER: [&str; 4] = [
        "server",
        "--listen=:8443",
        "--target=localhost:80",
        "--keystore=k.pem",
    ];
    const CLIENT: [&str; 4] = [
        "client",
        "--listen=localhost:1",
        "--target=h:2",
        "--keystore=k.pem",
    ];
    /// Server without credentials or access control.
    const BARE: [&str; 3] = ["server", "--listen=:1", "--target=localhost:2"];

    fn server(extra: &[&str]) -> Result<Config, String> {
        let a = cat(&SERVER, extra);
        config(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn server_err(extra: &[&str]) -> String {
        match server(extra) {
            Err(e) => e,
            Ok(c) => panic!("{extra:?} validated: {c:?}"),
        }
    }

    fn client(extra: &[&str]) -> Result<Config, String> {
        let a = cat(&CLIENT, extra);
        config(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn client_err(extra: &[&str]) -> String {
        match client(extra) {
            Err(e) => e,
            Ok(c) => panic!("{extra:?} validated: {c:?}"),
        }
    }

    fn bare_err(extra: &[&str]) -> String {
        let a = cat(&BARE, extra);
        err(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn server_auth(c: &Config) -> &ServerAuth {
        match &c.mode {
            Mode::Server(s) => &s.auth,
            Mode::Client(_) => panic!("client mode"),
        }
    }

    fn client_opts(c: &Config) -> &ClientOpts {
        match &c.mode {
            Mode::Client(o) => o,
            Mode::Server(_) => panic!("server mode"),
        }
    }

    // ---- Grammar (SPEC 2.1) ----

    #[test]
    fn short_flags_are_unknown() {
        assert_eq!(err(&["-h"]), "unknown short flag '-h'");
        assert_eq!(err(&["server", "-abc"]), "unknown short flag '-a'");
        assert_eq!(err(&["server", "-"]), "unknown short flag '-'");
    }

    #[test]
    fn unknown_long_flag() {
        assert_eq!(err(&["server", "--bogus"]), "unknown long flag '--bogus'");
        assert_eq!(err(&["--bogus", "server"]), "unknown long flag '--bogus'");
        assert_eq!(err(&["server", "--bogus=1"]), "unknown long flag '--bogus'");
    }

    #[test]
    fn no_prefix_only_for_booleans() {
        assert_eq!(
            err(&["server", "--no-listen"]),
            "unknown long flag '--no-listen'"
        );
        assert!(!raw(&[&BARE[..], &["--no-skip-resolve"]].concat()).bool("skip-resolve"));
        assert!(raw(&[&BARE[..], &["--skip-resolve"]].concat()).bool("skip-resolve"));
    }

    #[test]
    fn unknown_command() {
        assert_eq!(err(&["bogus"]), "expected command but got \"bogus\"");
        assert_eq!(
            err(&["--syslog", "serve"]),
            "expected command but got \"serve\""
        );
    }

    #[test]
    fn stray_positional() {
        assert_eq!(bare_err(&["extra"]), "unexpected extra");
        // Nothing after the stray word is read, not even unknown flags.
        assert_eq!(bare_err(&["extra", "--bogus"]), "unexpected extra");
        // A stray word beats missing required flags and bad values.
        assert_eq!(err(&["server", "x"]), "unexpected x");
        assert_eq!(err(&["server", "--connect-timeout=5", "x"]), "unexpected x");
        assert_eq!(err(&["server", "--", "--listen"]), "unexpected --listen");
    }

    #[test]
    fn booleans_take_no_value() {
        assert_eq!(bare_err(&["--allow-all=true"]), "unexpected true");
        assert_eq!(bare_err(&["--allow-all=false"]), "unexpected false");
        assert_eq!(bare_err(&["--no-allow-all=x"]), "unexpected x");
        // The value is a positional word: before the command it can select one.
        assert!(raw(&["--syslog=server", "--listen=:1", "--target=localhost:2"]).syslog);
    }

    #[test]
    fn boolean_twice_in_any_form() {
        for second in ["--allow-all", "--no-allow-all"] {
            assert_eq!(
                bare_err(&["--allow-all", second]),
                "flag 'allow-all' cannot be repeated"
            );
        }
        assert_eq!(
            bare_err(&["--no-syslog", "--syslog"]),
            "flag 'syslog' cannot be repeated"
        );
    }

    #[test]
    fn scalar_twice() {
        assert_eq!(
            err(&["server", "--listen=a:1", "--listen=b:1", "--target=x:1"]),
            "flag 'listen' cannot be repeated"
        );
        assert_eq!(
            bare_err(&["--keystore=a", "--keystore", "a"]),
            "flag 'keystore' cannot be repeated"
        );
        // Global flags count across both sides of the command.
        assert_eq!(
            err(&[
                "--cacert=a",
                "server",
                "--listen=:1",
                "--target=x:1",
                "--cacert=b"
            ]),
            "flag 'cacert' cannot be repeated"
        );
        // Aliases fill the same flag.
        assert_eq!(
            err(&[
                "client",
                "--listen=localhost:1",
                "--target=h:1",
                "--proxy=http://a",
                "--connect-proxy=http://b"
            ]),
            "flag 'proxy' cannot be repeated"
        );
    }

    #[test]
    fn equals_or_separate_value() {
        let r = raw(&[
            "server",
            "--listen",
            ":1",
            "--target=localhost:2",
            "--keystore",
            "k",
        ]);
        assert_eq!(r.str("listen"), ":1");
        assert_eq!(r.str("keystore"), "k");
        // `=` keeps everything after the first `=`, including more `=` and leading dashes.
        let r = raw(&[&BARE[..], &["--storepass=-a=b"]].concat());
        assert_eq!(r.str("storepass"), "-a=b");
        let r = raw(&[&BARE[..], &["--storepass="]].concat());
        assert_eq!(r.str("storepass"), "");
    }

    #[test]
    fn missing_flag_argument() {
        assert_eq!(
            bare_err(&["--keystore"]),
            "expected argument for flag '--keystore'"
        );
        // A following flag is not taken as the value.
        assert_eq!(
            err(&["server", "--listen", "--target=x:1"]),
            "expected argument for flag '--listen'"
        );
        assert_eq!(
            bare_err(&["--connect-timeout", "-1s"]),
            "expected argument for flag '--connect-timeout'"
        );
        assert_eq!(
            bare_err(&["--allow-dns-san"]),
            "expected argument for flag '--allow-dns-san'"
        );
    }

    #[test]
    fn required_flags() {
        assert_eq!(
            err(&["server"]),
            "required flag(s) '--listen', '--target' not provided"
        );
        assert_eq!(
            err(&["client", "--listen=localhost:1"]),
            "required flag(s) '--target' not provided"
        );
        assert_eq!(
            err(&["server", "--target=localhost:1"]),
            "required flag(s) '--listen' not provided"
        );
        // Bad values are reported before missing required flags.
        assert_eq!(
            err(&["server", "--connect-timeout=x"]),
            "time: invalid duration \"x\""
        );
    }

    #[test]
    fn global_flags_either_side_of_the_command() {
        let before = raw(&[
            "--quiet=conns",
            "--syslog",
            "server",
            "--listen=:1",
            "--target=x:2",
        ]);
        let after = raw(&[
            "server",
            "--listen=:1",
            "--target=x:2",
            "--quiet=conns",
            "--syslog",
        ]);
        for r in [before, after] {
            assert!(r.syslog && r.quiet.conns && !r.quiet.all);
            assert_eq!(r.mode_name(), "server");
        }
        assert_eq!(raw(&CLIENT).mode_name(), "client");
    }

    #[test]
    fn mode_flags_only_after_their_command() {
        assert_eq!(
            err(&["--listen=:1", "server"]),
            "unknown long flag '--listen'"
        );
        assert_eq!(
            err(&["--allow-all", "server"]),
            "unknown long flag '--allow-all'"
        );
    }

    #[test]
    fn server_only_flags_unknown_in_client_mode_and_vice_versa() {
        for flag in [
            "--allow-all",
            "--allow-cn=x",
            "--unsafe-target",
            "--proxy-protocol",
            "--target-status=http://x",
            "--allow-policy=x",
            "--auto-acme-cert=x",
        ] {
            let name = flag.split('=').next().unwrap_or(flag);
            let a = cat(&CLIENT, &[flag]);
            assert_eq!(
                err(&a.iter().map(String::as_str).collect::<Vec<_>>()),
                format!("unknown long flag '{name}'")
            );
        }
        for flag in [
            "--unsafe-listen",
            "--verify-cn=x",
            "--override-server-name=x",
            "--proxy=http://x",
            "--connect-proxy=http://x",
            "--verify-policy=x",
        ] {
            let name = flag.split('=').next().unwrap_or(flag);
            assert_eq!(bare_err(&[flag]), format!("unknown long flag '{name}'"));
        }
    }

    #[test]
    fn lists_accumulate_in_order() {
        let r = raw(&[
            &BARE[..],
            &["--allow-cn=a", "--allow-cn", "b", "--allow-cn=a"],
        ]
        .concat());
        assert_eq!(r.list("allow-cn"), ["a", "b", "a"]);
    }

    #[test]
    fn hidden_aliases() {
        let r = raw(&[
            &BARE[..],
            &[
                "--allow-dns=a",
                "--allow-dns-san=b",
                "--allow-uri-san=u",
                "--allow-ip-san=::1",
            ],
        ]
        .concat());
        assert_eq!(r.list("allow-dns"), ["a", "b"]);
        assert_eq!(r.list("allow-uri"), ["u"]);
        assert_eq!(r.list("allow-ip"), ["::1"]);
        let r = raw(&[
            &CLIENT[..],
            &[
                "--verify-dns-san=a",
                "--verify-uri-san=u",
                "--verify-ip-san=1.2.3.4",
                "--connect-proxy=http://p:1",
            ],
        ]
        .concat());
        assert_eq!(r.list("verify-dns"), ["a"]);
        assert_eq!(r.list("verify-uri"), ["u"]);
        assert_eq!(r.list("verify-ip"), ["1.2.3.4"]);
        assert_eq!(r.str("proxy"), "http://p:1");
    }

    #[test]
    fn arg_files() {
        let dir = std::env::temp_dir().join(format!("ghostunnel-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let inner = dir.join("inner");
        std::fs::write(&inner, "--allow-cn=from inner\n").unwrap();
        let outer = dir.join("outer");
        std::fs::write(
            &outer,
            format!(
                "# comment\nserver\n\n--listen=:1\n   \n--target=localhost:2\n--storepass= spaced \r\n@{}\n",
                inner.display()
            ),
        )
        .unwrap();
        let at = format!("@{}", outer.display());
        let r = raw(&[&at]);
        assert_eq!(r.str("listen"), ":1");
        assert_eq!(r.str("storepass"), " spaced ");
        assert_eq!(r.list("allow-cn"), ["from inner"]);
        let missing = format!("@{}", dir.join("missing").display());
        assert_eq!(
            err(&[&missing]),
            format!(
                "open {}: no such file or directory",
                dir.join("missing").display()
            )
        );
        // After `--`, `@x` is a plain word.
        assert_eq!(bare_err(&["--", "@nope"]), "unexpected @nope");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // ---- Help and version ----

    #[test]
    fn usage_on_stderr_exit_zero() {
        for a in [
            &[][..],
            &["--help"],
            &["help"],
            &["help", "server"],
            &["help", "client"],
            &["server", "--help"],
            &["client", "--help"],
            &["--syslog"],
            &["server", "--help", "extra"],
            &["server", "--help", "--connect-timeout=5"],
            &["server", "--listen=:1", "--listen=:2", "--help"],
        ] {
            let (text, stdout) = exit(a);
            assert!(!stdout, "{a:?}");
            assert!(text.starts_with("usage: ghostunnel"), "{a:?}: {text}");
        }
    }

    #[test]
    fn usage_text_from_the_table() {
        let (text, _) = exit(&["--help"]);
        assert!(text.contains("--keystore=PATH"), "{text}");
        assert!(text.contains("($KEYSTORE_PATH)"), "{text}");
        assert!(text.contains("--shutdown-timeout=5m"), "{text}");
        assert!(text.contains("--max-concurrent-conns=0"), "{text}");
        assert!(text.contains("--help-long"), "{text}");
        assert!(
            !text.contains("--cipher-suites"),
            "hidden flag shown: {text}"
        );
        assert!(
            !text.contains("--allow-cn"),
            "mode flag in global help: {text}"
        );
        assert!(
            text.contains("server --listen=ADDR --target=ADDR"),
            "{text}"
        );

        let (server, _) = exit(&["server", "--help"]);
        assert!(server.contains("--allow-cn=CN"), "{server}");
        assert!(server.contains("--listen=ADDR"), "{server}");
        assert!(!server.contains("--allow-dns-san"), "alias shown: {server}");
        assert!(!server.contains("--allow-ip"), "hidden shown: {server}");
        assert!(!server.contains("--verify-cn"), "{server}");
        let (client, _) = exit(&["help", "client"]);
        assert!(client.contains("--verify-cn=CN"), "{client}");
        assert!(client.contains("--proxy=URL"), "{client}");
        assert!(!client.contains("--allow-cn"), "{client}");
    }

    #[test]
    fn help_loses_to_parse_errors() {
        assert_eq!(err(&["--help", "--bogus"]), "unknown long flag '--bogus'");
        assert_eq!(
            err(&["--help", "bogus"]),
            "expected command but got \"bogus\""
        );
        assert_eq!(
            err(&["help", "bogus"]),
            "expected command but got \"bogus\""
        );
    }

    #[test]
    fn help_command_and_version_win_over_later_errors() {
        assert!(!exit(&["help", "--bogus"]).1);
        assert!(exit(&["--version", "--bogus"]).0.starts_with("rev "));
        assert!(exit(&["--help-long", "-x"]).1);
        // But not over errors before them.
        assert_eq!(
            err(&["--bogus", "--version"]),
            "unknown long flag '--bogus'"
        );
    }

    #[test]
    fn long_help_and_man_page_on_stdout() {
        let (text, stdout) = exit(&["--help-long"]);
        assert!(stdout);
        assert!(
            text.contains("--allow-cn=CN") && text.contains("--verify-cn=CN"),
            "{text}"
        );
        for flag in ["--help-man", "--help-custom-man"] {
            let (man, stdout) = exit(&[flag]);
            assert!(stdout);
            assert!(man.contains("\n.TH GHOSTUNNEL 1 "), "{man}");
            assert!(man.contains("\\fB\\-\\-keystore\\fR=\\fIPATH\\fR"), "{man}");
            assert!(man.contains("\\fB\\-\\-allow\\-cn\\fR=\\fICN\\fR"), "{man}");
            assert!(!man.contains("cipher\\-suites"), "{man}");
        }
        // kingpin's hidden completion flags: scripts on stdout, even before a bad argument.
        let (bash, stdout) = exit(&["--completion-script-bash", "--bogus"]);
        assert!(
            stdout && bash.contains("complete -F _ghostunnel ghostunnel"),
            "{bash}"
        );
        let (zsh, stdout) = exit(&["server", "--completion-script-zsh"]);
        assert!(stdout && zsh.starts_with("#compdef ghostunnel\n"), "{zsh}");
        let (usage, _) = exit(&["--help"]);
        assert!(!usage.contains("--completion-script"), "{usage}");
    }

    #[test]
    fn version_line() {
        for a in [
            &["--version"][..],
            &["server", "--version"],
            &["--version", "server"],
        ] {
            let (text, stdout) = exit(a);
            assert!(!stdout);
            assert!(
                text.starts_with(&format!(
                    "rev {} built with rustc",
                    env!("CARGO_PKG_VERSION")
                )) && text.ends_with(" (pkcs11: false, keychain: false)\n"),
                "{text}"
            );
        }
    }

    // ---- Value types (SPEC 2.2) ----

    #[test]
    fn duration_values() {
        assert_eq!(
            bare_err(&["--connect-timeout=5"]),
            "time: invalid duration \"5\""
        );
        assert_eq!(
            bare_err(&["--close-timeout=1x"]),
            "time: invalid duration \"1x\""
        );
        assert_eq!(
            bare_err(&["--timed-reload="]),
            "time: invalid duration \"\""
        );
        let r = raw(&[
            &BARE[..],
            &[
                "--timed-reload=1h30m",
                "--connect-timeout=1.5s",
                "--close-timeout=-1s",
            ],
        ]
        .concat());
        assert_eq!(r.nanos("timed-reload"), 5_400_000_000_000);
        assert_eq!(r.nanos("connect-timeout"), 1_500_000_000);
        assert_eq!(r.nanos("close-timeout"), -1_000_000_000);
        // Defaults.
        let r = raw(&BARE);
        assert_eq!(r.nanos("shutdown-timeout"), 300_000_000_000);
        assert_eq!(r.nanos("connect-timeout"), 10_000_000_000);
        assert_eq!(r.nanos("close-timeout"), 60_000_000_000);
        assert_eq!(r.nanos("max-conn-lifetime"), 0);
    }

    #[test]
    fn uint32_values() {
        let n = |v: &str| parse_go_uint32(v);
        assert_eq!(n("0"), Ok(0));
        assert_eq!(n("100"), Ok(100));
        assert_eq!(n("0x10"), Ok(16));
        assert_eq!(n("0X1f"), Ok(31));
        assert_eq!(n("010"), Ok(8));
        assert_eq!(n("0o17"), Ok(15));
        assert_eq!(n("0b101"), Ok(5));
        assert_eq!(n("1_000"), Ok(1000));
        assert_eq!(n("4294967295"), Ok(u32::MAX));
        for bad in ["-1", "+1", "", "1.5", "08", "0x", "_1", "1__0", "1_", "abc"] {
            assert_eq!(
                n(bad),
                Err(format!(
                    "strconv.ParseUint: parsing \"{bad}\": invalid syntax"
                )),
                "{bad}"
            );
        }
        assert_eq!(
            n("4294967296"),
            Err("strconv.ParseUint: parsing \"4294967296\": value out of range".into())
        );
        assert_eq!(
            bare_err(&["--max-concurrent-conns=-1"]),
            "strconv.ParseUint: parsing \"-1\": invalid syntax"
        );
        let c = server(&["--allow-all", "--max-concurrent-conns=0x20"]).unwrap();
        assert_eq!(c.max_concurrent_conns, 32);
    }

    #[test]
    fn quiet_enum_list() {
        assert_eq!(
            bare_err(&["--quiet=loud"]),
            "enum value must be one of ,all,conns,conn-errs,handshake-errs, got 'loud'"
        );
        let q = raw(&[
            &BARE[..],
            &["--quiet=", "--quiet=conn-errs", "--quiet", "handshake-errs"],
        ]
        .concat())
        .quiet;
        assert!(!q.all && !q.conns && q.conn_errs && q.handshake_errs);
        let q = raw(&[&BARE[..], &["--quiet=all"]].concat()).quiet;
        assert!(q.all && !q.conns);
    }

    #[test]
    fn proxy_protocol_mode_enum() {
        assert_eq!(
            bare_err(&["--proxy-protocol-mode=v1"]),
            "enum value must be one of conn,tls,tls-full, got 'v1'"
        );
        for (word, mode) in [
            ("conn", ProxyProtocolMode::Conn),
            ("tls", ProxyProtocolMode::Tls),
            ("tls-full", ProxyProtocolMode::TlsFull),
        ] {
            let c = server(&["--allow-all", &format!("--proxy-protocol-mode={word}")]).unwrap();
            assert!(
                matches!(c.mode, Mode::Server(ServerOpts { proxy_protocol: Some(m), .. }) if m == mode)
            );
        }
        let c = server(&["--allow-all", "--proxy-protocol"]).unwrap();
        assert!(matches!(
            c.mode,
            Mode::Server(ServerOpts {
                proxy_protocol: Some(ProxyProtocolMode::Conn),
                ..
            })
        ));
        let c = server(&["--allow-all"]).unwrap();
        assert!(matches!(
            c.mode,
            Mode::Server(ServerOpts {
                proxy_protocol: None,
                ..
            })
        ));
    }

    #[test]
    fn ip_lists() {
        assert_eq!(
            bare_err(&["--allow-ip=nope"]),
            "'nope' is not an IP address"
        );
        assert_eq!(
            bare_err(&["--allow-ip=10.0.0.1/8"]),
            "'10.0.0.1/8' is not an IP address"
        );
        let c = server(&["--allow-ip=10.0.0.1", "--allow-ip=::1"]).unwrap();
        let ServerAuth::Acl(acl) = server_auth(&c) else {
            panic!()
        };
        assert_eq!(
            acl.ip,
            [
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn proxy_url_is_parsed() {
        let e = |v: &str| {
            let a = cat(&CLIENT, &[&format!("--proxy={v}")]);
            err(&a.iter().map(String::as_str).collect::<Vec<_>>())
        };
        assert_eq!(
            e("://x"),
            "invalid URL: parse \"://x\": missing protocol scheme"
        );
        assert_eq!(
            e("127.0.0.1:3128"),
            "invalid URL: parse \"127.0.0.1:3128\": first path segment in URL cannot contain colon"
        );
        assert_eq!(
            e("http://a\tb"),
            "invalid URL: parse \"http://a\\tb\": net/url: invalid control character in URL"
        );
        for ok in [
            "http://p:3128",
            "socks5://p:1080",
            "localhost:3128",
            "/x",
            "p",
        ] {
            let c = client(&[&format!("--proxy={ok}")]).unwrap();
            assert_eq!(client_opts(&c).proxy.as_deref(), Some(ok));
        }
    }

    // ---- Environment fallbacks ----

    #[test]
    fn env_fallbacks_only_when_absent() {
        let vars = [
            ("KEYSTORE_PATH", "/env.p12"),
            ("KEYSTORE_PASS", "envpass"),
            ("CACERT_PATH", "/ca.pem"),
        ];
        let Parsed::Run(r) = parse_env(&BARE, &vars).unwrap() else {
            panic!()
        };
        assert_eq!(r.str("keystore"), "/env.p12");
        assert_eq!(r.str("storepass"), "envpass");
        assert_eq!(r.str("cacert"), "/ca.pem");
        let Parsed::Run(r) =
            parse_env(&[&BARE[..], &["--keystore=/flag.pem"]].concat(), &vars).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.str("keystore"), "/flag.pem");
        // An explicitly empty flag still wins over the environment.
        let Parsed::Run(r) = parse_env(&[&BARE[..], &["--storepass="]].concat(), &vars).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.str("storepass"), "");
    }

    #[test]
    fn env_cert_and_key() {
        let vars = [("CERT_PATH", "/c.pem"), ("KEY_PATH", "/k.pem")];
        let Parsed::Run(r) = parse_env(&[&BARE[..], &["--allow-all"]].concat(), &vars).unwrap()
        else {
            panic!()
        };
        let c = r.into_config().unwrap();
        assert!(
            matches!(c.identity, IdentitySource::CertKey { ref cert, ref key }
            if cert.to_str() == Some("/c.pem") && key.to_str() == Some("/k.pem"))
        );
    }

    #[test]
    fn empty_env_is_absent() {
        let vars = [
            ("KEYSTORE_PATH", ""),
            ("PKCS11_MODULE", ""),
            ("SPIFFE_ENDPOINT_SOCKET", ""),
        ];
        let Parsed::Run(r) = parse_env(
            &[&BARE[..], &["--allow-all", "--cert=c", "--key=k"]].concat(),
            &vars,
        )
        .unwrap() else {
            panic!()
        };
        assert!(!r.given.contains_key("keystore"));
        assert!(r.into_config().is_ok());
    }

    #[test]
    fn env_for_unsupported_features_fails_clearly() {
        for (var, flag) in [
            ("PKCS11_MODULE", "pkcs11-module"),
            ("PKCS11_TOKEN_LABEL", "pkcs11-token-label"),
            ("PKCS11_PIN", "pkcs11-pin"),
            ("SPIFFE_ENDPOINT_SOCKET", "use-workload-api-addr"),
        ] {
            let Parsed::Run(r) = parse_env(&SERVER, &[(var, "x")]).unwrap() else {
                panic!()
            };
            assert_eq!(
                r.into_config().unwrap_err(),
                format!("--{flag} is not supported by this build")
            );
        }
    }

    // ---- Parse-stage checks (SPEC 2.7.1) ----

    #[test]
    fn parse_stage_enable_pprof_needs_status() {
        assert_eq!(
            bare_err(&["--enable-pprof"]),
            "--enable-pprof requires --status to be set"
        );
        // First in order.
        assert_eq!(
            bare_err(&["--enable-shutdown", "--enable-pprof", "--connect-timeout=0"]),
            "--enable-pprof requires --status to be set"
        );
    }

    #[test]
    fn parse_stage_enable_shutdown_needs_status() {
        assert_eq!(
            bare_err(&["--enable-shutdown", "--metrics-url=ftp://x"]),
            "--enable-shutdown requires --status to be set"
        );
    }

    #[test]
    fn parse_stage_metrics_url_scheme() {
        assert_eq!(
            bare_err(&["--metrics-url=ftp://x", "--status=nohost"]),
            "--metrics-url should start with http:// or https://"
        );
    }

    #[test]
    fn parse_stage_target_status_scheme() {
        assert_eq!(
            bare_err(&["--target-status=tcp://x", "--status=nohost"]),
            "--target-status should start with http:// or https://"
        );
    }

    #[test]
    fn parse_stage_status_shape() {
        assert_eq!(
            bare_err(&["--status=nohost", "--connect-timeout=0s"]),
            "invalid --status address: address nohost: missing port in address"
        );
        assert_eq!(
            bare_err(&["--status=http://nohost"]),
            "invalid --status address: address nohost: missing port in address"
        );
        for (status, net) in [
            ("http://unix:/x", "unix"),
            ("https://systemd:s", "systemd"),
            ("https://launchd:s", "launchd"),
        ] {
            assert_eq!(
                bare_err(&[&format!("--status={status}")]),
                format!(
                    "invalid --status network \"{net}\": http(s):// scheme requires a HOST:PORT target"
                )
            );
        }
    }

    #[test]
    fn parse_stage_connect_timeout_zero() {
        for zero in ["0", "0s", "0ms", "-0"] {
            assert_eq!(
                bare_err(&[
                    &format!("--connect-timeout={zero}"),
                    "--use-workload-api-timeout=-1s"
                ]),
                "--connect-timeout duration must not be zero"
            );
        }
    }

    #[test]
    fn parse_stage_workload_timeout_negative() {
        assert_eq!(
            bare_err(&["--use-workload-api-timeout=-1s"]),
            "--use-workload-api-timeout duration must not be negative (use 0 to wait indefinitely)"
        );
    }

    #[test]
    fn status_and_shutdown_reach_the_config() {
        let c = server(&[
            "--allow-all",
            "--status=localhost:9000",
            "--enable-shutdown",
        ])
        .unwrap();
        let s = c.status.unwrap();
        assert_eq!(s.scheme, StatusScheme::None);
        assert_eq!(s.addr.raw, "localhost:9000");
        assert!(c.enable_shutdown);
        let c = server(&["--allow-all", "--status=https://:9000"]).unwrap();
        let s = c.status.unwrap();
        assert_eq!(
            (s.scheme, s.addr.raw.as_str()),
            (StatusScheme::Https, ":9000")
        );
        let c = server(&["--allow-all", "--status=http://localhost:1"]).unwrap();
        assert_eq!(c.status.unwrap().scheme, StatusScheme::Http);
        let c = server(&["--allow-all", "--status=unix:/run/s.sock"]).unwrap();
        assert!(matches!(c.status.unwrap().addr.kind, AddrKind::Unix(_)));
        let c = server(&["--allow-all"]).unwrap();
        assert!(c.status.is_none() && !c.enable_shutdown);
    }

    #[test]
    fn metrics_flags_reach_the_config() {
        let c = server(&["--allow-all"]).unwrap();
        assert!(c.metrics.graphite.is_none() && c.metrics.url.is_none());
        assert_eq!(c.metrics.prefix, "ghostunnel");
        assert_eq!(c.metrics.interval, Duration::from_secs(30));
        assert!(!c.metrics_observed());
        let c = server(&[
            "--allow-all",
            "--metrics-graphite=localhost:2003",
            "--metrics-url=https://collector.example/push",
            "--metrics-prefix=edge",
            "--metrics-interval=250ms",
            "--target-status=http://localhost:8080/health",
        ])
        .unwrap();
        assert_eq!(c.metrics.graphite.as_ref().unwrap().raw, "localhost:2003");
        let url = c.metrics.url.as_ref().unwrap();
        assert!(url.https && url.path == "/push" && url.addr.tcp_port() == Some(443));
        assert_eq!(c.metrics.prefix, "edge");
        assert_eq!(c.metrics.interval, Duration::from_millis(250));
        assert!(c.metrics_observed());
        let Mode::Server(opts) = &c.mode else {
            panic!()
        };
        assert_eq!(opts.target_status.as_ref().unwrap().path, "/health");
        // Each observer alone turns metrics on.
        assert!(
            server(&["--allow-all", "--status=:1"])
                .unwrap()
                .metrics_observed()
        );
        assert!(
            server(&["--allow-all", "--metrics-url=http://h/"])
                .unwrap()
                .metrics_observed()
        );
    }

    #[test]
    fn bad_metrics_flags_name_the_flag() {
        assert_eq!(
            server_err(&["--allow-all", "--metrics-graphite=nohost"]),
            "invalid --metrics-graphite address: address nohost: missing port in address"
        );
        assert_eq!(
            server_err(&["--allow-all", "--metrics-graphite=unix:/x"]),
            "invalid --metrics-graphite address unix:/x: must be HOST:PORT with a non-zero port"
        );
        assert_eq!(
            server_err(&["--allow-all", "--metrics-url=http://"]),
            "invalid --metrics-url: parse \"http://\": missing host"
        );
        assert_eq!(
            server_err(&["--allow-all", "--target-status=http://h:x/"]),
            "invalid --target-status: parse \"http://h:x/\": invalid port"
        );
        for bad in ["0s", "-1s"] {
            assert_eq!(
                server_err(&["--allow-all", &format!("--metrics-interval={bad}")]),
                "--metrics-interval duration must be positive"
            );
        }
    }

    // ---- Unsupported features ----

    #[test]
    fn unsupported_flags_fail_mode_validation() {
        for (flag, name) in [
            ("--use-workload-api", "use-workload-api"),
            ("--use-workload-api-addr=unix:/x", "use-workload-api-addr"),
            ("--use-workload-api-timeout=1m", "use-workload-api-timeout"),
            ("--pkcs11-module=/x.so", "pkcs11-module"),
            ("--pkcs11-token-label=t", "pkcs11-token-label"),
            ("--pkcs11-pin=1", "pkcs11-pin"),
            ("--allow-policy=b", "allow-policy"),
            ("--allow-query=q", "allow-query"),
            ("--auto-acme-cert=a.example", "auto-acme-cert"),
            ("--auto-acme-email=a@b", "auto-acme-email"),
            ("--auto-acme-agree-to-tos", "auto-acme-agree-to-tos"),
            ("--auto-acme-ca=https://x", "auto-acme-ca"),
            ("--auto-acme-testca=https://x", "auto-acme-testca"),
            (
                "--auto-acme-renew-check-interval=1h",
                "auto-acme-renew-check-interval",
            ),
            (
                "--auto-acme-alt-tls-alpn-port=1",
                "auto-acme-alt-tls-alpn-port",
            ),
        ] {
            assert_eq!(
                server_err(&["--allow-all", flag]),
                format!("--{name} is not supported by this build"),
                "{flag}"
            );
        }
        assert_eq!(
            server_err(&["--allow-all", "--status=:1", "--enable-pprof"]),
            "--enable-pprof is not supported by this build"
        );
        for (flag, name) in [
            ("--verify-policy=b", "verify-policy"),
            ("--verify-query=q", "verify-query"),
        ] {
            assert_eq!(
                client_err(&[flag]),
                format!("--{name} is not supported by this build")
            );
        }
        // Unsupported flags fail before any other mode validation message.
        assert_eq!(
            config(&[&BARE[..], &["--allow-policy=b"]].concat()).unwrap_err(),
            "--allow-policy is not supported by this build"
        );
    }

    #[test]
    fn unsupported_flags_at_their_default_are_accepted() {
        for flag in [
            "--no-use-workload-api",
            "--use-workload-api-timeout=10m",
            "--use-workload-api-timeout=600s",
            "--metrics-prefix=ghostunnel",
            "--metrics-interval=30s",
            "--no-enable-pprof",
            "--no-auto-acme-agree-to-tos",
            "--allow-policy=",
            "--auto-acme-alt-tls-alpn-port=0",
        ] {
            assert!(server(&["--allow-all", flag]).is_ok(), "{flag}");
        }
    }

    #[test]
    fn ignored_and_hidden_flags() {
        assert!(server(&["--allow-all", "--use-landlock"]).is_ok());
        assert!(server(&["--allow-all", "--no-use-landlock"]).is_ok());
        let c = server(&["--allow-all", "--disable-landlock", "--skip-resolve"]).unwrap();
        assert!(c.disable_landlock && c.skip_resolve);
        let c = server(&["--allow-all"]).unwrap();
        assert!(!c.disable_landlock && !c.skip_resolve);
    }

    #[test]
    fn jks_keystores_refused() {
        for ks in ["a.jks", "b.JCEKS", "/x/c.jceks"] {
            assert_eq!(
                config(&[&BARE[..], &[&format!("--keystore={ks}"), "--allow-all"]].concat())
                    .unwrap_err(),
                "--keystore: JCEKS/JKS keystores are not supported by this build (convert to PKCS#12)"
            );
        }
    }

    // ---- Server mode validation (SPEC 2.7.2) ----

    #[test]
    fn server_credentials_zero() {
        let msg = "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required";
        for extra in [&[][..], &["--cert=c"], &["--key=k"]] {
            assert_eq!(
                config(&[&BARE[..], extra, &["--allow-all"]].concat()).unwrap_err(),
                msg
            );
        }
        // Before the access-control check.
        assert_eq!(config(&BARE).unwrap_err(), msg);
    }

    #[test]
    fn server_credentials_exclusive() {
        assert_eq!(
            server_err(&["--cert=c", "--key=k"]),
            "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive"
        );
    }

    #[test]
    fn server_cert_key_pairing() {
        let msg = "--cert/--key must be set together, unless using PKCS11 for private key";
        assert_eq!(server_err(&["--key=k", "--allow-all"]), msg);
        assert_eq!(server_err(&["--cert=c"]), msg);
    }

    #[test]
    fn server_identity_sources() {
        let c = server(&["--allow-all", "--storepass=pw", "--cacert=/ca.pem"]).unwrap();
        assert!(
            matches!(c.identity, IdentitySource::Keystore { ref path, ref password }
            if path.to_str() == Some("k.pem") && password == "pw")
        );
        assert_eq!(
            c.cacert.as_deref().and_then(|p| p.to_str()),
            Some("/ca.pem")
        );
        let c = config(&[&BARE[..], &["--cert=c", "--key=k", "--allow-all"]].concat()).unwrap();
        assert!(matches!(c.identity, IdentitySource::CertKey { .. }));
        assert!(c.cacert.is_none());
    }

    #[test]
    fn server_access_control_required() {
        assert_eq!(
            server_err(&[]),
            "at least one access control flag (--allow-{all,cn,ou,dns,uri,spki-pin}, or OPA flags, or --disable-authentication) is required"
        );
        assert_eq!(
            server_err(&["--no-allow-all", "--no-disable-authentication"]),
            "at least one access control flag (--allow-{all,cn,ou,dns,uri,spki-pin}, or OPA flags, or --disable-authentication) is required"
        );
    }

    #[test]
    fn server_allow_all_exclusive() {
        for other in [
            "--allow-cn=x",
            "--allow-ou=x",
            "--allow-dns=x",
            "--allow-ip=::1",
            "--allow-uri=spiffe://x",
        ] {
            assert_eq!(
                server_err(&["--allow-all", other]),
                "--allow-all is mutually exclusive with other access control flags"
            );
        }
        assert_eq!(
            server_err(&["--allow-all", &format!("--allow-spki-pin={PIN}")]),
            "--allow-all is mutually exclusive with other access control flags"
        );
    }

    #[test]
    fn server_disable_authentication_exclusive() {
        for other in ["--allow-all", "--allow-cn=x", "--allow-uri=spiffe://x"] {
            assert_eq!(
                server_err(&["--disable-authentication", other]),
                "--disable-authentication is mutually exclusive with other access control flags"
            );
        }
        assert_eq!(
            server_err(&[
                "--disable-authentication",
                &format!("--allow-spki-pin={PIN}")
            ]),
            "--disable-authentication is mutually exclusive with other access control flags"
        );
    }

    #[test]
    fn server_pins_exclusive() {
        assert_eq!(
            server_err(&[&format!("--allow-spki-pin={PIN}"), "--allow-cn=x"]),
            "--allow-spki-pin is mutually exclusive with other access control flags"
        );
    }

    #[test]
    fn server_pin_syntax() {
        let e = server_err(&["--allow-spki-pin=md5:x"]);
        assert!(
            e.starts_with("--allow-spki-pin: invalid pin \"md5:x\""),
            "{e}"
        );
        // Checked before the target.
        let e = config(&[
            "server",
            "--listen=:1",
            "--target=10.0.0.1:1",
            "--keystore=k",
            "--allow-spki-pin=nocolon",
        ])
        .unwrap_err();
        assert!(e.starts_with("--allow-spki-pin: invalid pin"), "{e}");
    }

    #[test]
    fn server_auth_modes() {
        assert!(matches!(
            server_auth(&server(&["--allow-all"]).unwrap()),
            ServerAuth::AllowAll
        ));
        assert!(matches!(
            server_auth(&server(&["--disable-authentication"]).unwrap()),
            ServerAuth::Disabled
        ));
        let c = server(&[
            &format!("--allow-spki-pin={PIN}"),
            &format!("--allow-spki-pin={PIN}"),
        ])
        .unwrap();
        assert!(matches!(server_auth(&c), ServerAuth::Pins(p) if p.len() == 2));
        let c = server(&[
            "--allow-cn=a",
            "--allow-ou=b",
            "--allow-dns=c",
            "--allow-uri=spiffe://d/*",
        ])
        .unwrap();
        let ServerAuth::Acl(acl) = server_auth(&c) else {
            panic!()
        };
        assert_eq!(
            (acl.cn.as_slice(), acl.ou.as_slice(), acl.dns.as_slice()),
            (
                &["a".to_string()][..],
                &["b".to_string()][..],
                &["c".to_string()][..]
            )
        );
        assert_eq!(acl.uri.len(), 1);
    }

    #[test]
    fn server_target_safety() {
        let t = |target: &str, extra: &[&str]| {
            config(
                &[
                    &[
                        "server",
                        "--listen=:1",
                        "--keystore=k",
                        "--allow-all",
                        &format!("--target={target}"),
                    ][..],
                    extra,
                ]
                .concat(),
            )
        };
        for unsafe_target in [
            "10.0.0.1:2",
            ":80",
            "LOCALHOST:80",
            "127.0.0.2:80",
            "localhost.example:80",
            "alocalhost.com:1",
        ] {
            assert_eq!(
                t(unsafe_target, &[]).unwrap_err(),
                "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)",
                "{unsafe_target}"
            );
            assert!(
                t(unsafe_target, &["--unsafe-target"]).is_ok(),
                "{unsafe_target}"
            );
        }
        for safe in ["unix:/x", "127.0.0.1:1", "[::1]:1", "localhost:1"] {
            assert!(t(safe, &[]).is_ok(), "{safe}");
        }
        assert_eq!(
            t("localhost:", &[]).map(|c| c.target.raw),
            Ok("localhost:".to_string())
        );
        assert_eq!(
            t("nohost", &["--unsafe-target"]).unwrap_err(),
            "invalid --target address: address nohost: missing port in address"
        );
        for (target, net) in [("systemd:x", "systemd"), ("launchd:x", "launchd")] {
            assert_eq!(
                t(target, &[]).unwrap_err(),
                format!(
                    "invalid --target network \"{net}\": only tcp and unix targets are supported (systemd:/launchd: cannot be dialed)"
                )
            );
        }
        // `--listen` is unrestricted in server mode.
        assert!(
            config(&[
                "server",
                "--listen=0.0.0.0:1",
                "--target=localhost:2",
                "--keystore=k",
                "--allow-all"
            ])
            .is_ok()
        );
    }

    #[test]
    fn server_proxy_protocol_exclusive() {
        assert_eq!(
            server_err(&[
                "--allow-all",
                "--proxy-protocol",
                "--proxy-protocol-mode=tls"
            ]),
            "--proxy-protocol and --proxy-protocol-mode are mutually exclusive"
        );
        // After the target check.
        assert_eq!(
            config(&[
                "server",
                "--listen=:1",
                "--target=x:1",
                "--keystore=k",
                "--allow-all",
                "--proxy-protocol",
                "--proxy-protocol-mode=tls"
            ])
            .unwrap_err(),
            "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)"
        );
    }

    #[test]
    fn cipher_suites() {
        assert_eq!(
            server_err(&["--allow-all", "--cipher-suites=RC4"]),
            "invalid cipher suite 'RC4' selected"
        );
        assert_eq!(
            server_err(&["--allow-all", "--cipher-suites=AES,"]),
            "invalid cipher suite '' selected"
        );
        assert_eq!(
            server_err(&["--allow-all", "--cipher-suites=UNSAFE-AZURE"]),
            "invalid cipher suite 'UNSAFE-AZURE' selected"
        );
        assert!(
            server_err(&[
                "--allow-all",
                "--cipher-suites=UNSAFE-AZURE",
                "--allow-unsafe-cipher-suites"
            ])
            .contains("not supported by this build")
        );
        let c = server(&["--allow-all", "--cipher-suites= CHACHA , AES"]).unwrap();
        assert_eq!(c.tls.cipher_suites, [CipherGroup::Chacha, CipherGroup::Aes]);
        let c = server(&["--allow-all"]).unwrap();
        assert_eq!(c.tls.cipher_suites, [CipherGroup::Aes, CipherGroup::Chacha]);
        assert_eq!(
            client_err(&["--cipher-suites=DES"]),
            "invalid cipher suite 'DES' selected"
        );
        // Last in server order.
        assert_eq!(
            server_err(&[
                "--allow-all",
                "--cipher-suites=RC4",
                "--proxy-protocol",
                "--proxy-protocol-mode=tls"
            ]),
            "--proxy-protocol and --proxy-protocol-mode are mutually exclusive"
        );
    }

    #[test]
    fn max_tls_version_kept_raw() {
        let c = server(&["--allow-all", "--max-tls-version=tls1.2"]).unwrap();
        assert_eq!(c.tls.max_version, "tls1.2");
        let c = server(&["--allow-all", "--max-tls-version=bogus"]).unwrap();
        assert_eq!(c.tls.max_version, "bogus");
        assert_eq!(server(&["--allow-all"]).unwrap().tls.max_version, "");
    }

    #[test]
    fn uri_patterns_compiled_after_validation() {
        let e = server_err(&["--allow-uri=spiffe://a/**/b"]);
        assert!(
            e.starts_with("invalid URI pattern in --allow-uri flag ("),
            "{e}"
        );
        let e = server_err(&["--allow-uri="]);
        assert_eq!(
            e,
            "invalid URI pattern in --allow-uri flag (input pattern was empty string)"
        );
        // Cipher-suite errors come first.
        assert_eq!(
            server_err(&["--allow-uri=", "--cipher-suites=X"]),
            "invalid cipher suite 'X' selected"
        );
        let e = client_err(&["--verify-uri=a*b"]);
        assert!(
            e.starts_with("invalid URI pattern in --verify-uri flag ("),
            "{e}"
        );
        assert_eq!(
            client_err(&["--verify-uri=", "--cipher-suites=X"]),
            "invalid cipher suite 'X' selected"
        );
    }

    // ---- Client mode validation (SPEC 2.7.2) ----

    #[test]
    fn client_credentials() {
        let base = ["client", "--listen=localhost:1", "--target=h:2"];
        assert_eq!(
            config(&base).unwrap_err(),
            "at least one of --keystore, --cert/--key, --keychain-identity/issuer (if supported), --use-workload-api or --disable-authentication flags is required"
        );
        let excl = "--keystore, --cert/--key, --keychain-identity/issuer, --use-workload-api and --disable-authentication flags are mutually exclusive";
        assert_eq!(client_err(&["--disable-authentication"]), excl);
        assert_eq!(client_err(&["--cert=c", "--key=k"]), excl);
        assert_eq!(
            client_err(&["--key=k"]),
            "--cert/--key must be set together, unless using PKCS11 for private key"
        );
        let c = config(&[&base[..], &["--disable-authentication"]].concat()).unwrap();
        assert!(matches!(c.identity, IdentitySource::None));
        let c = config(&[&base[..], &["--cert=c", "--key=k"]].concat()).unwrap();
        assert!(matches!(c.identity, IdentitySource::CertKey { .. }));
    }

    #[test]
    fn client_listen_safety() {
        let l = |listen: &str, extra: &[&str]| {
            config(
                &[
                    &[
                        "client",
                        "--target=h:2",
                        "--keystore=k",
                        &format!("--listen={listen}"),
                    ][..],
                    extra,
                ]
                .concat(),
            )
        };
        let msg = "--listen must be unix:PATH, localhost:PORT, systemd:NAME or launchd:NAME (unless --unsafe-listen is set)";
        for bad in [":8080", "0.0.0.0:8080", "LOCALHOST:1", "nohost"] {
            assert_eq!(l(bad, &[]).unwrap_err(), msg, "{bad}");
        }
        assert!(l("0.0.0.0:8080", &["--unsafe-listen"]).is_ok());
        for ok in [
            "unix:/x",
            "systemd:s",
            "launchd:s",
            "127.0.0.1:1",
            "[::1]:1",
            "localhost:1",
        ] {
            assert!(l(ok, &[]).is_ok(), "{ok}");
        }
        // Before the target check.
        assert_eq!(
            config(&["client", "--listen=:1", "--target=unix:/x", "--keystore=k"]).unwrap_err(),
            msg
        );
    }

    #[test]
    fn client_target_must_be_tcp() {
        let t = |target: &str| {
            config(&[
                "client",
                "--listen=localhost:1",
                "--keystore=k",
                &format!("--target={target}"),
            ])
        };
        assert_eq!(
            t("nohost").unwrap_err(),
            "invalid --target address: address nohost: missing port in address"
        );
        for (target, net) in [
            ("unix:/x", "unix"),
            ("systemd:x", "systemd"),
            ("launchd:x", "launchd"),
        ] {
            assert_eq!(
                t(target).unwrap_err(),
                format!(
                    "invalid --target network \"{net}\": client mode requires a HOST:PORT TCP target"
                )
            );
        }
        // Any host is fine in client mode.
        assert!(t("10.0.0.1:443").is_ok());
    }

    #[test]
    fn client_pins() {
        assert_eq!(
            client_err(&[&format!("--verify-spki-pin={PIN}"), "--verify-cn=x"]),
            "--verify-spki-pin is mutually exclusive with other verification flags"
        );
        assert_eq!(
            client_err(&[&format!("--verify-spki-pin={PIN}"), "--verify-ip=::1"]),
            "--verify-spki-pin is mutually exclusive with other verification flags"
        );
        let e = client_err(&["--verify-spki-pin=sha1:x"]);
        assert!(
            e.starts_with("--verify-spki-pin: invalid pin \"sha1:x\""),
            "{e}"
        );
        // Pins work without a client certificate.
        let c = config(&[
            "client",
            "--listen=localhost:1",
            "--target=h:2",
            "--disable-authentication",
            &format!("--verify-spki-pin={PIN}"),
        ])
        .unwrap();
        assert!(matches!(client_opts(&c).verify, ClientVerify::Pins(ref p) if p.len() == 1));
    }

    #[test]
    fn client_options() {
        let c = client(&[
            "--override-server-name=api",
            "--verify-cn=a",
            "--verify-dns=b",
            "--verify-ou=o",
            "--verify-uri=spiffe://x/*",
        ])
        .unwrap();
        let o = client_opts(&c);
        assert_eq!(o.override_server_name.as_deref(), Some("api"));
        assert!(o.proxy.is_none());
        let ClientVerify::Standard(acl) = &o.verify else {
            panic!()
        };
        assert_eq!(
            (acl.cn.len(), acl.dns.len(), acl.ou.len(), acl.uri.len()),
            (1, 1, 1, 1)
        );
        let c = client(&["--override-server-name="]).unwrap();
        let o = client_opts(&c);
        assert!(o.override_server_name.is_none());
        assert!(matches!(&o.verify, ClientVerify::Standard(acl) if acl.is_empty()));
    }

    // ---- Durations into the config (SPEC 2.7.1 notes) ----

    #[test]
    fn storepass_from_a_file() {
        let path = std::env::temp_dir().join(format!("gt-storepass-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let file = format!("--storepass-file={}", path.display());
        let c = server(&["--allow-all", &file]).unwrap();
        assert!(
            matches!(c.identity, IdentitySource::Keystore { ref password, .. } if password == "s3cret")
        );
        assert_eq!(
            server(&["--allow-all", &file, "--storepass=x"]).unwrap_err(),
            "--storepass and --storepass-file are mutually exclusive"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(
            server(&["--allow-all", &file])
                .unwrap_err()
                .starts_with("--storepass-file: open ")
        );
    }

    #[test]
    fn negative_durations_follow_the_reference() {
        let c = server(&[
            "--allow-all",
            "--shutdown-timeout=-1s",
            "--max-conn-lifetime=-1s",
            "--close-timeout=-1s",
            "--connect-timeout=-1s",
            "--timed-reload=-5m",
        ])
        .unwrap();
        assert!(c.timeouts.shutdown.is_none());
        assert!(c.timeouts.max_lifetime.is_none());
        assert!(c.timed_reload.is_none());
        assert_eq!(c.timeouts.close, Duration::ZERO);
        assert_eq!(c.timeouts.connect, Duration::ZERO);
    }

    #[test]
    fn durations_into_the_config() {
        let c = server(&["--allow-all"]).unwrap();
        assert_eq!(c.timeouts.connect, Duration::from_secs(10));
        assert_eq!(c.timeouts.close, Duration::from_secs(60));
        assert_eq!(c.timeouts.shutdown, Some(Duration::from_secs(300)));
        assert!(c.timeouts.max_lifetime.is_none() && c.timed_reload.is_none());
        let c = server(&[
            "--allow-all",
            "--shutdown-timeout=0",
            "--max-conn-lifetime=1h",
            "--timed-reload=300s",
            "--close-timeout=0",
        ])
        .unwrap();
        assert_eq!(c.timeouts.shutdown, Some(Duration::ZERO));
        assert_eq!(c.timeouts.max_lifetime, Some(Duration::from_secs(3600)));
        assert_eq!(c.timed_reload, Some(Duration::from_secs(300)));
        assert_eq!(c.timeouts.close, Duration::ZERO);
        assert_eq!(c.max_concurrent_conns, 0);
    }

    #[test]
    fn listen_and_target_in_the_config() {
        let c = server(&["--allow-all"]).unwrap();
        assert_eq!(c.listen.raw, ":8443");
        assert!(
            matches!(c.target.kind, AddrKind::Tcp { ref host, ref port } if host == "localhost" && port == "80")
        );
        let c = config(&[
            "server",
            "--listen=systemd:gt",
            "--target=unix:/run/b.sock",
            "--keystore=k",
            "--allow-all",
        ])
        .unwrap();
        assert!(matches!(c.listen.kind, AddrKind::Systemd(ref n) if n == "gt"));
        assert!(matches!(c.target.kind, AddrKind::Unix(_)));
    }
}
