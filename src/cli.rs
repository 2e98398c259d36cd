//! The command line (SPEC 2): one flag table drives the lexopt parser, `--help` and the
//! parse-stage checks; [`RawArgs::into_config`] does mode validation (2.7.2) and builds the
//! typed [`Config`]. Reads the environment only for the documented fallbacks.

use std::ffi::OsString;

use crate::config::{Config, Quiet};

/// What parsing decided.
#[derive(Debug)]
pub enum Parsed {
    /// Run with these (not yet mode-validated) arguments.
    Run(RawArgs),
    /// Print `text` to stderr (stdout when `stdout`) and exit 0: help, usage, version.
    Exit { text: String, stdout: bool },
}

/// Flags as given, after the parse-stage checks (SPEC 2.7.1).
#[derive(Debug, Default)]
pub struct RawArgs {
    pub quiet: Quiet,
    pub syslog: bool,
}

/// Parses `args` (without argv[0]). `env` looks up environment fallbacks. The error is the
/// bare message; the caller prints `ghostunnel: error: <msg>, try --help` and exits 1.
pub fn parse(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, String> {
    let _ = (args, env);
    unimplemented!()
}

impl RawArgs {
    /// Mode validation (SPEC 2.7.2), first failure wins; the error is `<msg>` for
    /// `error: <msg>`.
    pub fn into_config(self) -> Result<Config, String> {
        unimplemented!()
    }
}
