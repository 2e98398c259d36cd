//! The validation: raw flag values to the typed [`Config`], with the reference's checks in its
//! order (the first failure wins) and its messages. Every value is read by its flag [`Id`].

use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use super::flags::{Client, FLAGS, Global, Id, Server};
use super::scan::{RawArgs, parse_go_uint32};
use crate::auth::{SpkiPin, UriPattern};
use crate::config::{
    Acl, CipherGroup, ClientOpts, ClientVerify, Config, IdentitySource, MaxTlsVersion, MetricsOpts,
    Mode, PolicySpec, ProxyProtocolMode, ProxySetting, ServerAuth, ServerOpts, StatusAddr,
    StatusScheme, Timeouts, TlsPolicy,
};
use crate::net::{Addr, AddrKind};
use crate::report::HttpUrl;
use crate::tunnel::ProxyUrl;

impl RawArgs {
    /// docs/behaviour.md §2.7.1, in order.
    pub(super) fn parse_stage_checks(&self) -> Result<(), CliError> {
        // The reference's parser resolves `--metrics-graphite` as it reads it.
        let graphite = self.str(Id::MetricsGraphite);
        if !graphite.is_empty() {
            tcp_address(graphite).map_err(|why| {
                CliError::BadValue(format!("'{graphite}' is not a valid TCP address: {why}"))
            })?;
        }
        let status = self.str(Id::Status);
        if self.bool(Id::EnablePprof) && status.is_empty() {
            return Err(CliError::RequiresStatus(Id::EnablePprof.name()));
        }
        if self.bool(Id::EnableShutdown) && status.is_empty() {
            return Err(CliError::RequiresStatus(Id::EnableShutdown.name()));
        }
        let http = |s: &str| s.starts_with("http://") || s.starts_with("https://");
        let url = self.str(Id::MetricsUrl);
        if !url.is_empty() && !http(url) {
            return Err(CliError::NotHttpUrl(Id::MetricsUrl.name()));
        }
        let target_status = self.str(Id::TargetStatus);
        if !target_status.is_empty() && !http(target_status) {
            return Err(CliError::NotHttpUrl(Id::TargetStatus.name()));
        }
        if !status.is_empty() {
            parse_status(status)?;
        }
        if self.nanos(Id::ConnectTimeout) == 0 {
            return Err("--connect-timeout duration must not be zero".into());
        }
        if self.nanos(Id::UseWorkloadApiTimeout) < 0 {
            return Err("--use-workload-api-timeout duration must not be negative (use 0 to wait indefinitely)".into());
        }
        Ok(())
    }

    /// Mode validation (docs/behaviour.md §2.7.2), first failure wins; the error is `<msg>` for
    /// `error: <msg>`. Flags for features this build lacks fail first, so that no
    /// configuration runs with one of them silently ignored.
    pub fn into_config(self) -> Result<Config, CliError> {
        let scope = if self.server { Server } else { Client };
        // Settings that only qualify another flag are ignored without it, as in the
        // reference: a PKCS#11 PIN or token label without a module, a Workload API timeout
        // without the Workload API.
        let set = |id: Id| FLAGS.iter().any(|f| f.id == id && self.is_set(f));
        let moot = |id: Id| match id {
            Id::Pkcs11Pin | Id::Pkcs11PinFile | Id::Pkcs11TokenLabel => !set(Id::Pkcs11Module),
            Id::UseWorkloadApiTimeout => !set(Id::UseWorkloadApi) && !set(Id::UseWorkloadApiAddr),
            _ => false,
        };
        if let Some(flag) = FLAGS
            .iter()
            .filter(|f| f.unsupported && (f.scope == Global || f.scope == scope))
            .find(|f| self.is_set(f) && !moot(f.id))
        {
            return Err(CliError::Unsupported(flag.name));
        }
        let identity = self.identity()?;
        let mode = if self.server {
            Mode::Server(self.server_opts()?)
        } else {
            Mode::Client(self.client_opts()?)
        };
        let tls = self.tls_policy()?;
        // Both were checked by the mode step above (`--listen` only for its prefix).
        let listen = Addr::parse(self.str(Id::Listen)).map_err(|e| bad_address(Id::Listen, e))?;
        let target = Addr::parse(self.str(Id::Target)).map_err(|e| bad_address(Id::Target, e))?;
        // URI patterns compile last: the reference only compiles them after loading
        // certificates (docs/behaviour.md §5.4), so every 2.7.2 message comes first.
        let mode = match mode {
            Mode::Server(mut opts) => {
                if let ServerAuth::Acl(acl) = &mut opts.auth {
                    acl.uri = self.uri_patterns(Id::AllowUri)?;
                }
                Mode::Server(opts)
            }
            Mode::Client(mut opts) => {
                if let ClientVerify::Standard(acl) = &mut opts.verify {
                    acl.uri = self.uri_patterns(Id::VerifyUri)?;
                }
                Mode::Client(opts)
            }
        };
        let duration =
            |id: Id| Duration::from_nanos(u64::try_from(self.nanos(id).max(0)).unwrap_or(u64::MAX));
        let positive = |id: Id| (self.nanos(id) > 0).then(|| duration(id));
        let timeouts = Timeouts {
            connect: duration(Id::ConnectTimeout),
            close: duration(Id::CloseTimeout),
            max_lifetime: positive(Id::MaxConnLifetime),
            shutdown: (self.nanos(Id::ShutdownTimeout) >= 0).then(|| duration(Id::ShutdownTimeout)),
        };
        let status = match self.str(Id::Status) {
            "" => None,
            s => Some(parse_status(s)?),
        };
        let metrics = self.metrics_opts()?;
        let path = |id: Id| {
            Some(self.str(id))
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        Ok(Config {
            mode,
            listen,
            target,
            identity,
            cacert: path(Id::Cacert),
            system_trust: self.system_trust.clone(),
            timeouts,
            max_concurrent_conns: parse_go_uint32(self.str(Id::MaxConcurrentConns)).unwrap_or(0),
            timed_reload: positive(Id::TimedReload),
            tls,
            skip_resolve: self.bool(Id::SkipResolve),
            disable_landlock: self.bool(Id::DisableLandlock),
            status,
            enable_shutdown: self.bool(Id::EnableShutdown),
            enable_pprof: self.bool(Id::EnablePprof),
            metrics,
        })
    }

    /// `--metrics-*` (docs/behaviour.md §8.5), checked after the mode steps.
    fn metrics_opts(&self) -> Result<MetricsOpts, CliError> {
        let graphite = match self.str(Id::MetricsGraphite) {
            "" => None,
            raw => {
                let addr = Addr::parse(raw).map_err(|e| bad_address(Id::MetricsGraphite, e))?;
                if addr.tcp_port().is_none_or(|p| p == 0) {
                    return Err(format!(
                        "invalid --metrics-graphite address {raw}: must be HOST:PORT with a non-zero port"
                    ).into());
                }
                Some(addr)
            }
        };
        let url = match self.str(Id::MetricsUrl) {
            "" => None,
            raw => Some(HttpUrl::parse(raw).map_err(|e| format!("invalid --metrics-url: {e}"))?),
        };
        // Zero or negative: accepted, and nothing is ever posted, as in the reference.
        let interval = Duration::from_nanos(
            u64::try_from(self.nanos(Id::MetricsInterval).max(0)).unwrap_or(u64::MAX),
        );
        Ok(MetricsOpts {
            graphite,
            url,
            prefix: self.str(Id::MetricsPrefix).to_string(),
            interval,
        })
    }

    /// Whether the SPIFFE Workload API is the source: `--use-workload-api`, or any non-empty
    /// address, which implies it even over `--no-use-workload-api` (so `SPIFFE_ENDPOINT_SOCKET`
    /// in the environment is enough; only an explicitly empty `--use-workload-api-addr=` turns
    /// it off). Always false in a build without the feature, whose flags were refused.
    fn workload_api(&self) -> bool {
        self.bool(Id::UseWorkloadApi) || !self.str(Id::UseWorkloadApiAddr).is_empty()
    }

    /// The credential count and pairing rules (docs/behaviour.md §2.7.2 step 1, §3.8). A
    /// PKCS#11 module counts together with `--cert` (a module alone counts nothing); the
    /// workload API counts in a build with it (without, its flags were refused as unsupported,
    /// and so were ACME's).
    fn identity(&self) -> Result<IdentitySource, CliError> {
        let (keystore, cert, key) = (
            self.str(Id::Keystore),
            self.str(Id::Cert),
            self.str(Id::Key),
        );
        let module = self.str(Id::Pkcs11Module);
        let workload = self.workload_api();
        // With the workload API, client `--disable-authentication` only means "present no
        // certificate" and is no credential of its own.
        let disable_auth = !self.server && self.bool(Id::DisableAuthentication) && !workload;
        let acme = self.server && !self.str(Id::AutoAcmeCert).is_empty();
        let count = usize::from(!keystore.is_empty())
            + usize::from(!cert.is_empty() && !key.is_empty())
            + usize::from(!module.is_empty() && !cert.is_empty())
            + usize::from(workload)
            + usize::from(disable_auth)
            + usize::from(acme);
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
        if cert.is_empty() != key.is_empty() && (module.is_empty() || cert.is_empty()) {
            return Err(
                "--cert/--key must be set together, unless using PKCS11 for private key".into(),
            );
        }
        #[cfg(feature = "acme")]
        if acme {
            return self.acme_opts().map(IdentitySource::Acme);
        }
        Ok(if !module.is_empty() {
            // With a module, `--keystore` (when it is the only file) is read as the certificate.
            let cert = if cert.is_empty() { keystore } else { cert };
            IdentitySource::Pkcs11 {
                cert: cert.into(),
                module: module.into(),
                token_label: self.str(Id::Pkcs11TokenLabel).to_string(),
                pin: self.pkcs11_pin()?,
            }
        } else if !keystore.is_empty() {
            let lower = keystore.to_ascii_lowercase();
            if !cfg!(feature = "jceks") && (lower.ends_with(".jceks") || lower.ends_with(".jks")) {
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
        } else if workload {
            IdentitySource::WorkloadApi {
                addr: self.str(Id::UseWorkloadApiAddr).to_string(),
                timeout: match self.nanos(Id::UseWorkloadApiTimeout) {
                    0 => None,
                    // Negative values failed the parse stage.
                    n => Some(Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))),
                },
                present_no_certificate: !self.server && self.bool(Id::DisableAuthentication),
            }
        } else {
            IdentitySource::None
        })
    }

    /// The `--auto-acme-*` settings (docs/behaviour.md §18.5.1); the email and ToS rules are
    /// checked later, in their place among the mode steps.
    #[cfg(feature = "acme")]
    fn acme_opts(&self) -> Result<crate::config::AcmeOpts, CliError> {
        let port = self.str(Id::AutoAcmeAltTlsAlpnPort);
        let alt_port = match port {
            "" => 0,
            p => p.parse::<u16>().map_err(|_| {
                CliError::Invalid(format!("--auto-acme-alt-tls-alpn-port: invalid port {p}"))
            })?,
        };
        let nanos = self.nanos(Id::AutoAcmeRenewCheckInterval);
        Ok(crate::config::AcmeOpts {
            name: self.str(Id::AutoAcmeCert).to_lowercase(),
            email: self.str(Id::AutoAcmeEmail).to_string(),
            ca: self.str(Id::AutoAcmeCa).to_string(),
            testca: self.str(Id::AutoAcmeTestca).to_string(),
            renew_check: (nanos > 0)
                .then(|| Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))),
            alt_port,
        })
    }

    /// `--storepass`, or the first line of `--storepass-file` (never both).
    fn storepass(&self) -> Result<String, CliError> {
        self.secret(Id::Storepass, Id::StorepassFile)
    }

    /// `--pkcs11-pin`, or the first line of `--pkcs11-pin-file` (never both).
    fn pkcs11_pin(&self) -> Result<String, CliError> {
        self.secret(Id::Pkcs11Pin, Id::Pkcs11PinFile)
    }

    /// A secret given as `value`, or as the first line of the file named by `file` (which keeps
    /// it out of `ps`); giving both is an error.
    fn secret(&self, value: Id, file: Id) -> Result<String, CliError> {
        let path = self.str(file);
        if path.is_empty() {
            return Ok(self.str(value).to_string());
        }
        if self.given.contains_key(&value) {
            return Err(format!(
                "--{} and --{} are mutually exclusive",
                value.name(),
                file.name()
            )
            .into());
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "--{}: open {path}: {}",
                file.name(),
                crate::net::strip_os_error(&e)
            )
        })?;
        Ok(text.lines().next().unwrap_or_default().to_string())
    }

    /// The name ACL of `--allow-*` or `--verify-*`; URI patterns are filled in later.
    /// The name ACL of `[cn, ou, dns, ip]` (`--allow-*` or `--verify-*`).
    fn acl(&self, [cn, ou, dns, ip]: [Id; 4]) -> Acl {
        Acl {
            cn: self.list(cn).to_vec(),
            ou: self.list(ou).to_vec(),
            dns: self.list(dns).to_vec(),
            // Validated while parsing.
            ip: self
                .list(ip)
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            uri: Vec::new(),
            policy: None,
        }
    }

    fn uri_patterns(&self, id: Id) -> Result<Vec<UriPattern>, CliError> {
        let flag = id.name();
        self.list(id)
            .iter()
            .map(|p| UriPattern::compile(p).map_err(|e| CliError::UriPattern(flag, e.to_string())))
            .collect()
    }

    /// `--allow-policy`/`--allow-query` (or the `--verify-*` pair): both or neither.
    fn policy(&self, bundle: Id, query: Id) -> Result<Option<PolicySpec>, CliError> {
        match (self.str(bundle), self.str(query)) {
            ("", "") => Ok(None),
            ("", _) | (_, "") => Err(format!(
                "--{} and --{} have to be used together",
                bundle.name(),
                query.name()
            )
            .into()),
            (b, q) => Ok(Some(PolicySpec {
                bundle: b.to_string(),
                query: q.to_string(),
            })),
        }
    }

    fn pins(&self, id: Id) -> Result<Vec<SpkiPin>, CliError> {
        self.list(id)
            .iter()
            .map(|p| {
                SpkiPin::parse(p).map_err(|e| CliError::Invalid(format!("--{}: {e}", id.name())))
            })
            .collect()
    }

    fn any_list(&self, ids: &[Id]) -> bool {
        ids.iter().any(|&id| !self.list(id).is_empty())
    }

    /// docs/behaviour.md §2.7.2 server steps 2-8 (step 1 is [`RawArgs::identity`]).
    fn server_opts(&self) -> Result<ServerOpts, CliError> {
        let disable = self.bool(Id::DisableAuthentication);
        let all = self.bool(Id::AllowAll);
        let a = self.any_list(&[
            Id::AllowCn,
            Id::AllowOu,
            Id::AllowDns,
            Id::AllowIp,
            Id::AllowUri,
        ]);
        let p = !self.list(Id::AllowSpkiPin).is_empty();
        let o = !self.str(Id::AllowPolicy).is_empty() || !self.str(Id::AllowQuery).is_empty();
        let a = a || o;
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
        if p && self.workload_api() {
            return Err("--allow-spki-pin is mutually exclusive with --use-workload-api".into());
        }
        let pins = self.pins(Id::AllowSpkiPin)?;
        let target = self.str(Id::Target);
        if !self.bool(Id::UnsafeTarget) && !Addr::is_safe(target) {
            return Err(
                "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)"
                    .into(),
            );
        }
        let addr = Addr::parse(target).map_err(|e| bad_address(Id::Target, e))?;
        if matches!(addr.kind, AddrKind::Systemd(_) | AddrKind::Launchd(_)) {
            return Err(format!(
                "invalid --target network \"{}\": only tcp and unix targets are supported (systemd:/launchd: cannot be dialed)",
                addr.network()
            ).into());
        }
        if !self.str(Id::AutoAcmeCert).is_empty() {
            if self.str(Id::AutoAcmeEmail).is_empty() {
                return Err("--auto-acme-cert was specified but no email address was provided with --auto-acme-email".into());
            }
            if !self.bool(Id::AutoAcmeAgreeToTos) {
                return Err("--auto-acme-agree-to-tos was not specified and is required if --auto-acme-cert is specified".into());
            }
        }
        let policy = self.policy(Id::AllowPolicy, Id::AllowQuery)?;
        let proxy_protocol = match (
            self.bool(Id::ProxyProtocol),
            self.str(Id::ProxyProtocolMode),
        ) {
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
            ServerAuth::Acl(Acl {
                policy,
                ..self.acl([Id::AllowCn, Id::AllowOu, Id::AllowDns, Id::AllowIp])
            })
        };
        let target_status = match self.str(Id::TargetStatus) {
            "" => None,
            url => Some(HttpUrl::parse(url).map_err(|e| format!("invalid --target-status: {e}"))?),
        };
        Ok(ServerOpts {
            auth,
            proxy_protocol,
            target_status,
        })
    }

    /// docs/behaviour.md §2.7.2 client steps 2-6 (step 1 is [`RawArgs::identity`]).
    fn client_opts(&self) -> Result<ClientOpts, CliError> {
        let listen = self.str(Id::Listen);
        if !self.bool(Id::UnsafeListen) && !Addr::is_safe(listen) {
            return Err("--listen must be unix:PATH, localhost:PORT, systemd:NAME or launchd:NAME (unless --unsafe-listen is set)".into());
        }
        let target = Addr::parse(self.str(Id::Target)).map_err(|e| bad_address(Id::Target, e))?;
        if !matches!(target.kind, AddrKind::Tcp { .. }) {
            return Err(format!(
                "invalid --target network \"{}\": client mode requires a HOST:PORT TCP target",
                target.network()
            )
            .into());
        }
        let names = [
            Id::VerifyCn,
            Id::VerifyOu,
            Id::VerifyDns,
            Id::VerifyIp,
            Id::VerifyUri,
        ];
        let policy = self.policy(Id::VerifyPolicy, Id::VerifyQuery)?;
        let verify = if self.list(Id::VerifySpkiPin).is_empty() {
            ClientVerify::Standard(Acl {
                policy,
                ..self.acl([Id::VerifyCn, Id::VerifyOu, Id::VerifyDns, Id::VerifyIp])
            })
        } else {
            if self.workload_api() {
                return Err(
                    "--verify-spki-pin is mutually exclusive with --use-workload-api".into(),
                );
            }
            let o = !self.str(Id::VerifyPolicy).is_empty() || !self.str(Id::VerifyQuery).is_empty();
            if self.any_list(&names) || o {
                return Err(
                    "--verify-spki-pin is mutually exclusive with other verification flags".into(),
                );
            }
            ClientVerify::Pins(self.pins(Id::VerifySpkiPin)?)
        };
        self.tls_policy()?;
        let non_empty = |id: Id| Some(self.str(id).to_string()).filter(|s| !s.is_empty());
        Ok(ClientOpts {
            override_server_name: non_empty(Id::OverrideServerName),
            verify,
            proxy: non_empty(Id::Proxy).map(|raw| ProxySetting {
                url: ProxyUrl::parse(&raw),
                raw,
            }),
        })
    }

    /// `--cipher-suites` and `--max-tls-version` (docs/behaviour.md §2.6).
    fn tls_policy(&self) -> Result<TlsPolicy, CliError> {
        let mut cipher_suites = Vec::new();
        for name in self.str(Id::CipherSuites).split(',').map(str::trim) {
            cipher_suites.push(match name {
                "AES" => CipherGroup::Aes,
                "CHACHA" => CipherGroup::Chacha,
                "UNSAFE-AZURE" if self.bool(Id::AllowUnsafeCipherSuites) => {
                    return Err("cipher suite group 'UNSAFE-AZURE' is not supported by this build (CBC suites are never offered)".into());
                }
                _ => return Err(format!("invalid cipher suite '{name}' selected").into()),
            });
        }
        Ok(TlsPolicy {
            max_version: MaxTlsVersion::parse(self.str(Id::MaxTlsVersion)),
            cipher_suites,
            resumption: self.resumption,
        })
    }
}

/// `invalid --<flag> address: <why>`.
/// Checks a `HOST:PORT` as Go's `net.ResolveTCPAddr` does, with its error texts: the split,
/// the port (a number up to 65535; names are not services here), the host's resolution.
fn tcp_address(addr: &str) -> Result<(), String> {
    let (host, port) = crate::net::split_host_port(addr)?;
    match port.parse::<u64>() {
        Ok(p) if p > 65535 => return Err(format!("address {port}: invalid port")),
        Ok(_) => {}
        Err(_) => return Err(format!("lookup tcp/{port}: unknown port")),
    }
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    crate::net::resolve(&host, &port)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn bad_address(id: Id, why: String) -> CliError {
    CliError::BadAddress(id.name(), why)
}

/// `--status`: an optional `http://`/`https://` scheme, then an address (docs/behaviour.md §2.7.1
/// step 5).
fn parse_status(s: &str) -> Result<StatusAddr, CliError> {
    let (scheme, rest) = if let Some(r) = s.strip_prefix("http://") {
        (StatusScheme::Http, r)
    } else if let Some(r) = s.strip_prefix("https://") {
        (StatusScheme::Https, r)
    } else {
        (StatusScheme::None, s)
    };
    let addr = Addr::parse(rest).map_err(|e| bad_address(Id::Status, e))?;
    if scheme != StatusScheme::None && !matches!(addr.kind, AddrKind::Tcp { .. }) {
        return Err(format!(
            "invalid --status network \"{}\": http(s):// scheme requires a HOST:PORT target",
            addr.network()
        )
        .into());
    }
    Ok(StatusAddr { addr, scheme })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::path::Path;

    use super::super::Parsed;
    use super::super::testutil::*;
    use super::*;
    use crate::config::SystemTrust;

    // ---- Parse-stage checks (docs/behaviour.md §2.7.1) ----

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
        // Parse-stage errors with the reference's texts (its parser resolves the address).
        for (value, why) in [
            ("nohost", "address nohost: missing port in address"),
            ("unix:/x", "lookup tcp//x: unknown port"),
            ("localhost:99999", "address 99999: invalid port"),
            ("a:b:1", "address a:b:1: too many colons in address"),
        ] {
            assert_eq!(
                err(&[
                    &SERVER[..],
                    &["--allow-all", &format!("--metrics-graphite={value}")]
                ]
                .concat()),
                format!("'{value}' is not a valid TCP address: {why}")
            );
        }
        assert!(
            err(&[&SERVER[..], &["--metrics-graphite=nosuch.invalid:2003"]].concat()).starts_with(
                "'nosuch.invalid:2003' is not a valid TCP address: lookup nosuch.invalid"
            )
        );
        assert_eq!(
            server_err(&["--allow-all", "--metrics-url=http://"]),
            "invalid --metrics-url: parse \"http://\": missing host"
        );
        assert_eq!(
            server_err(&["--allow-all", "--target-status=http://h:x/"]),
            "invalid --target-status: parse \"http://h:x/\": invalid port"
        );
        // Zero (or negative) is accepted and means no `--metrics-url` posts, as in the
        // reference.
        for never in ["0", "0s", "-1s"] {
            let c = server(&["--allow-all", &format!("--metrics-interval={never}")]).unwrap();
            assert!(c.metrics.interval.is_zero(), "{never}");
        }
    }

    // ---- PKCS#11 (docs/behaviour.md §3.8) ----

    #[cfg(feature = "pkcs11")]
    #[test]
    fn pkcs11_counts_with_cert_and_takes_the_keystore_as_certificate() {
        use std::path::PathBuf;
        let module = "--pkcs11-module=/etc/hostname";
        let pkcs11 = |c: &Config| match &c.identity {
            IdentitySource::Pkcs11 {
                cert,
                module,
                token_label,
                pin,
            } => (
                cert.clone(),
                module.clone(),
                token_label.clone(),
                pin.clone(),
            ),
            other => panic!("{other:?}"),
        };
        let bare = |extra: &[&str]| {
            let a = cat(&BARE, extra);
            config(&a.iter().map(String::as_str).collect::<Vec<_>>())
        };
        // A lone --cert is a credential with a module.
        let c = bare(&[
            "--allow-all",
            "--cert=c.pem",
            module,
            "--pkcs11-token-label=t",
            "--pkcs11-pin=1",
        ])
        .unwrap();
        assert_eq!(
            pkcs11(&c),
            (
                PathBuf::from("c.pem"),
                PathBuf::from("/etc/hostname"),
                "t".into(),
                "1".into()
            )
        );
        // --keystore with a module is the certificate file.
        let c = server(&["--allow-all", module]).unwrap();
        assert_eq!(pkcs11(&c).0, PathBuf::from("k.pem"));
        // A module alone, or with --key only, is no credential.
        let none = "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required";
        assert_eq!(bare(&["--allow-all", module]).unwrap_err(), none);
        assert_eq!(bare(&["--allow-all", module, "--key=k"]).unwrap_err(), none);
        // --cert and --key with a module count twice.
        assert_eq!(
            bare(&["--allow-all", module, "--cert=c", "--key=k"]).unwrap_err(),
            "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive"
        );
        // --key beside another source is unpaired.
        assert_eq!(
            server_err(&["--allow-all", module, "--key=k"]),
            "--cert/--key must be set together, unless using PKCS11 for private key"
        );
        // A PIN or label without a module changes nothing.
        assert!(matches!(
            server(&["--allow-all", "--pkcs11-pin=1"]).unwrap().identity,
            IdentitySource::Keystore { .. }
        ));
    }

    #[cfg(feature = "pkcs11")]
    #[test]
    fn pkcs11_pin_from_a_file() {
        let dir = std::env::temp_dir().join(format!("gt-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pin");
        std::fs::write(&file, "4321\nignored\n").unwrap();
        let pin_file = format!("--pkcs11-pin-file={}", file.display());
        let c = server(&["--allow-all", "--pkcs11-module=/etc/hostname", &pin_file]).unwrap();
        assert!(matches!(c.identity, IdentitySource::Pkcs11 { ref pin, .. } if pin == "4321"));
        assert_eq!(
            server_err(&[
                "--allow-all",
                "--pkcs11-module=/etc/hostname",
                &pin_file,
                "--pkcs11-pin=1"
            ]),
            "--pkcs11-pin and --pkcs11-pin-file are mutually exclusive"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // ---- SPIFFE Workload API ----

    #[cfg(feature = "spiffe")]
    fn workload_of(c: &Config) -> (String, Option<Duration>) {
        match &c.identity {
            IdentitySource::WorkloadApi { addr, timeout, .. } => (addr.clone(), *timeout),
            other => panic!("not the workload API: {other:?}"),
        }
    }

    #[cfg(feature = "spiffe")]
    fn env_config(a: &[&str], vars: &[(&str, &str)]) -> Result<Config, String> {
        match parse_env(a, vars)? {
            Parsed::Run(raw) => raw.into_config().map_err(|e| e.to_string()),
            Parsed::Exit { .. } => Err("exit".into()),
        }
    }

    #[cfg(feature = "spiffe")]
    #[test]
    fn workload_api_is_a_credential_in_both_modes() {
        let server = [
            "server",
            "--listen=:1",
            "--target=localhost:2",
            "--allow-all",
        ];
        let client = ["client", "--listen=localhost:1", "--target=h:2"];
        let addr = "--use-workload-api-addr=unix:///run/spire/agent.sock";
        for base in [&server[..], &client[..]] {
            let c = config(&[base, &[addr]].concat()).unwrap();
            assert_eq!(
                workload_of(&c),
                (
                    "unix:///run/spire/agent.sock".into(),
                    Some(Duration::from_secs(600))
                )
            );
            // Without an address the source still counts; it fails when created.
            let c = config(&[base, &["--use-workload-api"]].concat()).unwrap();
            assert_eq!(workload_of(&c).0, "");
            let c = config(&[base, &[addr, "--use-workload-api-timeout=0"]].concat()).unwrap();
            assert_eq!(workload_of(&c).1, None);
        }
        // The mutual-exclusion texts: the server's does not name the workload API.
        assert_eq!(
            config(&[&server[..], &[addr, "--cert=c", "--key=k"]].concat()).unwrap_err(),
            "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive"
        );
        assert_eq!(
            config(&[&client[..], &[addr, "--keystore=k"]].concat()).unwrap_err(),
            "--keystore, --cert/--key, --keychain-identity/issuer, --use-workload-api and --disable-authentication flags are mutually exclusive"
        );
        // Client --disable-authentication is no credential of its own next to it; it only
        // keeps the SVID from being presented.
        let c = config(&[&client[..], &[addr, "--disable-authentication"]].concat()).unwrap();
        assert!(matches!(
            c.identity,
            IdentitySource::WorkloadApi {
                present_no_certificate: true,
                ..
            }
        ));
        let c = config(&[&client[..], &[addr]].concat()).unwrap();
        assert!(matches!(
            c.identity,
            IdentitySource::WorkloadApi {
                present_no_certificate: false,
                ..
            }
        ));
    }

    #[cfg(feature = "spiffe")]
    #[test]
    fn workload_api_from_the_environment_wins_over_the_negated_flag() {
        let client = ["client", "--listen=localhost:1", "--target=h:2"];
        let env = [("SPIFFE_ENDPOINT_SOCKET", "unix:///run/spire/agent.sock")];
        let c = env_config(&[&client[..], &["--no-use-workload-api"]].concat(), &env).unwrap();
        assert_eq!(workload_of(&c).0, "unix:///run/spire/agent.sock");
        // So a leftover variable clashes with files...
        assert!(
            env_config(&[&client[..], &["--keystore=k"]].concat(), &env)
                .unwrap_err()
                .ends_with("mutually exclusive")
        );
        // ...unless the address is explicitly emptied.
        let c = env_config(
            &[&client[..], &["--keystore=k", "--use-workload-api-addr="]].concat(),
            &env,
        )
        .unwrap();
        assert!(matches!(c.identity, IdentitySource::Keystore { .. }));
    }

    #[cfg(feature = "spiffe")]
    #[test]
    fn workload_api_refuses_spki_pins() {
        let addr = "--use-workload-api-addr=unix:///a.sock";
        assert_eq!(
            config(&[&BARE[..], &[addr, &format!("--allow-spki-pin={PIN}")]].concat()).unwrap_err(),
            "--allow-spki-pin is mutually exclusive with --use-workload-api"
        );
        let client = ["client", "--listen=localhost:1", "--target=h:2"];
        assert_eq!(
            config(&[&client[..], &[addr, &format!("--verify-spki-pin={PIN}")]].concat())
                .unwrap_err(),
            "--verify-spki-pin is mutually exclusive with --use-workload-api"
        );
    }

    // ---- Unsupported features ----

    #[test]
    fn unsupported_flags_fail_mode_validation() {
        let workload = [
            ("--use-workload-api", Id::UseWorkloadApi),
            ("--use-workload-api-addr=unix:/x", Id::UseWorkloadApiAddr),
        ];
        let workload = if cfg!(feature = "spiffe") {
            &[][..]
        } else {
            &workload[..]
        };
        let cases = [("--pkcs11-module=/x.so", Id::Pkcs11Module)];
        // With the feature, the PKCS#11 flags are ordinary ones (tested below).
        let supported = |flag: &str| cfg!(feature = "pkcs11") && flag.starts_with("--pkcs11");
        let cases = cases.into_iter().chain(workload.iter().copied());
        for (flag, name) in cases.filter(|(f, _)| !supported(f)) {
            assert_eq!(
                server_err(&["--allow-all", flag]),
                format!("--{} is not supported by this build", name.name()),
                "{flag}"
            );
        }
        // Settings that qualify a missing feature flag are ignored, as in the reference; with
        // the feature they are refused with it.
        for flag in [
            "--use-workload-api-timeout=1m",
            "--pkcs11-token-label=t",
            "--pkcs11-pin=1",
        ] {
            assert!(server(&["--allow-all", flag]).is_ok(), "{flag}");
        }
        #[cfg(not(feature = "spiffe"))]
        assert_eq!(
            server_err(&[
                "--allow-all",
                "--use-workload-api-timeout=1m",
                "--use-workload-api"
            ]),
            "--use-workload-api is not supported by this build"
        );
        let c = server(&["--allow-all", "--status=:1", "--enable-pprof"]).unwrap();
        assert!(c.enable_pprof);
    }

    #[cfg(not(feature = "acme"))]
    #[test]
    fn acme_flags_fail_in_a_build_without_acme() {
        for (flag, name) in [
            ("--auto-acme-cert=a.example", Id::AutoAcmeCert),
            ("--auto-acme-email=a@b", Id::AutoAcmeEmail),
            ("--auto-acme-agree-to-tos", Id::AutoAcmeAgreeToTos),
            ("--auto-acme-ca=https://x", Id::AutoAcmeCa),
            ("--auto-acme-testca=https://x", Id::AutoAcmeTestca),
            (
                "--auto-acme-renew-check-interval=1h",
                Id::AutoAcmeRenewCheckInterval,
            ),
            (
                "--auto-acme-alt-tls-alpn-port=1",
                Id::AutoAcmeAltTlsAlpnPort,
            ),
        ] {
            assert_eq!(
                server_err(&["--allow-all", flag]),
                format!("--{} is not supported by this build", name.name()),
                "{flag}"
            );
        }
    }

    #[cfg(feature = "acme")]
    #[test]
    fn acme_flags_follow_the_reference_rules() {
        let acme = |extra: &[&str]| {
            let base = [
                "server",
                "--listen=:1",
                "--target=localhost:2",
                "--allow-all",
            ];
            config(&[&base[..], extra].concat())
        };
        let name = "--auto-acme-cert=GhostUnnel.Example.com";
        // Email first, then the terms of service (docs/behaviour.md §18.5.1).
        assert_eq!(
            acme(&[name]).unwrap_err(),
            "--auto-acme-cert was specified but no email address was provided with --auto-acme-email"
        );
        assert_eq!(
            acme(&[name, "--auto-acme-email=a@b"]).unwrap_err(),
            "--auto-acme-agree-to-tos was not specified and is required if --auto-acme-cert is specified"
        );
        // They come after the target checks.
        assert_eq!(
            config(&[
                "server",
                "--listen=:1",
                "--target=x.example:2",
                "--allow-all",
                name
            ])
            .unwrap_err(),
            "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)"
        );
        // One credential among the others.
        assert_eq!(
            acme(&[name, "--keystore=k.pem"]).unwrap_err(),
            "--keystore, --cert/--key, --auto-acme-cert, and --keychain-identity/issuer flags are mutually exclusive"
        );
        // The email and ToS flags alone count nothing.
        assert_eq!(
            acme(&["--auto-acme-email=a@b", "--auto-acme-agree-to-tos"]).unwrap_err(),
            "at least one of --keystore, --cert/--key, --auto-acme-cert, or --keychain-identity/issuer (if supported) flags is required"
        );
        let c = acme(&[
            name,
            "--auto-acme-email=a@b",
            "--auto-acme-agree-to-tos",
            "--auto-acme-testca=https://t/dir",
            "--auto-acme-renew-check-interval=2s",
            "--auto-acme-alt-tls-alpn-port=8443",
        ])
        .unwrap();
        let IdentitySource::Acme(opts) = c.identity else {
            panic!("{:?}", c.identity)
        };
        assert_eq!(
            opts,
            crate::config::AcmeOpts {
                name: "ghostunnel.example.com".into(),
                email: "a@b".into(),
                ca: String::new(),
                testca: "https://t/dir".into(),
                renew_check: Some(Duration::from_secs(2)),
                alt_port: 8443,
            }
        );
        // A zero or negative interval means the default.
        let c = acme(&[
            name,
            "--auto-acme-email=a@b",
            "--auto-acme-agree-to-tos",
            "--auto-acme-renew-check-interval=-1s",
        ])
        .unwrap();
        let IdentitySource::Acme(opts) = c.identity else {
            panic!("{:?}", c.identity)
        };
        assert_eq!(opts.renew_check, None);
        assert!(
            acme(&[
                name,
                "--auto-acme-email=a@b",
                "--auto-acme-agree-to-tos",
                "--auto-acme-alt-tls-alpn-port=70000"
            ])
            .unwrap_err()
            .contains("--auto-acme-alt-tls-alpn-port")
        );
    }

    /// Without the `opa` feature the policy flags are refused by name.
    #[cfg(not(feature = "opa"))]
    #[test]
    fn policy_flags_unsupported_without_the_feature() {
        for (flag, name) in [
            ("--allow-policy=b", Id::AllowPolicy),
            ("--allow-query=q", Id::AllowQuery),
        ] {
            assert_eq!(
                server_err(&["--allow-all", flag]),
                format!("--{} is not supported by this build", name.name())
            );
        }
        for (flag, name) in [
            ("--verify-policy=b", Id::VerifyPolicy),
            ("--verify-query=q", Id::VerifyQuery),
        ] {
            assert_eq!(
                client_err(&[flag]),
                format!("--{} is not supported by this build", name.name())
            );
        }
    }

    /// The OPA flags: both of a pair or neither, ORed with the names, exclusive with
    /// `--allow-all`, pins and server `--disable-authentication`, in the reference's order.
    #[cfg(feature = "opa")]
    #[test]
    fn policy_flags_pairing_and_exclusivity() {
        const PIN: &str = "--allow-spki-pin=sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let pair = "--allow-policy and --allow-query have to be used together";
        assert_eq!(server_err(&["--allow-policy=b"]), pair);
        assert_eq!(server_err(&["--allow-query=q"]), pair);
        assert_eq!(
            server_err(&["--allow-policy=b", "--allow-query=q", "--allow-all"]),
            "--allow-all is mutually exclusive with other access control flags"
        );
        assert_eq!(
            server_err(&["--allow-query=q", "--disable-authentication"]),
            "--disable-authentication is mutually exclusive with other access control flags"
        );
        assert_eq!(
            server_err(&["--allow-policy=b", PIN]),
            "--allow-spki-pin is mutually exclusive with other access control flags"
        );
        // The pair check comes after the target checks.
        assert_eq!(
            config(&[
                "server",
                "--listen=:1",
                "--target=example.com:1",
                "--keystore=/k",
                "--allow-policy=b"
            ])
            .unwrap_err(),
            "--target must be unix:PATH or localhost:PORT (unless --unsafe-target is set)"
        );
        let c = server(&["--allow-cn=a", "--allow-policy=b", "--allow-query=q"]).unwrap();
        let Mode::Server(ServerOpts {
            auth: ServerAuth::Acl(acl),
            ..
        }) = &c.mode
        else {
            panic!("{c:?}")
        };
        assert_eq!(acl.cn, ["a"]);
        assert_eq!(
            acl.policy,
            Some(PolicySpec {
                bundle: "b".into(),
                query: "q".into()
            })
        );
        let vpair = "--verify-policy and --verify-query have to be used together";
        assert_eq!(client_err(&["--verify-policy=b"]), vpair);
        assert_eq!(client_err(&["--verify-query=q"]), vpair);
        assert_eq!(
            client_err(&[
                "--verify-policy=b",
                "--verify-query=q",
                "--verify-spki-pin=sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
            ]),
            "--verify-spki-pin is mutually exclusive with other verification flags"
        );
        let c = config(&[
            "client",
            "--listen=localhost:1",
            "--target=h:2",
            "--disable-authentication",
            "--verify-policy=b",
            "--verify-query=q",
        ]);
        assert!(c.is_ok(), "{c:?}");
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

    /// Without the `jceks` feature a Java keystore is refused before anything is read; with
    /// it, it is an ordinary keystore.
    #[test]
    fn jks_keystores_refused_without_the_feature() {
        for ks in ["a.jks", "b.JCEKS", "/x/c.jceks"] {
            let result =
                config(&[&BARE[..], &[&format!("--keystore={ks}"), "--allow-all"]].concat());
            match cfg!(feature = "jceks") {
                true => assert!(matches!(
                    result.unwrap().identity,
                    IdentitySource::Keystore { .. }
                )),
                false => assert_eq!(
                    result.unwrap_err(),
                    "--keystore: JCEKS/JKS keystores are not supported by this build (convert to PKCS#12)"
                ),
            }
        }
    }

    // ---- Server mode validation (docs/behaviour.md §2.7.2) ----

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
    fn max_tls_version_typed_and_unknown_words_kept_for_the_tls_step() {
        let max = |extra: &[&str]| {
            server(&[&["--allow-all"], extra].concat())
                .unwrap()
                .tls
                .max_version
        };
        assert_eq!(max(&["--max-tls-version=tls1.2"]), MaxTlsVersion::Tls12);
        assert_eq!(max(&["--max-tls-version=TLS1.3"]), MaxTlsVersion::Tls13);
        assert_eq!(max(&[]), MaxTlsVersion::Tls13);
        assert_eq!(
            max(&["--max-tls-version=bogus"]),
            MaxTlsVersion::Unsupported("bogus".into())
        );
    }

    #[test]
    fn proxy_url_parsed_once_and_unusable_urls_keep_their_error() {
        let c = client(&["--proxy=socks5h://p:1080"]).unwrap();
        let p = client_opts(&c).proxy.clone().unwrap();
        assert_eq!(p.raw, "socks5h://p:1080");
        assert_eq!(p.url.unwrap().kind, crate::tunnel::ProxyKind::Socks5);
        let c = client(&["--proxy=ftp://p"]).unwrap();
        assert_eq!(
            client_opts(&c).proxy.clone().unwrap().url.unwrap_err(),
            "proxy: unknown scheme: ftp"
        );
    }

    #[test]
    fn environment_read_once_into_the_config_and_empty_is_unset() {
        let run = |vars: &[(&str, &str)]| {
            let Parsed::Run(r) =
                parse_env(&[&SERVER[..], &["--allow-all"]].concat(), vars).unwrap()
            else {
                panic!()
            };
            r.into_config().unwrap()
        };
        let c = run(&[("SSL_CERT_FILE", "/b/ca.pem"), ("SSL_CERT_DIR", "/d1:/d2")]);
        assert_eq!(c.system_trust.file.as_deref(), Some(Path::new("/b/ca.pem")));
        assert_eq!(c.system_trust.dir.as_deref(), Some(OsStr::new("/d1:/d2")));
        let c = run(&[("SSL_CERT_FILE", ""), ("SSL_CERT_DIR", "")]);
        assert_eq!(c.system_trust, SystemTrust::default());
        assert!(run(&[]).tls.resumption);
        assert!(run(&[("GHOSTUNNEL_TLS_RESUMPTION", "")]).tls.resumption);
        for off in ["off", "0", "no", "false"] {
            assert!(!run(&[("GHOSTUNNEL_TLS_RESUMPTION", off)]).tls.resumption);
        }
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

    // ---- Client mode validation (docs/behaviour.md §2.7.2) ----

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

    // ---- Durations into the config (docs/behaviour.md §2.7.1 notes) ----

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
