//! The help texts generated from the flag table: usage (`--help`, `help [<command>]`),
//! `--help-long` and `--version`.

use super::Parsed;
use super::flags::{ABOUT, BUILTIN_HELP, CLIENT_ABOUT, FLAGS, SERVER_ABOUT};
use super::flags::{Client, Global, Scope, Server};

/// `--version`: the reference's shape with our toolchain (docs/behaviour.md §2.1).
pub(super) fn version() -> String {
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
pub(super) fn usage(command: Option<Scope>) -> Parsed {
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
