//! The flag table: every flag with its type, scope, environment fallback, default and help
//! text. The parser, `--help`, the man page and the completions are all generated from it.

/// One identifier per flag name (the server and client rows of `--listen`, `--target` and
/// `--disable-authentication` share theirs): the validation reads values by these, so a
/// misspelt flag name cannot compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Id {
    Keystore,
    Cert,
    Key,
    Storepass,
    StorepassFile,
    Cacert,
    UseWorkloadApi,
    UseWorkloadApiAddr,
    UseWorkloadApiTimeout,
    TimedReload,
    ShutdownTimeout,
    ConnectTimeout,
    CloseTimeout,
    MaxConnLifetime,
    MaxConcurrentConns,
    MetricsGraphite,
    MetricsUrl,
    MetricsPrefix,
    MetricsInterval,
    Status,
    EnablePprof,
    EnableShutdown,
    Quiet,
    SkipResolve,
    Syslog,
    Pkcs11Module,
    Pkcs11TokenLabel,
    Pkcs11Pin,
    Pkcs11PinFile,
    DisableLandlock,
    Check,
    CipherSuites,
    AllowUnsafeCipherSuites,
    MaxTlsVersion,
    UseLandlock,
    Listen,
    Target,
    TargetStatus,
    ProxyProtocol,
    ProxyProtocolMode,
    UnsafeTarget,
    AllowAll,
    AllowCn,
    AllowOu,
    AllowDns,
    AllowUri,
    AllowIp,
    AllowSpkiPin,
    AllowPolicy,
    AllowQuery,
    DisableAuthentication,
    AutoAcmeCert,
    AutoAcmeEmail,
    AutoAcmeAgreeToTos,
    AutoAcmeCa,
    AutoAcmeTestca,
    AutoAcmeRenewCheckInterval,
    AutoAcmeAltTlsAlpnPort,
    UnsafeListen,
    OverrideServerName,
    Proxy,
    VerifyCn,
    VerifyOu,
    VerifyDns,
    VerifyUri,
    VerifyIp,
    VerifySpkiPin,
    VerifyPolicy,
    /// Keep last: a test counts the variants by it.
    VerifyQuery,
}

impl Id {
    /// The long flag name, without `--`.
    pub(super) const fn name(self) -> &'static str {
        match self {
            Id::Keystore => "keystore",
            Id::Cert => "cert",
            Id::Key => "key",
            Id::Storepass => "storepass",
            Id::StorepassFile => "storepass-file",
            Id::Cacert => "cacert",
            Id::UseWorkloadApi => "use-workload-api",
            Id::UseWorkloadApiAddr => "use-workload-api-addr",
            Id::UseWorkloadApiTimeout => "use-workload-api-timeout",
            Id::TimedReload => "timed-reload",
            Id::ShutdownTimeout => "shutdown-timeout",
            Id::ConnectTimeout => "connect-timeout",
            Id::CloseTimeout => "close-timeout",
            Id::MaxConnLifetime => "max-conn-lifetime",
            Id::MaxConcurrentConns => "max-concurrent-conns",
            Id::MetricsGraphite => "metrics-graphite",
            Id::MetricsUrl => "metrics-url",
            Id::MetricsPrefix => "metrics-prefix",
            Id::MetricsInterval => "metrics-interval",
            Id::Status => "status",
            Id::EnablePprof => "enable-pprof",
            Id::EnableShutdown => "enable-shutdown",
            Id::Quiet => "quiet",
            Id::SkipResolve => "skip-resolve",
            Id::Syslog => "syslog",
            Id::Pkcs11Module => "pkcs11-module",
            Id::Pkcs11TokenLabel => "pkcs11-token-label",
            Id::Pkcs11Pin => "pkcs11-pin",
            Id::Pkcs11PinFile => "pkcs11-pin-file",
            Id::DisableLandlock => "disable-landlock",
            Id::Check => "check",
            Id::CipherSuites => "cipher-suites",
            Id::AllowUnsafeCipherSuites => "allow-unsafe-cipher-suites",
            Id::MaxTlsVersion => "max-tls-version",
            Id::UseLandlock => "use-landlock",
            Id::Listen => "listen",
            Id::Target => "target",
            Id::TargetStatus => "target-status",
            Id::ProxyProtocol => "proxy-protocol",
            Id::ProxyProtocolMode => "proxy-protocol-mode",
            Id::UnsafeTarget => "unsafe-target",
            Id::AllowAll => "allow-all",
            Id::AllowCn => "allow-cn",
            Id::AllowOu => "allow-ou",
            Id::AllowDns => "allow-dns",
            Id::AllowUri => "allow-uri",
            Id::AllowIp => "allow-ip",
            Id::AllowSpkiPin => "allow-spki-pin",
            Id::AllowPolicy => "allow-policy",
            Id::AllowQuery => "allow-query",
            Id::DisableAuthentication => "disable-authentication",
            Id::AutoAcmeCert => "auto-acme-cert",
            Id::AutoAcmeEmail => "auto-acme-email",
            Id::AutoAcmeAgreeToTos => "auto-acme-agree-to-tos",
            Id::AutoAcmeCa => "auto-acme-ca",
            Id::AutoAcmeTestca => "auto-acme-testca",
            Id::AutoAcmeRenewCheckInterval => "auto-acme-renew-check-interval",
            Id::AutoAcmeAltTlsAlpnPort => "auto-acme-alt-tls-alpn-port",
            Id::UnsafeListen => "unsafe-listen",
            Id::OverrideServerName => "override-server-name",
            Id::Proxy => "proxy",
            Id::VerifyCn => "verify-cn",
            Id::VerifyOu => "verify-ou",
            Id::VerifyDns => "verify-dns",
            Id::VerifyUri => "verify-uri",
            Id::VerifyIp => "verify-ip",
            Id::VerifySpkiPin => "verify-spki-pin",
            Id::VerifyPolicy => "verify-policy",
            Id::VerifyQuery => "verify-query",
        }
    }
}

/// The value type of a flag (docs/behaviour.md §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Duration,
    Uint32,
    Str,
    /// A path that must name an existing file (not a directory) at parse time, even when it
    /// comes from the environment (`--pkcs11-module`).
    ExistingFile,
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
    pub(super) fn is_list(self) -> bool {
        matches!(self, List | IpList | QuietList)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Global,
    Server,
    Client,
}

/// One row of the flag table.
pub(super) struct Flag {
    pub(super) id: Id,
    /// `id.name()`, kept beside it for the help and documents.
    pub(super) name: &'static str,
    /// Hidden alternative names (`--allow-dns-san`); they fill the same value.
    pub(super) aliases: &'static [&'static str],
    pub(super) kind: Kind,
    pub(super) scope: Scope,
    /// Environment fallback, used only when the flag is absent (an empty variable is absent).
    pub(super) env: Option<&'static str>,
    pub(super) default: &'static str,
    /// The `=VALUE` shown in help; empty means the default, else the upper-cased name.
    pub(super) placeholder: &'static str,
    pub(super) hidden: bool,
    /// The value is a file path: shells complete file names for it.
    pub(super) file: bool,
    /// A feature this build lacks: setting it to a non-default value fails mode validation.
    pub(super) unsupported: bool,
    pub(super) help: &'static str,
}

/// Whether this build obtains certificates from ACME CAs (cargo feature `acme`).
const ACME: bool = cfg!(feature = "acme");

/// An ACME flag's help, marked when the build lacks the feature.
macro_rules! acme_help {
    ($text:literal) => {
        if ACME {
            $text
        } else {
            concat!($text, " (not supported by this build)")
        }
    };
}

/// OPA policies are built in (cargo feature `opa`).
const OPA: bool = cfg!(feature = "opa");

/// A help text for builds with the feature, and the one for builds without it.
const fn built_help(built: bool, with: &'static str, without: &'static str) -> &'static str {
    if built { with } else { without }
}

const fn f(id: Id, kind: Kind, scope: Scope, help: &'static str) -> Flag {
    Flag {
        id,
        name: id.name(),
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
    /// Unsupported unless the build has the feature (`cfg!(feature = ...)`).
    const fn supported_if(mut self, feature: bool) -> Flag {
        self.unsupported = !feature;
        self
    }
    const fn aliases(mut self, a: &'static [&'static str]) -> Flag {
        self.aliases = a;
        self
    }

    /// `--name` or `--name=PLACEHOLDER`, as in the help text.
    pub(super) fn head(&self) -> String {
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
    pub(super) fn help_text(&self) -> String {
        match self.env {
            Some(var) => format!("{} (${var})", self.help),
            None => self.help.to_string(),
        }
    }
}

pub(super) use Kind::*;
pub(super) use Scope::*;

/// The `--quiet` classes (docs/behaviour.md §13.2), in the reference's order, which its error
/// message lists.
pub(super) const QUIET_CLASSES: &[&str] = &["", "all", "conns", "handshake-errs", "conn-errs"];

/// Whether this build drives PKCS#11 tokens (cargo feature `pkcs11`).
const PKCS11: bool = cfg!(feature = "pkcs11");

/// The help text of a PKCS#11 flag, for builds with and without the feature.
const fn pkcs11_help(with: &'static str, without: &'static str) -> &'static str {
    if PKCS11 { with } else { without }
}

/// Every flag of docs/behaviour.md §2.3-2.5, in help order, plus `--check`, `--storepass-file`
/// and `--pkcs11-pin-file`.
/// `--help`, `--version`, `--help-long`, `--help-man`, `--help-custom-man` and
/// `--completion-script-{bash,zsh}` are handled by the parser itself.
pub(super) const FLAGS: &[Flag] = &[
    f(Id::Keystore, Str, Global, "Path to keystore (combined PEM with cert/key, or PKCS12 keystore).")
        .env("KEYSTORE_PATH")
        .placeholder("PATH")
        .file(),
    f(Id::Cert, Str, Global, "Path to certificate (PEM with certificate chain).")
        .env("CERT_PATH")
        .placeholder("PATH")
        .file(),
    f(Id::Key, Str, Global, "Path to certificate private key (PEM with private key).")
        .env("KEY_PATH")
        .placeholder("PATH")
        .file(),
    f(Id::Storepass, Str, Global, "Password for keystore (if using PKCS keystore, optional).")
        .env("KEYSTORE_PASS")
        .placeholder("PASS"),
    f(Id::StorepassFile, Str, Global, "Read the keystore password from the first line of this file (e.g. a systemd credential), so it never appears in ps.")
        .placeholder("PATH")
        .file(),
    f(Id::Cacert, Str, Global, "Path to CA bundle file (PEM/X509). Uses system trust store by default.")
        .env("CACERT_PATH")
        .placeholder("CACERT")
        .file(),
    f(Id::UseWorkloadApi, Bool, Global, if cfg!(feature = "spiffe") {
        "If true, certificate and root CAs are retrieved via the SPIFFE Workload API."
    } else {
        "If true, certificate and root CAs are retrieved via the SPIFFE Workload API (not supported by this build)."
    })
        .supported_if(cfg!(feature = "spiffe")),
    f(Id::UseWorkloadApiAddr, Str, Global, if cfg!(feature = "spiffe") {
        "If set, certificates and root CAs are retrieved via the SPIFFE Workload API at the specified address (implies --use-workload-api)."
    } else {
        "If set, certificates and root CAs are retrieved via the SPIFFE Workload API at the specified address (not supported by this build)."
    })
        .env("SPIFFE_ENDPOINT_SOCKET")
        .placeholder("ADDR")
        .supported_if(cfg!(feature = "spiffe")),
    f(Id::UseWorkloadApiTimeout, Duration, Global, if cfg!(feature = "spiffe") {
        "Timeout for the initial SPIFFE Workload API certificate fetch; 0 waits indefinitely."
    } else {
        "Timeout for the initial SPIFFE Workload API certificate fetch; 0 waits indefinitely (not supported by this build)."
    })
        .default("10m")
        .supported_if(cfg!(feature = "spiffe")),
    f(Id::TimedReload, Duration, Global, "Reload keystores every given interval (e.g. 300s), refresh listener/client on changes.")
        .default("0"),
    f(Id::ShutdownTimeout, Duration, Global, "Process will wait for this duration to allow open connections to finish.")
        .default("5m"),
    f(Id::ConnectTimeout, Duration, Global, "Timeout for establishing connections, handshakes.")
        .default("10s"),
    f(Id::CloseTimeout, Duration, Global, "Timeout for closing connections when one side terminates. Zero means immediate closure.")
        .default("60s"),
    f(Id::MaxConnLifetime, Duration, Global, "Maximum lifetime for connections post-handshake, no matter what. Zero means infinite.")
        .default("0s"),
    f(Id::MaxConcurrentConns, Uint32, Global, "Maximum number of concurrent connections to handle in the proxy. Zero means infinite.")
        .default("0"),
    f(Id::MetricsGraphite, Str, Global, "Collect metrics and report them to the given graphite instance (raw TCP, a new connection every --metrics-interval).")
        .placeholder("ADDR"),
    f(Id::MetricsUrl, Str, Global, "Collect metrics and POST them periodically to the given URL (via HTTP/JSON; HTTPS trusts --cacert or the system roots).")
        .placeholder("URL"),
    f(Id::MetricsPrefix, Str, Global, "Set prefix string for all reported metrics.")
        .default("ghostunnel")
        .placeholder("PREFIX"),
    f(Id::MetricsInterval, Duration, Global, "Collect (and post/send) metrics every specified interval.")
        .default("30s"),
    f(Id::Status, Str, Global, "Enable serving /_status and /_metrics on given HOST:PORT (or unix:SOCKET).")
        .placeholder("ADDR"),
    f(Id::EnablePprof, Bool, Global, "Enable serving /debug/pprof endpoints alongside /_status (the process's threads; Go's runtime profiles do not exist here)."),
    f(Id::EnableShutdown, Bool, Global, "Enable serving a /_shutdown endpoint alongside /_status to allow terminating via HTTP."),
    f(Id::Quiet, QuietList, Global, "Silence log messages (can be all, conns, handshake-errs, conn-errs; repeat flag for more than one).")
        .placeholder("CLASS"),
    f(Id::SkipResolve, Bool, Global, "Skip resolving target host on startup (useful to start Ghostunnel before network is up)."),
    f(Id::Syslog, Bool, Global, "Send logs to syslog instead of stdout."),
    f(Id::Pkcs11Module, if PKCS11 { ExistingFile } else { Str }, Global, pkcs11_help("Path to PKCS11 module (SO) file.", "Path to PKCS11 module (SO) file (not supported by this build)."))
        .env("PKCS11_MODULE")
        .placeholder("PATH")
        .file()
        .supported_if(PKCS11),
    f(Id::Pkcs11TokenLabel, Str, Global, pkcs11_help("Token label for slot/key in PKCS11 module.", "Token label for slot/key in PKCS11 module (not supported by this build)."))
        .env("PKCS11_TOKEN_LABEL")
        .placeholder("LABEL")
        .supported_if(PKCS11),
    f(Id::Pkcs11Pin, Str, Global, pkcs11_help("PIN code for slot/key in PKCS11 module.", "PIN code for slot/key in PKCS11 module (not supported by this build)."))
        .env("PKCS11_PIN")
        .placeholder("PIN")
        .supported_if(PKCS11),
    f(Id::Pkcs11PinFile, Str, Global, pkcs11_help("Read the PKCS11 PIN from the first line of this file (e.g. a systemd credential), so it never appears in ps.", "Read the PKCS11 PIN from the first line of this file (not supported by this build)."))
        .placeholder("PATH")
        .file()
        .supported_if(PKCS11),
    f(Id::DisableLandlock, Bool, Global, "Disable Landlock sandboxing."),
    f(Id::Check, Bool, Global, "Validate the flags and load every certificate, key and CA file as a start would, print the identity and its expiry, then exit without binding anything."),
    f(Id::CipherSuites, Str, Global, "Set of cipher suites to enable, comma-separated, in order of preference (AES, CHACHA).")
        .default("AES,CHACHA")
        .hidden(),
    f(Id::AllowUnsafeCipherSuites, Bool, Global, "Allow cipher suites deemed to be unsafe to be enabled via the cipher-suites flag.")
        .hidden(),
    f(Id::MaxTlsVersion, Str, Global, "Maximum TLS version to use (TLS1.2 or TLS1.3).")
        .hidden(),
    f(Id::UseLandlock, Bool, Global, "Accepted for compatibility; Landlock is on unless --disable-landlock.")
        .hidden(),
    // Server mode.
    f(Id::Listen, Str, Server, "Address and port to listen on (can be HOST:PORT, unix:PATH, systemd:NAME or launchd:NAME).")
        .placeholder("ADDR"),
    f(Id::Target, Str, Server, "Address to forward connections to (can be HOST:PORT or unix:PATH).")
        .placeholder("ADDR"),
    f(Id::TargetStatus, Str, Server, "Address to target for status checking downstream healthchecks (an http:// or https:// URL, dialed through --target). Defaults to a TCP healthcheck if this flag is not passed.")
        .placeholder("URL"),
    f(Id::ProxyProtocol, Bool, Server, "Enable PROXY protocol v2 to signal connection info to backend."),
    f(Id::ProxyProtocolMode, Enum(&["conn", "tls", "tls-full"]), Server, "PROXY protocol v2 mode: conn (addresses only), tls (adds TLS info) or tls-full (adds the client certificate).")
        .placeholder("MODE"),
    f(Id::UnsafeTarget, Bool, Server, "If set, does not limit target to localhost, 127.0.0.1, [::1], or UNIX sockets."),
    f(Id::AllowAll, Bool, Server, "Allow all clients, do not check client cert subject."),
    f(Id::AllowCn, List, Server, "Allow clients with given common name (can be repeated).")
        .placeholder("CN"),
    f(Id::AllowOu, List, Server, "Allow clients with given organizational unit name (can be repeated).")
        .placeholder("OU"),
    f(Id::AllowDns, List, Server, "Allow clients with given DNS subject alternative name (can be repeated).")
        .aliases(&["allow-dns-san"])
        .placeholder("DNS"),
    f(Id::AllowUri, List, Server, "Allow clients with given URI subject alternative name (can be repeated).")
        .aliases(&["allow-uri-san"])
        .placeholder("URI"),
    f(Id::AllowIp, IpList, Server, "Allow clients with given IP subject alternative name (can be repeated).")
        .aliases(&["allow-ip-san"])
        .placeholder("IP")
        .hidden(),
    f(Id::AllowSpkiPin, List, Server, "Allow clients whose leaf certificate's SPKI hash matches <algo>:<base64> (can be repeated).")
        .placeholder("PIN"),
    f(Id::AllowPolicy, Str, Server, built_help(OPA, "Allow passing the location of an OPA bundle.", "Allow passing the location of an OPA bundle (not supported by this build)."))
        .placeholder("BUNDLE")
        .file()
        .supported_if(OPA),
    f(Id::AllowQuery, Str, Server, built_help(OPA, "Allow defining a query to validate against the client certificate and the policy.", "Allow defining a query to validate against the client certificate and the policy (not supported by this build)."))
        .placeholder("QUERY")
        .supported_if(OPA),
    f(Id::DisableAuthentication, Bool, Server, "Disable client authentication, no client certificate will be required."),
    f(Id::AutoAcmeCert, Str, Server, acme_help!("Automatically obtain a certificate via ACME for the specified FQDN"))
        .placeholder("FQDN")
        .supported_if(ACME),
    f(Id::AutoAcmeEmail, Str, Server, acme_help!("Email address associated with all ACME requests"))
        .placeholder("EMAIL")
        .supported_if(ACME),
    f(Id::AutoAcmeAgreeToTos, Bool, Server, acme_help!("Agree to the Terms of Service of the ACME CA"))
        .supported_if(ACME),
    f(Id::AutoAcmeCa, Str, Server, acme_help!("Specify the URL to the ACME CA. Defaults to Let's Encrypt if not specified."))
        .placeholder("https://some-acme-ca.example.com/")
        .supported_if(ACME),
    f(Id::AutoAcmeTestca, Str, Server, acme_help!("Specify the URL to the ACME CA's Test/Staging environment. If set, all requests will go to this CA and --auto-acme-ca will be ignored."))
        .placeholder("https://testing.some-acme-ca.example.com/")
        .supported_if(ACME),
    f(Id::AutoAcmeRenewCheckInterval, Duration, Server, acme_help!("ACME renewal check interval"))
        .hidden()
        .supported_if(ACME),
    f(Id::AutoAcmeAltTlsAlpnPort, Uint32, Server, acme_help!("ACME TLS-ALPN challenge port"))
        .hidden()
        .supported_if(ACME),
    // Client mode.
    f(Id::Listen, Str, Client, "Address and port to listen on (can be HOST:PORT, unix:PATH, systemd:NAME or launchd:NAME).")
        .placeholder("ADDR"),
    f(Id::Target, Str, Client, "Address to forward connections to (must be HOST:PORT).")
        .placeholder("ADDR"),
    f(Id::UnsafeListen, Bool, Client, "If set, does not limit listen to localhost, 127.0.0.1, [::1], or UNIX sockets."),
    f(Id::OverrideServerName, Str, Client, "If set, overrides the server name used for hostname verification.")
        .placeholder("NAME"),
    f(Id::Proxy, Url, Client, "If set, connect to target over given proxy (HTTP CONNECT or SOCKS5). Must be a proxy URL.")
        .aliases(&["connect-proxy"])
        .placeholder("URL"),
    f(Id::VerifyCn, List, Client, "Allow servers with given common name (can be repeated).")
        .placeholder("CN"),
    f(Id::VerifyOu, List, Client, "Allow servers with given organizational unit name (can be repeated).")
        .placeholder("OU"),
    f(Id::VerifyDns, List, Client, "Allow servers with given DNS subject alternative name (can be repeated).")
        .aliases(&["verify-dns-san"])
        .placeholder("DNS"),
    f(Id::VerifyUri, List, Client, "Allow servers with given URI subject alternative name (can be repeated).")
        .aliases(&["verify-uri-san"])
        .placeholder("URI"),
    f(Id::VerifyIp, IpList, Client, "Allow servers with given IP subject alternative name (can be repeated).")
        .aliases(&["verify-ip-san"])
        .placeholder("IP")
        .hidden(),
    f(Id::VerifySpkiPin, List, Client, "Allow servers whose leaf certificate's SPKI hash matches <algo>:<base64> (can be repeated).")
        .placeholder("PIN"),
    f(Id::VerifyPolicy, Str, Client, built_help(OPA, "Allow passing the location of an OPA bundle.", "Allow passing the location of an OPA bundle (not supported by this build)."))
        .placeholder("BUNDLE")
        .file()
        .supported_if(OPA),
    f(Id::VerifyQuery, Str, Client, built_help(OPA, "Allow defining a query to validate against the server certificate and the policy.", "Allow defining a query to validate against the server certificate and the policy (not supported by this build)."))
        .placeholder("QUERY")
        .supported_if(OPA),
    f(Id::DisableAuthentication, Bool, Client, "Disable client authentication, no certificate will be provided to the server."),
];

pub(super) const ABOUT: &str =
    "A simple SSL/TLS proxy with mutual authentication for securing non-TLS services.";
pub(super) const SERVER_ABOUT: &str = "Server mode (TLS listener -> plain TCP/UNIX target).";
pub(super) const CLIENT_ABOUT: &str = "Client mode (plain TCP/UNIX listener -> TLS target).";

/// The parser's own flags, shown first in help: (head, help).
pub(super) const BUILTIN_HELP: &[(&str, &str)] = &[
    (
        "--help",
        "Show context-sensitive help (also try --help-long and --help-man).",
    ),
    ("--version", "Show application version."),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `Id` has a row, and the rows sharing an `Id` (a flag of both commands) agree on
    /// everything but their help text, so reading a value by `Id` is unambiguous.
    #[test]
    fn ids_and_rows_agree() {
        for (i, flag) in FLAGS.iter().enumerate() {
            assert_eq!(flag.name, flag.id.name());
            for other in FLAGS[i + 1..].iter().filter(|o| o.id == flag.id) {
                assert_ne!(flag.scope, other.scope, "--{} twice in a scope", flag.name);
                assert_ne!(flag.scope, Global, "--{} global and per command", flag.name);
                assert_eq!(
                    (other.kind, other.default, other.env, other.aliases),
                    (flag.kind, flag.default, flag.env, flag.aliases),
                    "--{}",
                    flag.name
                );
            }
        }
        let names: std::collections::HashSet<&str> = FLAGS.iter().map(|f| f.name).collect();
        // The `Id` enum has exactly as many variants as the table has distinct names.
        assert_eq!(names.len(), Id::VerifyQuery as usize + 1);
    }
}
