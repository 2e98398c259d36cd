//! Helpers shared by the scan and validation tests. Errors are compared as the text users see.

use std::collections::HashMap;
use std::ffi::OsString;

use super::{Parsed, RawArgs, parse};
use crate::config::{ClientOpts, Config, Mode, ServerAuth};

pub(super) const PIN: &str = "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

pub(super) fn args(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

pub(super) fn parse_raw(a: &[&str]) -> Result<Parsed, String> {
    parse(args(a), &|_| None).map_err(|e| e.to_string())
}

pub(super) fn parse_env(a: &[&str], vars: &[(&str, &str)]) -> Result<Parsed, String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse(args(a), &|n| vars.get(n).cloned()).map_err(|e| e.to_string())
}

pub(super) fn err(a: &[&str]) -> String {
    match parse_raw(a) {
        Err(e) => e,
        Ok(p) => panic!("{a:?} parsed: {p:?}"),
    }
}

pub(super) fn raw(a: &[&str]) -> RawArgs {
    match parse_raw(a) {
        Ok(Parsed::Run(raw)) => raw,
        other => panic!("{a:?}: {other:?}"),
    }
}

/// `(text, stdout)` of an exit-0 result.
pub(super) fn exit(a: &[&str]) -> (String, bool) {
    match parse_raw(a) {
        Ok(Parsed::Exit { text, stdout }) => (text, stdout),
        other => panic!("{a:?}: {other:?}"),
    }
}

pub(super) fn config(a: &[&str]) -> Result<Config, String> {
    match parse_raw(a)? {
        Parsed::Run(raw) => raw.into_config().map_err(|e| e.to_string()),
        Parsed::Exit { .. } => Err("exit".into()),
    }
}

pub(super) fn cat(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

pub(super) const SERVER: [&str; 4] = [
    "server",
    "--listen=:8443",
    "--target=localhost:80",
    "--keystore=k.pem",
];
pub(super) const CLIENT: [&str; 4] = [
    "client",
    "--listen=localhost:1",
    "--target=h:2",
    "--keystore=k.pem",
];
/// Server without credentials or access control.
pub(super) const BARE: [&str; 3] = ["server", "--listen=:1", "--target=localhost:2"];

pub(super) fn server(extra: &[&str]) -> Result<Config, String> {
    let a = cat(&SERVER, extra);
    config(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

pub(super) fn server_err(extra: &[&str]) -> String {
    match server(extra) {
        Err(e) => e,
        Ok(c) => panic!("{extra:?} validated: {c:?}"),
    }
}

pub(super) fn client(extra: &[&str]) -> Result<Config, String> {
    let a = cat(&CLIENT, extra);
    config(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

pub(super) fn client_err(extra: &[&str]) -> String {
    match client(extra) {
        Err(e) => e,
        Ok(c) => panic!("{extra:?} validated: {c:?}"),
    }
}

pub(super) fn bare_err(extra: &[&str]) -> String {
    let a = cat(&BARE, extra);
    err(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

pub(super) fn server_auth(c: &Config) -> &ServerAuth {
    match &c.mode {
        Mode::Server(s) => &s.auth,
        Mode::Client(_) => panic!("client mode"),
    }
}

pub(super) fn client_opts(c: &Config) -> &ClientOpts {
    match &c.mode {
        Mode::Client(o) => o,
        Mode::Server(_) => panic!("server mode"),
    }
}

// ---- Grammar (docs/behaviour.md §2.1) ----
