//! The validated, typed configuration.
//!
//! `cli.rs` turns the command line into a [`Config`]; everything downstream reads only this.
//! Mutually exclusive choices are enums, so nothing after parsing re-checks flag combinations.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{SpkiPin, UriPattern};
use crate::net::Addr;
use crate::report::HttpUrl;
use crate::tunnel::ProxyUrl;

/// Everything a run needs, fully validated.
#[derive(Debug)]
pub struct Config {
    pub mode: Mode,
    /// `--listen`, as written and parsed.
    pub listen: Addr,
    /// `--target`, as written and parsed.
    pub target: Addr,
    pub identity: IdentitySource,
    /// `--cacert`; `None` means the system trust store.
    pub cacert: Option<PathBuf>,
    /// Where the system trust store is read from when there is no `--cacert`.
    pub system_trust: SystemTrust,
    pub timeouts: Timeouts,
    /// `--max-concurrent-conns`; 0 means unlimited.
    pub max_concurrent_conns: u32,
    /// `--timed-reload`; `None` when zero or negative.
    pub timed_reload: Option<Duration>,
    pub tls: TlsPolicy,
    /// `--skip-resolve`.
    pub skip_resolve: bool,
    /// `--disable-landlock`.
    pub disable_landlock: bool,
    /// `--status`, parsed (scheme stripped).
    pub status: Option<StatusAddr>,
    /// `--enable-shutdown`.
    pub enable_shutdown: bool,
    /// `--enable-pprof`: the `/debug/pprof/` routes on the status port.
    pub enable_pprof: bool,
    pub metrics: MetricsOpts,
}

/// `--metrics-*` (docs/behaviour.md §8.5).
#[derive(Debug)]
pub struct MetricsOpts {
    /// `--metrics-graphite`: a TCP `host:port`.
    pub graphite: Option<Addr>,
    /// `--metrics-url`.
    pub url: Option<HttpUrl>,
    /// `--metrics-prefix`.
    pub prefix: String,
    /// `--metrics-interval`: the `--metrics-url` push period; zero never pushes.
    pub interval: Duration,
}

impl Config {
    /// Whether anything observes metrics; when not, nothing is recorded (docs/behaviour.md §7.5).
    pub fn metrics_observed(&self) -> bool {
        self.status.is_some() || self.metrics.graphite.is_some() || self.metrics.url.is_some()
    }
}

/// The mode-specific part of the configuration.
#[derive(Debug)]
pub enum Mode {
    Server(ServerOpts),
    Client(ClientOpts),
}

#[derive(Debug)]
pub struct ServerOpts {
    pub auth: ServerAuth,
    /// `--proxy-protocol` (= `Conn`) or `--proxy-protocol-mode`.
    pub proxy_protocol: Option<ProxyProtocolMode>,
    /// `--target-status`: the backend check is an HTTP GET of this URL (docs/behaviour.md §8.4).
    pub target_status: Option<HttpUrl>,
}

/// How the server authenticates and authorizes clients (docs/behaviour.md §4.2, §5.5).
#[derive(Debug, Clone)]
pub enum ServerAuth {
    /// `--disable-authentication`: no client certificate requested.
    Disabled,
    /// `--allow-all`: any client with a verified certificate.
    AllowAll,
    /// `--allow-spki-pin`: any certificate whose leaf SPKI matches a pin; no chain checks.
    Pins(Vec<SpkiPin>),
    /// `--allow-cn/-ou/-dns/-ip/-uri`: verified chain, then the first match accepts.
    Acl(Acl),
}

#[derive(Debug)]
pub struct ClientOpts {
    /// `--override-server-name`.
    pub override_server_name: Option<String>,
    pub verify: ClientVerify,
    /// `--proxy`.
    pub proxy: Option<ProxySetting>,
}

/// `--proxy`, parsed once while validating. A URL that passes the parse-time check but that no
/// dialer can use (an unknown scheme, a bad escape in the credentials) keeps its error here:
/// the reference reports it when the dialer is built, after the certificates have loaded, so
/// startup raises it at that point with that step's messages.
#[derive(Debug, Clone)]
pub struct ProxySetting {
    /// The URL as given, for the (redacted) startup log line.
    pub raw: String,
    pub url: Result<ProxyUrl, String>,
}

/// `SSL_CERT_FILE` and `SSL_CERT_DIR`, read once at startup. An empty variable counts as unset,
/// for loading the store and for the sandbox alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemTrust {
    /// `SSL_CERT_FILE`: a bundle read instead of the distribution's.
    pub file: Option<PathBuf>,
    /// `SSL_CERT_DIR`: colon-separated directories read instead of the distribution's.
    pub dir: Option<OsString>,
}

/// How the client checks the server (docs/behaviour.md §4.3, §5.2).
#[derive(Debug, Clone)]
pub enum ClientVerify {
    /// Chain and hostname verification, then the ACL if it is not empty.
    Standard(Acl),
    /// `--verify-spki-pin`: only the pin is checked.
    Pins(Vec<SpkiPin>),
}

/// Name-based access control list, and the OPA policy consulted after the names (they are
/// ORed, names first); an empty list (client mode only) accepts everyone.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    pub cn: Vec<String>,
    pub ou: Vec<String>,
    pub dns: Vec<String>,
    pub ip: Vec<IpAddr>,
    pub uri: Vec<UriPattern>,
    /// `--allow-policy`/`--allow-query` or `--verify-policy`/`--verify-query`.
    pub policy: Option<PolicySpec>,
}

impl Acl {
    pub fn is_empty(&self) -> bool {
        self.names_empty() && self.policy.is_none()
    }

    /// No `--allow-cn/-ou/-dns/-ip/-uri` (or `--verify-*`) name at all.
    pub fn names_empty(&self) -> bool {
        self.cn.is_empty()
            && self.ou.is_empty()
            && self.dns.is_empty()
            && self.ip.is_empty()
            && self.uri.is_empty()
    }
}

/// An OPA policy: the bundle (a directory, a `.tar.gz` bundle or a `.rego` file) and the
/// query whose single `true` result admits the peer. Loaded when the authorizer is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub bundle: String,
    pub query: String,
}

/// Where the identity comes from (docs/behaviour.md §3.1).
#[derive(Debug, Clone)]
pub enum IdentitySource {
    /// `--keystore` (+ `--storepass`).
    Keystore { path: PathBuf, password: String },
    /// `--cert` + `--key`.
    CertKey { cert: PathBuf, key: PathBuf },
    /// `--pkcs11-module` with `--cert` (or `--keystore`, read as the certificate file): the
    /// chain comes from that PEM file, the key stays in the token (docs/behaviour.md §3.8).
    Pkcs11 {
        cert: PathBuf,
        module: PathBuf,
        /// `--pkcs11-token-label`, compared exactly.
        token_label: String,
        /// `--pkcs11-pin` or the first line of `--pkcs11-pin-file`.
        pin: String,
    },
    /// The SPIFFE Workload API (`--use-workload-api`, `--use-workload-api-addr`,
    /// `SPIFFE_ENDPOINT_SOCKET`): the address as given (parsed, with its error texts, when the
    /// source is created) and the wait for the first update (`None`: for ever).
    WorkloadApi {
        addr: String,
        timeout: Option<Duration>,
        /// Client `--disable-authentication`: the SVID is still awaited (its bundles verify
        /// the server) but never presented.
        present_no_certificate: bool,
    },
    /// Client `--disable-authentication`: no certificate.
    None,
    /// `--auto-acme-cert` and its companions: a certificate from an ACME CA.
    #[cfg(feature = "acme")]
    Acme(AcmeOpts),
}

/// `--auto-acme-*` (docs/behaviour.md §18.5), as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeOpts {
    /// `--auto-acme-cert`: the one name.
    pub name: String,
    /// `--auto-acme-email`.
    pub email: String,
    /// `--auto-acme-ca`; empty means Let's Encrypt.
    pub ca: String,
    /// `--auto-acme-testca`; when set, used instead of `--auto-acme-ca`.
    pub testca: String,
    /// `--auto-acme-renew-check-interval`; `None` when not positive (the default applies).
    pub renew_check: Option<Duration>,
    /// `--auto-acme-alt-tls-alpn-port`; 0 means 443.
    pub alt_port: u16,
}

/// Deadlines for one connection and for the drain (docs/behaviour.md §2.3, §7.3, §12.2).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `--connect-timeout`: handshake + dial budget. A negative flag value becomes zero, which
    /// fails every handshake at once.
    pub connect: Duration,
    /// `--close-timeout`: grace after the first EOF (negative flag values become zero).
    pub close: Duration,
    /// `--max-conn-lifetime`; `None` when zero or negative.
    pub max_lifetime: Option<Duration>,
    /// `--shutdown-timeout`; `None` when negative (exit 1 as soon as shutdown starts).
    pub shutdown: Option<Duration>,
}

/// TLS knobs (docs/behaviour.md §2.6, §4.1).
#[derive(Debug, Clone)]
pub struct TlsPolicy {
    /// `--max-tls-version`.
    pub max_version: MaxTlsVersion,
    /// `--cipher-suites` groups, in order, validated.
    pub cipher_suites: Vec<CipherGroup>,
    /// Client mode keeps a TLS session cache, unless `GHOSTUNNEL_TLS_RESUMPTION` is `off`,
    /// `0`, `no` or `false` (the reference's client keeps none: every connection is a full
    /// handshake).
    pub resumption: bool,
}

/// `--max-tls-version`, any case. The reference accepts any word while parsing and refuses an
/// unknown one only when it builds the TLS configuration, so the word is kept for that error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MaxTlsVersion {
    /// Absent or `TLS1.3`: TLS 1.3 preferred, TLS 1.2 accepted.
    #[default]
    Tls13,
    /// `TLS1.2`.
    Tls12,
    /// Anything else, as written.
    Unsupported(String),
}

impl MaxTlsVersion {
    pub fn parse(s: &str) -> MaxTlsVersion {
        match s.to_ascii_uppercase().as_str() {
            "" | "TLS1.3" => MaxTlsVersion::Tls13,
            "TLS1.2" => MaxTlsVersion::Tls12,
            _ => MaxTlsVersion::Unsupported(s.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherGroup {
    Aes,
    Chacha,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolMode {
    Conn,
    Tls,
    TlsFull,
}

/// `--quiet` classes (docs/behaviour.md §13.2).
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet {
    pub all: bool,
    pub conns: bool,
    pub conn_errs: bool,
    pub handshake_errs: bool,
}

/// `--status` with its scheme remembered (docs/behaviour.md §8.1).
#[derive(Debug)]
pub struct StatusAddr {
    pub addr: Addr,
    pub scheme: StatusScheme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusScheme {
    None,
    Http,
    Https,
}
