//! The command line, in stages: the flag table ([`flags`]) drives the scan of the arguments
//! into raw values ([`scan`], which also runs the parse-stage checks), and the validation turns
//! those into the typed [`Config`] ([`validate`]). The help texts and the documents are
//! generated from the same table ([`help`], [`doc`]). Everything downstream reads the
//! [`Config`]: no flag string is parsed twice and no other module reads the environment for a
//! setting.

use std::fmt;

mod doc;
mod flags;
mod help;
mod scan;
#[cfg(test)]
mod testutil;
mod validate;

pub use doc::{bash_completion, man_page, zsh_completion};
pub use scan::{RawArgs, parse, parse_process_args};

#[cfg(doc)]
use crate::config::Config;

/// What parsing decided.
#[derive(Debug)]
pub enum Parsed {
    /// Run with these (not yet mode-validated) arguments.
    Run(RawArgs),
    /// Print `text` to stderr (stdout when `stdout`) and exit 0: help, usage, version.
    Exit { text: String, stdout: bool },
}

/// A command line the daemon refuses. `Display` is the message users see: after
/// `ghostunnel: error: ` (and before `, try --help`) when [`parse`] returns it, after `error: `
/// when [`RawArgs::into_config`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// A short flag as written: `-x`, or a lone `-`.
    UnknownShortFlag(String),
    /// `--name` names no flag of the command.
    UnknownLongFlag(String),
    /// A word where a command was expected.
    ExpectedCommand(String),
    /// A positional word after the command.
    Unexpected(String),
    /// `--name` at the end, or followed by another flag.
    MissingArgument(String),
    /// A scalar or boolean flag given twice.
    Repeated(&'static str),
    /// A value its flag's type refuses, e.g. `enum value must be one of ...`.
    BadValue(String),
    /// `--listen` or `--target` absent.
    Required(Vec<&'static str>),
    /// An `@file` argument that cannot be read.
    ArgFile(String),
    /// The argument parser's own complaint (e.g. a value that is not UTF-8).
    Parser(String),
    /// A flag for a feature this build leaves out, set to something other than its default.
    Unsupported(&'static str),
    /// `--enable-pprof` or `--enable-shutdown` without `--status`.
    RequiresStatus(&'static str),
    /// A URL flag without an `http://` or `https://` scheme.
    NotHttpUrl(&'static str),
    /// An address flag that does not parse: the flag and why.
    BadAddress(&'static str, String),
    /// A flag, a flag combination or a file named by a flag that validation refuses; the text
    /// names the flag.
    Invalid(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::UnknownShortFlag(c) => write!(f, "unknown short flag '{c}'"),
            CliError::UnknownLongFlag(name) => write!(f, "unknown long flag '--{name}'"),
            CliError::ExpectedCommand(word) => write!(f, "expected command but got \"{word}\""),
            CliError::Unexpected(word) => write!(f, "unexpected {word}"),
            CliError::MissingArgument(name) => write!(f, "expected argument for flag '--{name}'"),
            CliError::Repeated(name) => write!(f, "flag '{name}' cannot be repeated"),
            CliError::Unsupported(name) => write!(f, "--{name} is not supported by this build"),
            CliError::RequiresStatus(name) => write!(f, "--{name} requires --status to be set"),
            CliError::NotHttpUrl(name) => {
                write!(f, "--{name} should start with http:// or https://")
            }
            CliError::BadAddress(name, why) => write!(f, "invalid --{name} address: {why}"),
            CliError::Required(names) => {
                let names: Vec<String> = names.iter().map(|n| format!("'--{n}'")).collect();
                write!(f, "required flag(s) {} not provided", names.join(", "))
            }
            CliError::BadValue(msg)
            | CliError::ArgFile(msg)
            | CliError::Parser(msg)
            | CliError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CliError {}

impl From<String> for CliError {
    fn from(msg: String) -> CliError {
        CliError::Invalid(msg)
    }
}

impl From<&str> for CliError {
    fn from(msg: &str) -> CliError {
        CliError::Invalid(msg.to_string())
    }
}
