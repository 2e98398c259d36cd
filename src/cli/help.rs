//! The help texts generated from the flag table: usage (`--help`, `help [<command>]`),
//! `--help-long` and `--version`.

use super::Parsed;
use super::flags::{ABOUT, BUILTIN_HELP, CLIENT_ABOUT, FLAGS, SERVER_ABOUT};
use super::flags::{Client, Global, Scope, Server};

/// `--version`: the reference's shape with our toolchain (docs/behaviour.md §2.1).
pub(super) fn version() -> String {
    format!(
        "rev {} built with {} (pkcs11: {}, keychain: false)\n",
        env!("CARGO_PKG_VERSION"),
        env!("GHOSTUNNEL_TOOLCHAIN"),
        cfg!(feature = "pkcs11")
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

/// The flag rows as the reference's usage shows them: `--[no-]name` for booleans, ` ...` after
/// repeatable flags.
fn usage_rows(scope: Scope) -> Vec<(String, String)> {
    FLAGS
        .iter()
        .filter(move |f| f.scope == scope && !f.hidden)
        .map(|f| {
            let head = match f.kind {
                super::flags::Kind::Bool => format!("--[no-]{}", f.name),
                k if k.is_list() => format!("{} ...", f.head()),
                _ => f.head(),
            };
            (head, f.help_text())
        })
        .collect()
}

/// `--help` and `--version` as the reference lists them, first and last among the globals.
fn global_rows() -> Vec<(String, String)> {
    let builtin = |name: &str| {
        BUILTIN_HELP
            .iter()
            .find(|(h, _)| *h == name)
            .map(|(_, t)| (format!("--[no-]{}", &name[2..]), t.to_string()))
    };
    builtin("--help")
        .into_iter()
        .chain(usage_rows(Global))
        .chain(builtin("--version"))
        .collect()
}

/// Words of `text` in lines of at most `width` characters (a longer word gets its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if line.is_empty() {
            line.push_str(word);
        } else if line.chars().count() + 1 + word.chars().count() <= width {
            line.push(' ');
            line.push_str(word);
        } else {
            lines.push(word.to_string());
        }
    }
    lines
}

/// Two columns in the reference's (kingpin's) layout for an 80-column page: the first column
/// as wide as its longest entry under 30 characters, two spaces, the help wrapped to fit;
/// an entry of 30 or more characters gets its help on the next line.
fn two_columns(text: &mut String, indent: usize, rows: &[(String, String)]) {
    let first = rows
        .iter()
        .map(|(h, _)| h.chars().count())
        .filter(|&n| n < 30)
        .max()
        .unwrap_or(0);
    let width = 80usize.saturating_sub(indent + first + 2).max(20);
    let pad = " ".repeat(indent);
    let offset = " ".repeat(indent + first + 2);
    for (head, help) in rows {
        let lines = wrap(help, width);
        text.push_str(&format!("{pad}{head:<first$}  "));
        if head.chars().count() >= 30 {
            text.push_str(&format!("\n{offset}"));
        }
        text.push_str(&lines[0]);
        text.push('\n');
        for line in &lines[1..] {
            text.push_str(&format!("{offset}{line}\n"));
        }
    }
}

/// The usage text (stderr): the reference's full usage whatever the context, with the
/// context's flags in the first list (`server --help` adds the server flags to it) and every
/// command with its own flags after; hidden flags are left out.
pub(super) fn usage(command: Option<Scope>) -> Parsed {
    let mut text =
        format!("usage: ghostunnel [<flags>] <command> [<args> ...]\n\n{ABOUT}\n\nFlags:\n");
    let mut rows = global_rows();
    if let Some(scope @ (Server | Client)) = command {
        rows.extend(usage_rows(scope));
    }
    two_columns(&mut text, 2, &rows);
    text.push_str("\nCommands:\nhelp [<command>...]\n    Show help.\n\n");
    for scope in [Server, Client] {
        let name = if scope == Server { "server" } else { "client" };
        text.push_str(&format!(
            "\n{name} --listen=ADDR --target=ADDR [<flags>]\n    {}\n\n",
            about(scope)
        ));
        two_columns(&mut text, 4, &usage_rows(scope));
    }
    text.push('\n');
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
pub(super) fn long_help() -> String {
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
