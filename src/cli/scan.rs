//! The scan: arguments (and environment fallbacks) to raw flag values, with the reference
//! parser's precedence and messages, then the parse-stage checks. Reads the environment only
//! through the lookup it is given; owns no I/O besides reading `@path` argument files.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::flags::{
    Bool, Client, Duration, Enum, Global, IpList, List, QuietList, Server, Str, Uint32, Url,
};
use super::flags::{FLAGS, Flag, Id, QUIET_CLASSES, Scope};
use super::help::{long_help, usage, version};
use super::{CliError, Parsed, doc};
use crate::config::{Quiet, SystemTrust};
use crate::duration::parse_go_duration;

#[derive(Debug, Clone)]
pub(super) enum Value {
    Bool(bool),
    One(String),
    Many(Vec<String>),
}

/// Flags as given, after the parse-stage checks (docs/behaviour.md §2.7.1).
#[derive(Debug)]
pub struct RawArgs {
    /// `--quiet` classes, for the logger (set up before mode validation).
    pub quiet: Quiet,
    /// `--syslog`, for the logger.
    pub syslog: bool,
    /// `--check`: validate and load, then exit without binding (see `main.rs`).
    pub check: bool,
    pub(super) server: bool,
    /// Explicitly given flags and env fallbacks.
    pub(super) given: HashMap<Id, Value>,
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR`, read with the flags' environment fallbacks.
    pub(super) system_trust: SystemTrust,
    /// `GHOSTUNNEL_TLS_RESUMPTION` is not `off`, `0`, `no` or `false`.
    pub(super) resumption: bool,
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
    deferred: Option<CliError>,
    given: HashMap<Id, Value>,
}

impl Scan {
    fn defer(&mut self, err: CliError) {
        self.deferred.get_or_insert(err);
    }

    /// A positional word. Returns `Ok(true)` when parsing must stop (a stray word).
    fn positional(&mut self, word: String) -> Result<bool, CliError> {
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
                    return Err(CliError::ExpectedCommand(word));
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
            _ => return Err(CliError::ExpectedCommand(word)),
        }
        Ok(false)
    }

    /// Reads one token; `Ok(false)` ends the scan.
    fn token(&mut self, parser: &mut lexopt::Parser) -> Result<bool, CliError> {
        let Some(arg) = parser.next().map_err(|e| CliError::Parser(e.to_string()))? else {
            return Ok(false);
        };
        let name = match arg {
            lexopt::Arg::Short(c) => return Err(CliError::UnknownShortFlag(format!("-{c}"))),
            lexopt::Arg::Value(v) if v == "-" => {
                return Err(CliError::UnknownShortFlag("-".into()));
            }
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
            lookup(&name, self.command).ok_or_else(|| CliError::UnknownLongFlag(name.clone()))?;
        if flag.kind == Bool {
            let repeated = match self.given.entry(flag.id) {
                Entry::Occupied(_) => true,
                Entry::Vacant(v) => {
                    v.insert(Value::Bool(!negated));
                    false
                }
            };
            if repeated {
                self.defer(CliError::Repeated(flag.name));
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
                .map_err(|e| CliError::Parser(e.to_string()))?
                .next_if(|v| !v.as_encoded_bytes().starts_with(b"-"))
                .map(|v| lossy(&v))
                .ok_or_else(|| CliError::MissingArgument(name.clone()))?,
        };
        if flag.kind.is_list() {
            if let Err(e) = check_value(flag, &value) {
                self.defer(e);
            }
            if let Value::Many(values) = self
                .given
                .entry(flag.id)
                .or_insert_with(|| Value::Many(Vec::new()))
            {
                values.push(value);
            }
        } else if self.given.contains_key(&flag.id) {
            self.defer(CliError::Repeated(flag.name));
        } else {
            if let Err(e) = check_value(flag, &value) {
                self.defer(e);
            }
            self.given.insert(flag.id, Value::One(value));
        }
        Ok(true)
    }
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

/// [`parse`] with the process environment: the one place the flags' variables
/// (`KEYSTORE_PASS`, `SSL_CERT_FILE`, `GHOSTUNNEL_TLS_RESUMPTION`, …) are read.
pub fn parse_process_args(args: Vec<OsString>) -> Result<Parsed, CliError> {
    parse(args, &|name| std::env::var(name).ok())
}

/// Parses `args` (without argv[0]). `env` looks up environment fallbacks. The error is the
/// bare message; the caller prints `ghostunnel: error: <msg>, try --help` and exits 1.
///
/// Precedence follows the reference parser: a parse error (unknown flag or command, missing
/// flag argument) stops the scan; `--version`, `--help-long`, `--help-man` and `help` seen
/// before it still win. Then `--help`, then the first stray word (nothing after it is read),
/// then the first bad or repeated value, then usage when no command was given, then missing
/// required flags, then the parse-stage checks (docs/behaviour.md §2.7.1).
pub fn parse(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, CliError> {
    // The one rule for every variable: an empty value is the same as an unset one.
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
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
        return Err(CliError::Unexpected(word));
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
        if given.contains_key(&flag.id) {
            continue;
        }
        if let Some(value) = env(var) {
            check_value(flag, &value)?;
            given.insert(flag.id, Value::One(value));
        }
    }
    let missing: Vec<&'static str> = [Id::Listen, Id::Target]
        .into_iter()
        .filter(|id| !given.contains_key(id))
        .map(Id::name)
        .collect();
    if !missing.is_empty() {
        return Err(CliError::Required(missing));
    }
    let mut raw = RawArgs {
        quiet: Quiet::default(),
        syslog: false,
        check: false,
        server: command == Server,
        given,
        system_trust: SystemTrust {
            file: env("SSL_CERT_FILE").map(Into::into),
            dir: env("SSL_CERT_DIR").map(Into::into),
        },
        resumption: !matches!(
            env("GHOSTUNNEL_TLS_RESUMPTION").as_deref(),
            Some("off" | "0" | "no" | "false")
        ),
    };
    raw.quiet = raw.quiet_classes();
    raw.syslog = raw.bool(Id::Syslog);
    raw.check = raw.bool(Id::Check);
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

/// Type checks done while parsing (docs/behaviour.md §2.2).
fn check_value(flag: &Flag, value: &str) -> Result<(), CliError> {
    check_kind(flag, value).map_err(CliError::BadValue)
}

fn check_kind(flag: &Flag, value: &str) -> Result<(), String> {
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
pub(super) fn parse_go_uint32(s: &str) -> Result<u32, String> {
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
fn expand_arg_files(args: Vec<OsString>, depth: usize) -> Result<Vec<OsString>, CliError> {
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
            return Err(CliError::ArgFile(format!(
                "open {}: too many nested @files",
                path.display()
            )));
        }
        let text = std::fs::read(path).map_err(|e| {
            CliError::ArgFile(format!(
                "open {}: {}",
                path.display(),
                crate::net::strip_os_error(&e)
            ))
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

impl RawArgs {
    /// `server` or `client`, for the first log line (before mode validation).
    pub fn mode_name(&self) -> &'static str {
        if self.server { "server" } else { "client" }
    }

    /// The table row of `id` (the first, for the names server and client share: their rows
    /// differ only in help text).
    fn row(id: Id) -> &'static Flag {
        FLAGS
            .iter()
            .find(|f| f.id == id)
            .expect("every Id has a row")
    }

    /// A boolean flag: given and not negated.
    pub(super) fn bool(&self, id: Id) -> bool {
        debug_assert_eq!(Self::row(id).kind, Bool, "--{} is no boolean", id.name());
        matches!(self.given.get(&id), Some(Value::Bool(true)))
    }

    /// A scalar flag's value, or its default.
    pub(super) fn str(&self, id: Id) -> &str {
        let row = Self::row(id);
        debug_assert!(
            !row.kind.is_list() && row.kind != Bool,
            "--{} is no scalar",
            id.name()
        );
        match self.given.get(&id) {
            Some(Value::One(s)) => s,
            _ => row.default,
        }
    }

    /// A repeatable flag's values, in the order given.
    pub(super) fn list(&self, id: Id) -> &[String] {
        debug_assert!(Self::row(id).kind.is_list(), "--{} is no list", id.name());
        match self.given.get(&id) {
            Some(Value::Many(v)) => v,
            _ => &[],
        }
    }

    /// A duration flag in signed nanoseconds (validated while parsing).
    pub(super) fn nanos(&self, id: Id) -> i128 {
        debug_assert_eq!(
            Self::row(id).kind,
            Duration,
            "--{} is no duration",
            id.name()
        );
        parse_go_duration(self.str(id)).unwrap_or(0)
    }

    /// Whether `flag` was given (or came from the environment) with a non-default value.
    pub(super) fn is_set(&self, flag: &Flag) -> bool {
        match self.given.get(&flag.id) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Many(v)) => !v.is_empty(),
            Some(Value::One(_)) if flag.kind == Duration => {
                self.nanos(flag.id) != parse_go_duration(flag.default).unwrap_or(0)
            }
            Some(Value::One(v)) if flag.kind == Uint32 => {
                parse_go_uint32(v).unwrap_or(0) != parse_go_uint32(flag.default).unwrap_or(0)
            }
            Some(Value::One(v)) => v != flag.default,
        }
    }

    fn quiet_classes(&self) -> Quiet {
        let mut q = Quiet::default();
        for class in self.list(Id::Quiet) {
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
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::config::{IdentitySource, Mode, ProxyProtocolMode, ServerAuth, ServerOpts};

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
        assert!(!raw(&[&BARE[..], &["--no-skip-resolve"]].concat()).bool(Id::SkipResolve));
        assert!(raw(&[&BARE[..], &["--skip-resolve"]].concat()).bool(Id::SkipResolve));
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
        assert_eq!(r.str(Id::Listen), ":1");
        assert_eq!(r.str(Id::Keystore), "k");
        // `=` keeps everything after the first `=`, including more `=` and leading dashes.
        let r = raw(&[&BARE[..], &["--storepass=-a=b"]].concat());
        assert_eq!(r.str(Id::Storepass), "-a=b");
        let r = raw(&[&BARE[..], &["--storepass="]].concat());
        assert_eq!(r.str(Id::Storepass), "");
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
        assert_eq!(r.list(Id::AllowCn), ["a", "b", "a"]);
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
        assert_eq!(r.list(Id::AllowDns), ["a", "b"]);
        assert_eq!(r.list(Id::AllowUri), ["u"]);
        assert_eq!(r.list(Id::AllowIp), ["::1"]);
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
        assert_eq!(r.list(Id::VerifyDns), ["a"]);
        assert_eq!(r.list(Id::VerifyUri), ["u"]);
        assert_eq!(r.list(Id::VerifyIp), ["1.2.3.4"]);
        assert_eq!(r.str(Id::Proxy), "http://p:1");
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
        assert_eq!(r.str(Id::Listen), ":1");
        assert_eq!(r.str(Id::Storepass), " spaced ");
        assert_eq!(r.list(Id::AllowCn), ["from inner"]);
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

    // ---- Value types (docs/behaviour.md §2.2) ----

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
        assert_eq!(r.nanos(Id::TimedReload), 5_400_000_000_000);
        assert_eq!(r.nanos(Id::ConnectTimeout), 1_500_000_000);
        assert_eq!(r.nanos(Id::CloseTimeout), -1_000_000_000);
        // Defaults.
        let r = raw(&BARE);
        assert_eq!(r.nanos(Id::ShutdownTimeout), 300_000_000_000);
        assert_eq!(r.nanos(Id::ConnectTimeout), 10_000_000_000);
        assert_eq!(r.nanos(Id::CloseTimeout), 60_000_000_000);
        assert_eq!(r.nanos(Id::MaxConnLifetime), 0);
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
            assert_eq!(
                client_opts(&c).proxy.as_ref().map(|p| p.raw.as_str()),
                Some(ok)
            );
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
        assert_eq!(r.str(Id::Keystore), "/env.p12");
        assert_eq!(r.str(Id::Storepass), "envpass");
        assert_eq!(r.str(Id::Cacert), "/ca.pem");
        let Parsed::Run(r) =
            parse_env(&[&BARE[..], &["--keystore=/flag.pem"]].concat(), &vars).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.str(Id::Keystore), "/flag.pem");
        // An explicitly empty flag still wins over the environment.
        let Parsed::Run(r) = parse_env(&[&BARE[..], &["--storepass="]].concat(), &vars).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.str(Id::Storepass), "");
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
        assert!(!r.given.contains_key(&Id::Keystore));
        assert!(r.into_config().is_ok());
    }

    #[test]
    fn env_for_unsupported_features_fails_clearly() {
        for (var, flag) in [
            ("PKCS11_MODULE", Id::Pkcs11Module),
            ("PKCS11_TOKEN_LABEL", Id::Pkcs11TokenLabel),
            ("PKCS11_PIN", Id::Pkcs11Pin),
            ("SPIFFE_ENDPOINT_SOCKET", Id::UseWorkloadApiAddr),
        ] {
            let Parsed::Run(r) = parse_env(&SERVER, &[(var, "x")]).unwrap() else {
                panic!()
            };
            assert_eq!(
                r.into_config().unwrap_err(),
                CliError::Unsupported(flag.name())
            );
        }
    }
}
