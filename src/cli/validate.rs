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
#[path = "validate_tests.rs"]
mod tests;
