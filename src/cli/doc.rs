//! Documents generated from the flag table: the `ghostunnel(1)` man page (`--help-man`) and the
//! bash and zsh completion scripts (`--completion-script-bash`, `--completion-script-zsh`).
//! The committed copies under `packaging/` are these outputs byte for byte; a test fails when
//! they are stale. Output is deterministic: no dates, the version comes from Cargo. Owns no I/O.

use super::flags::{
    ABOUT, BUILTIN_HELP, CLIENT_ABOUT, FLAGS, Flag, Kind, QUIET_CLASSES, SERVER_ABOUT,
};
use super::flags::{Bool, Client, Duration, Global, Scope, Server, Uint32};

/// The commands, with their one-line descriptions, in help order.
const COMMANDS: &[(&str, &str)] = &[
    ("server", SERVER_ABOUT),
    ("client", CLIENT_ABOUT),
    ("help", "Show help."),
];

/// Variables the daemon reads besides the flags' fallbacks: (name, description).
const OTHER_ENV: &[(&str, &str)] = &[
    (
        "SSL_CERT_FILE, SSL_CERT_DIR",
        "Where the system trust store is read from when no --cacert is given (a bundle file, \
         and colon-separated directories of certificates). Read once at startup; an empty \
         value counts as unset.",
    ),
    (
        "GHOSTUNNEL_TLS_RESUMPTION",
        "Client mode keeps the server's TLS session tickets and resumes sessions with an \
         abbreviated handshake, unless this is off, 0, no or false (the reference client keeps \
         no sessions, so every connection is a full handshake). Read once at startup.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd when output goes to the journal: lines written to the stream it names \
         carry a <N> severity prefix in place of the pid and timestamp (a startup error on \
         stderr gets <3>).",
    ),
    (
        "NOTIFY_SOCKET",
        "The systemd notification socket (a path, or @name for an abstract socket). When set, \
         the daemon sends READY=1 once its listeners are bound, RELOADING=1 and READY=1 around \
         every reload, STOPPING=1 at shutdown and a STATUS= line with every change. Never used \
         by --check.",
    ),
    (
        "WATCHDOG_USEC, WATCHDOG_PID",
        "Set by systemd for WatchdogSec=: the daemon pings every half interval while its \
         connection handling is responsive.",
    ),
    (
        "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES",
        "Sockets passed by systemd socket activation, selected by --listen=systemd:NAME and \
         --status=systemd:NAME (NAME is the unit's FileDescriptorName=).",
    ),
];

/// Text of the SIGNALS section: (signals, what they do).
const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGHUP, SIGUSR1",
        "Reload: re-read the certificate, key and CA files (as --timed-reload does). New \
         connections use the new files, open connections keep theirs. A failed reload is \
         logged and keeps the old certificate.",
    ),
    (
        "SIGTERM, SIGINT",
        "Graceful shutdown: stop accepting, let open connections finish for at most \
         --shutdown-timeout, then exit (1 if connections were still open). A second SIGTERM or \
         SIGINT during the drain kills the process.",
    ),
];

/// Text of the EXIT STATUS section: (status, meaning).
const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Help, usage or version printed; --check found nothing wrong; or a graceful shutdown \
         drained every connection.",
    ),
    (
        "1",
        "A usage error (printed as \"ghostunnel: error: MESSAGE, try --help\"), a startup \
         error (printed as \"error: MESSAGE\"), a failed --check, or connections still open \
         when --shutdown-timeout ran out.",
    ),
];

/// The EXAMPLES section: (what, command lines).
const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "Accept TLS on port 8443 from clients whose certificate, issued by ca.pem, has CN=client, \
         and forward plaintext to a local service:",
        &[
            "ghostunnel server --listen=0.0.0.0:8443 --target=localhost:8080 \\",
            "    --keystore=server.pem --cacert=ca.pem --allow-cn=client",
        ],
    ),
    (
        "Let local applications talk plaintext to localhost:8001 and carry it over mutual TLS:",
        &[
            "ghostunnel client --listen=localhost:8001 --target=server.example.com:8443 \\",
            "    --keystore=client.pem --cacert=ca.pem",
        ],
    ),
    (
        "Check an instance's configuration before starting it, as ghostunnel@.service does:",
        &["ghostunnel --check @/etc/ghostunnel/web.args"],
    ),
];

// ---------------------------------------------------------------------------------------------
// Man page

/// Escapes text for a roff text line: backslashes, hyphens (as `\-`, so flags copy and paste
/// as ASCII), and a leading `.` or `'` that roff would read as a request.
fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The value name shown in the man page: the placeholder, else one named after the type.
fn value_name(flag: &Flag) -> String {
    match (flag.placeholder, flag.kind) {
        ("", Duration) => "DURATION".into(),
        ("", Uint32) => "N".into(),
        ("", _) => flag.name.to_uppercase().replace('-', "_"),
        (p, _) => p.into(),
    }
}

/// `\fB\-\-name\fR=\fIVALUE\fR` (or just the name for a boolean).
fn man_head(flag: &Flag) -> String {
    let name = format!("\\fB{}\\fR", roff(&format!("--{}", flag.name)));
    match flag.kind {
        Bool => name,
        _ => format!("{name}=\\fI{}\\fR", roff(&value_name(flag))),
    }
}

/// The paragraph under a flag: its help, allowed values, default and environment fallback.
fn man_body(flag: &Flag) -> String {
    let mut text = roff(flag.help);
    let values: Vec<&str> = match flag.kind {
        Kind::QuietList => QUIET_CLASSES
            .iter()
            .copied()
            .filter(|c| !c.is_empty())
            .collect(),
        Kind::Enum(words) => words.to_vec(),
        _ => Vec::new(),
    };
    if !values.is_empty() {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("\\fB{}\\fR", roff(v)))
            .collect();
        text.push_str(&format!("\nValues: {}.", values.join(", ")));
    }
    if !flag.default.is_empty() && flag.kind != Bool {
        text.push_str(&format!("\nDefault: \\fB{}\\fR.", roff(flag.default)));
    }
    if let Some(var) = flag.env {
        text.push_str(&format!(
            "\nEnvironment: \\fB{}\\fR (used when the flag is absent).",
            roff(var)
        ));
    }
    text
}

fn visible_flags(scope: Scope) -> impl Iterator<Item = &'static Flag> {
    FLAGS.iter().filter(move |f| f.scope == scope && !f.hidden)
}

/// `--help-man` (stdout) and `packaging/ghostunnel.1`: the man page in roff (`man(7)` macros).
pub fn man_page() -> String {
    let mut t = String::new();
    let mut line = |s: &str| {
        t.push_str(s);
        t.push('\n');
    };
    line(".\\\" Generated by `ghostunnel \\-\\-help\\-man` from the flag table in src/cli.rs.");
    line(".\\\" Do not edit: run `cargo run \\-\\- \\-\\-help\\-man > packaging/ghostunnel.1`.");
    line(&format!(
        ".TH GHOSTUNNEL 1 \"\" \"ghostunnel {}\" \"User Commands\"",
        env!("CARGO_PKG_VERSION")
    ));
    // Flags and addresses are long words: fill without justifying or hyphenating them.
    line(".ad l");
    line(".nh");

    line(".SH NAME");
    let about = ABOUT.trim_end_matches('.');
    let mut chars = about.chars();
    let about: String = chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default();
    line(&format!("ghostunnel \\- {}", roff(&about)));

    line(".SH SYNOPSIS");
    let modes = ["server", "client"];
    for (i, mode) in modes.iter().enumerate() {
        if i > 0 {
            line(".br");
        }
        line(&format!(
            "\\fBghostunnel\\fR [\\fIGLOBAL FLAGS\\fR] \\fB{mode}\\fR \\fB\\-\\-listen\\fR=\\fIADDR\\fR \\fB\\-\\-target\\fR=\\fIADDR\\fR [\\fIFLAGS\\fR]"
        ));
    }
    line(".br");
    line("\\fBghostunnel\\fR \\fB\\-\\-check\\fR \\fBserver\\fR|\\fBclient\\fR \\fIFLAGS\\fR");
    line(".br");
    line("\\fBghostunnel\\fR \\fB@\\fR\\fIFILE\\fR");
    line(".br");
    line("\\fBghostunnel help\\fR [\\fBserver\\fR|\\fBclient\\fR]");
    line(".br");
    line("\\fBghostunnel \\-\\-version\\fR");

    line(".SH DESCRIPTION");
    line(&roff(ABOUT));
    line("In server mode it terminates TLS, requires and checks a client certificate, and");
    line("forwards plaintext to a local TCP or UNIX target.");
    line("In client mode it listens for plaintext locally and opens a mutually authenticated");
    line("TLS connection to a remote server that it verifies.");
    line("It is a drop\\-in replacement for Ghostunnel on Linux: the same flags, defaults,");
    line("messages and exit codes.");
    line(".PP");
    line("Flags are long only, written \\fB\\-\\-name\\fR=\\fIvalue\\fR or");
    line("\\fB\\-\\-name\\fR \\fIvalue\\fR.");
    line("Global flags may come before or after the command; server and client flags only after");
    line("it.");
    line("Every boolean flag also has a \\fB\\-\\-no\\-\\fR\\fIname\\fR form; no flag other than");
    line("a list may be given twice.");
    line(
        "An argument \\fB@\\fR\\fIFILE\\fR is replaced by the lines of \\fIFILE\\fR, one argument",
    );
    line("per line; blank lines and lines starting with # are skipped.");
    line("Environment fallbacks apply only when the flag is absent; an empty variable counts as");
    line("absent.");
    line("Flags marked \"not supported by this build\" are accepted by the parser, but setting");
    line("them fails startup rather than being ignored.");
    line(".PP");
    line("Durations use Go syntax: a sequence of decimal numbers with units \\fBns\\fR,");
    line("\\fBus\\fR, \\fBms\\fR, \\fBs\\fR, \\fBm\\fR or \\fBh\\fR, e.g. \\fB300s\\fR or");
    line("\\fB1h30m\\fR; a bare \\fB0\\fR is allowed.");
    line("Addresses are \\fIHOST\\fR:\\fIPORT\\fR, \\fBunix:\\fR\\fIPATH\\fR or");
    line("\\fBsystemd:\\fR\\fINAME\\fR (a socket passed by systemd socket activation).");

    line(".SH COMMANDS");
    for (name, about) in COMMANDS {
        line(".TP");
        match *name {
            "help" => line("\\fBhelp\\fR [\\fBserver\\fR|\\fBclient\\fR]"),
            _ => line(&format!(
                "\\fB{name}\\fR \\fB\\-\\-listen\\fR=\\fIADDR\\fR \\fB\\-\\-target\\fR=\\fIADDR\\fR [\\fIFLAGS\\fR]"
            )),
        }
        line(&roff(about));
        match *name {
            "server" => {
                line("Unless \\fB\\-\\-unsafe\\-target\\fR is given, \\fB\\-\\-target\\fR must be");
                line("\\fBlocalhost\\fR, \\fB127.0.0.1\\fR, \\fB[::1]\\fR or a UNIX socket.");
                line("One access control flag is required: \\fB\\-\\-allow\\-all\\fR, an");
                line(
                    "\\fB\\-\\-allow\\-\\fR\\fIname\\fR list, \\fB\\-\\-allow\\-spki\\-pin\\fR or",
                );
                line("\\fB\\-\\-disable\\-authentication\\fR.");
            }
            "client" => {
                line("Unless \\fB\\-\\-unsafe\\-listen\\fR is given, \\fB\\-\\-listen\\fR must be");
                line("\\fBlocalhost\\fR, \\fB127.0.0.1\\fR, \\fB[::1]\\fR, a UNIX socket or a");
                line("systemd socket.");
            }
            _ => line("Usage goes to standard error; the exit status is 0."),
        }
    }

    line(".SH OPTIONS");
    let sections = [
        (Global, "Global flags"),
        (Server, "Server flags"),
        (Client, "Client flags"),
    ];
    for (scope, title) in sections {
        line(&format!(".SS \"{title}\""));
        if scope == Global {
            for (head, help) in BUILTIN_HELP {
                line(".TP");
                line(&format!("\\fB{}\\fR", roff(head)));
                line(&roff(help));
            }
        }
        for flag in visible_flags(scope) {
            line(".TP");
            line(&man_head(flag));
            line(&man_body(flag));
        }
    }

    line(".SH ENVIRONMENT");
    for flag in FLAGS.iter().filter(|f| !f.hidden) {
        let Some(var) = flag.env else { continue };
        line(".TP");
        line(&format!("\\fB{}\\fR", roff(var)));
        line(&format!(
            "Value of \\fB{}\\fR when that flag is absent.",
            roff(&format!("--{}", flag.name))
        ));
    }
    for (vars, what) in OTHER_ENV {
        line(".TP");
        line(&format!("\\fB{}\\fR", roff(vars)));
        line(&roff(what));
    }

    line(".SH SIGNALS");
    for (signals, what) in SIGNALS {
        line(".TP");
        line(&format!("\\fB{}\\fR", roff(signals)));
        line(&roff(what));
    }
    line(".PP");
    line("Signals that arrive before the daemon is listening have their default action.");

    line(".SH \"EXIT STATUS\"");
    for (status, what) in EXIT_STATUS {
        line(".TP");
        line(&format!("\\fB{status}\\fR"));
        line(&roff(what));
    }

    line(".SH FILES");
    line(".TP");
    line("\\fI/etc/ghostunnel/\\fR\\fIINSTANCE\\fR\\fI.args\\fR");
    line("The arguments of the instance \\fIINSTANCE\\fR of \\fBghostunnel@.service\\fR,");
    line("one per line, starting with \\fBserver\\fR or \\fBclient\\fR; read as");
    line("\\fB@/etc/ghostunnel/%i.args\\fR by \\fBExecStartPre=\\fR (with \\fB\\-\\-check\\fR)");
    line("and \\fBExecStart=\\fR.");
    line(".TP");
    line("\\fI/etc/ssl/certs/ca\\-certificates.crt\\fR");
    line("The system trust store used when \\fB\\-\\-cacert\\fR is not given (the first of the");
    line("usual bundle locations that exists).");

    line(".SH EXAMPLES");
    for (what, commands) in EXAMPLES {
        line(".PP");
        line(&roff(what));
        line(".PP");
        line(".RS 4");
        line(".nf");
        for command in *commands {
            line(&format!("\\fB{}\\fR", roff(command)));
        }
        line(".fi");
        line(".RE");
    }
    line(".PP");
    line("An argument file for \\fBghostunnel@web.service\\fR,");
    line("\\fI/etc/ghostunnel/web.args\\fR:");
    line(".PP");
    line(".RS 4");
    line(".nf");
    for arg in [
        "server",
        "--listen=0.0.0.0:8443",
        "--target=localhost:8080",
        "--keystore=/etc/ghostunnel/web.pem",
        "--cacert=/etc/ghostunnel/ca.pem",
        "--allow-cn=client",
    ] {
        line(&roff(arg));
    }
    line(".fi");
    line(".RE");

    line(".SH \"SEE ALSO\"");
    line("\\fBsystemd.service\\fR(5), \\fBsystemd.socket\\fR(5), \\fBsystemd.exec\\fR(5),");
    line("\\fBsd_notify\\fR(3), \\fBlandlock\\fR(7)");
    t
}

// ---------------------------------------------------------------------------------------------
// Completions

/// The flags a shell offers in `scope`: not hidden, no aliases, no `--no-` forms.
fn offered(scope: Scope) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if scope == Global {
        names.extend(BUILTIN_HELP.iter().map(|(h, _)| h.to_string()));
    }
    names.extend(visible_flags(scope).map(|f| format!("--{}", f.name)));
    names
}

/// Every spelling of every flag that takes a value, hidden ones and aliases included, so that
/// their values are never taken for a command.
fn valued() -> Vec<String> {
    let mut names: Vec<String> = FLAGS
        .iter()
        .filter(|f| f.kind != Bool)
        .flat_map(|f| std::iter::once(f.name).chain(f.aliases.iter().copied()))
        .map(|n| format!("--{n}"))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The fixed values of an enum flag, if it has them.
fn enum_values(flag: &Flag) -> Option<Vec<&'static str>> {
    match flag.kind {
        Kind::QuietList => Some(
            QUIET_CLASSES
                .iter()
                .copied()
                .filter(|c| !c.is_empty())
                .collect(),
        ),
        Kind::Enum(words) => Some(words.to_vec()),
        _ => None,
    }
}

/// `--completion-script-bash` and `packaging/completions/ghostunnel.bash`.
pub fn bash_completion() -> String {
    let mut value_arms = String::new();
    let mut seen = Vec::new();
    for flag in FLAGS.iter().filter(|f| f.kind != Bool) {
        if seen.contains(&flag.name) {
            continue;
        }
        seen.push(flag.name);
        let names: Vec<String> = std::iter::once(flag.name)
            .chain(flag.aliases.iter().copied())
            .map(|n| format!("--{n}"))
            .collect();
        let action = if let Some(values) = enum_values(flag) {
            format!("compgen -W '{}' -- \"$2\"", values.join(" "))
        } else if flag.file {
            "compopt -o filenames 2>/dev/null; compgen -f -- \"$2\"".to_string()
        } else {
            continue;
        };
        value_arms.push_str(&format!(
            "        {})\n            mapfile -t COMPREPLY < <({action})\n            ;;\n",
            names.join("|")
        ));
    }
    let words = |v: Vec<String>| v.join(" ");
    let mut t = String::new();
    t.push_str(&format!(
        r#"# bash completion for ghostunnel(1).
# Generated by `ghostunnel --completion-script-bash` from the flag table in src/cli.rs; do not
# edit: run `cargo run -- --completion-script-bash > packaging/completions/ghostunnel.bash`.
# Static: completing never runs ghostunnel.

_ghostunnel_global='{global}'
_ghostunnel_server='{server}'
_ghostunnel_client='{client}'
# Flags that take a value, with hidden ones and aliases, padded with spaces for matching.
_ghostunnel_valued=' {valued} '

# Completes the value "$2" of flag "$1" into COMPREPLY.
_ghostunnel_value() {{
    case "$1" in
{value_arms}        *)
            COMPREPLY=()
            ;;
    esac
}}

_ghostunnel() {{
    local -a words=()
    local i w cword=0
    # Bash splits `--flag=value` at `=` (COMP_WORDBREAKS): join the pieces again.
    for ((i = 0; i < ${{#COMP_WORDS[@]}}; i++)); do
        w=${{COMP_WORDS[i]}}
        if ((${{#words[@]}} > 0)) && [[ ${{words[-1]}} == --* ]] &&
            {{ [[ $w == = && ${{words[-1]}} != *=* ]] ||
                [[ ${{words[-1]}} == *= && ${{COMP_WORDS[i - 1]}} == = ]]; }}; then
            words[-1]+=$w
        else
            words+=("$w")
        fi
        ((i == COMP_CWORD)) && cword=$((${{#words[@]}} - 1))
    done
    local cur=${{words[cword]}} prev=
    ((cword > 0)) && prev=${{words[cword - 1]}}
    COMPREPLY=()

    # The command is the first word that is neither a flag, a flag's value nor an @file.
    local cmd= topic= skip=
    for ((i = 1; i < cword; i++)); do
        w=${{words[i]}}
        if [[ -n $skip ]]; then
            skip=
        elif [[ $w == --*=* || $w == @* ]]; then
            :
        elif [[ $w == --* ]]; then
            [[ $_ghostunnel_valued == *" $w "* ]] && skip=1
        elif [[ -z $cmd ]]; then
            cmd=$w
        elif [[ -z $topic ]]; then
            topic=$w
        fi
    done

    if [[ $cur == @* ]]; then
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -f -P @ -- "${{cur#@}}")
    elif [[ $cur == --*=* ]]; then
        _ghostunnel_value "${{cur%%=*}}" "${{cur#*=}}"
    elif [[ $prev == --* && $prev != *=* && $_ghostunnel_valued == *" $prev "* ]]; then
        _ghostunnel_value "$prev" "$cur"
    elif [[ $cur == -* ]]; then
        local flags=$_ghostunnel_global
        case $cmd in
            server) flags+=" $_ghostunnel_server" ;;
            client) flags+=" $_ghostunnel_client" ;;
        esac
        mapfile -t COMPREPLY < <(compgen -W "$flags" -- "$cur")
    elif [[ -z $cmd ]]; then
        mapfile -t COMPREPLY < <(compgen -W '{commands}' -- "$cur")
    elif [[ $cmd == help && -z $topic ]]; then
        mapfile -t COMPREPLY < <(compgen -W 'server client' -- "$cur")
    fi
    return 0
}}

complete -F _ghostunnel ghostunnel
"#,
        global = words(offered(Global)),
        server = words(offered(Server)),
        client = words(offered(Client)),
        valued = words(valued()),
        commands = COMMANDS.iter().map(|c| c.0).collect::<Vec<_>>().join(" "),
    ));
    t
}

/// A string inside single quotes in a shell script.
fn single_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One `_arguments` spec for a flag, e.g. `'*--allow-cn=[Allow ...]:CN: '`.
fn zsh_spec(flag: &Flag) -> String {
    let help = flag
        .help
        .replace('\\', "\\\\")
        .replace('[', "\\[")
        .replace(']', "\\]");
    let repeat = if flag.kind.is_list() { "*" } else { "" };
    let spec = if flag.kind == Bool {
        format!("{repeat}--{}[{help}]", flag.name)
    } else {
        let action = if let Some(values) = enum_values(flag) {
            format!("({})", values.join(" "))
        } else if flag.file {
            "_files".to_string()
        } else {
            " ".to_string()
        };
        format!(
            "{repeat}--{}=[{help}]:{}:{action}",
            flag.name,
            value_name(flag).to_lowercase().replace('_', " ")
        )
    };
    single_quoted(&spec)
}

/// `--completion-script-zsh` and `packaging/completions/_ghostunnel`.
pub fn zsh_completion() -> String {
    let specs = |scope: Scope| {
        let mut lines: Vec<String> = Vec::new();
        if scope == Global {
            for (head, help) in BUILTIN_HELP {
                lines.push(single_quoted(&format!("(- *){head}[{help}]")));
            }
        }
        lines.extend(visible_flags(scope).map(zsh_spec));
        lines
            .iter()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    };
    let commands: String = COMMANDS
        .iter()
        .map(|(name, about)| format!("        {}\n", single_quoted(&format!("{name}:{about}"))))
        .collect();
    format!(
        r#"#compdef ghostunnel
# zsh completion for ghostunnel(1).
# Generated by `ghostunnel --completion-script-zsh` from the flag table in src/cli.rs; do not
# edit: run `cargo run -- --completion-script-zsh > packaging/completions/_ghostunnel`.
# Static: completing never runs ghostunnel.

# An `@FILE` argument file.
_ghostunnel_argfile() {{
    compset -P @ && _files
}}

_ghostunnel() {{
    local curcontext=$curcontext state state_descr line ret=1
    local -a global server client commands topics
    global=(
{global}    )
    server=(
{server}    )
    client=(
{client}    )
    commands=(
{commands}    )
    topics=(${{commands[1,2]}})
    _arguments -C -S $global ': :->command' '*:: :->args' && ret=0
    case $state in
        command)
            if compset -P @; then
                _files && ret=0
            else
                _describe -t commands 'ghostunnel command' commands && ret=0
            fi
            ;;
        args)
            curcontext=${{curcontext%:*:*}}:ghostunnel-$words[1]:
            case $words[1] in
                server)
                    _arguments -S $global $server '*: :_ghostunnel_argfile' && ret=0
                    ;;
                client)
                    _arguments -S $global $client '*: :_ghostunnel_argfile' && ret=0
                    ;;
                help)
                    _describe -t commands 'ghostunnel command' topics && ret=0
                    ;;
            esac
            ;;
    esac
    return ret
}}

_ghostunnel "$@"
"#,
        global = specs(Global),
        server = specs(Server),
        client = specs(Client),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Parsed, parse};
    use super::*;

    /// The usage text `args` print.
    fn help(args: &[&str]) -> String {
        let args = args.iter().map(std::ffi::OsString::from).collect();
        match parse(args, &|_| None) {
            Ok(Parsed::Exit { text, .. }) => text,
            other => panic!("no usage: {other:?}"),
        }
    }

    fn scope_words(scope: Scope) -> &'static [&'static str] {
        match scope {
            Global => &[],
            Server => &["server"],
            Client => &["client"],
        }
    }

    /// The generators cannot drop a flag: every visible flag is in the man page (in its
    /// scope's section), in `--help` for its scope and in both completion scripts; hidden
    /// flags and aliases are in none of them.
    #[test]
    fn every_visible_flag_everywhere_hidden_nowhere() {
        let man = man_page();
        let bash = bash_completion();
        let zsh = zsh_completion();
        let section = |title: &str| {
            let start = man.find(&format!(".SS \"{title}\"")).expect(title);
            let rest = &man[start + 1..];
            let end = rest
                .find(".SS ")
                .or_else(|| rest.find(".SH "))
                .unwrap_or(rest.len());
            rest[..end].to_string()
        };
        for flag in FLAGS {
            let name = format!("--{}", flag.name);
            let man_name = format!("\\fB{}\\fR", roff(&name));
            let title = match flag.scope {
                Global => "Global flags",
                Server => "Server flags",
                Client => "Client flags",
            };
            let mut usage_args = scope_words(flag.scope).to_vec();
            usage_args.push("--help");
            let usage = help(&usage_args);
            let bash_var = match flag.scope {
                Global => "_ghostunnel_global",
                Server => "_ghostunnel_server",
                Client => "_ghostunnel_client",
            };
            let bash_list = bash
                .lines()
                .find(|l| l.starts_with(&format!("{bash_var}=")))
                .unwrap();
            let in_bash = bash_list
                .trim_start_matches(&format!("{bash_var}='"))
                .trim_end_matches('\'')
                .split(' ')
                .any(|w| w == name);
            let in_zsh = zsh.contains(&format!("'{name}[")) || zsh.contains(&format!("{name}=["));
            let in_usage =
                usage.contains(&format!("  {name} ")) || usage.contains(&format!("  {name}="));
            if flag.hidden {
                assert!(!man.contains(&man_name), "hidden {name} in the man page");
                assert!(!in_usage, "hidden {name} in --help");
                assert!(!in_bash, "hidden {name} offered by bash");
                assert!(!in_zsh, "hidden {name} offered by zsh");
            } else {
                assert!(
                    section(title).contains(&man_name),
                    "{name} not under {title}"
                );
                assert!(in_usage, "{name} not in {usage_args:?}:\n{usage}");
                assert!(in_bash, "{name} not offered by bash");
                assert!(in_zsh, "{name} not offered by zsh");
                if let Some(var) = flag.env {
                    assert!(
                        section(title).contains(&format!("\\fB{}\\fR", roff(var))),
                        "{var}"
                    );
                    assert!(
                        man.contains(&format!(".TP\n\\fB{}\\fR\n", roff(var))),
                        "{var}"
                    );
                }
                if !flag.default.is_empty() && flag.kind != Bool {
                    assert!(
                        section(title)
                            .contains(&format!("Default: \\fB{}\\fR.", roff(flag.default))),
                        "{name} default"
                    );
                }
            }
            for alias in flag.aliases {
                let alias = format!("--{alias}");
                assert!(
                    !man.contains(&roff(&alias)),
                    "alias {alias} in the man page"
                );
                assert!(!usage.contains(&alias), "alias {alias} in --help");
                assert!(!bash_list.contains(&alias), "alias {alias} offered by bash");
                assert!(!zsh.contains(&alias), "alias {alias} offered by zsh");
                // But its value is still skipped when looking for the command.
                if flag.kind != Bool {
                    assert!(bash.contains(&format!(" {alias} ")), "{alias} not valued");
                }
            }
        }
    }

    #[test]
    fn man_page_sections() {
        let man = man_page();
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH COMMANDS",
            ".SH OPTIONS",
            ".SH ENVIRONMENT",
            ".SH SIGNALS",
            ".SH \"EXIT STATUS\"",
            ".SH FILES",
            ".SH EXAMPLES",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(man.contains(&format!("\n{section}\n")), "{section} missing");
        }
        assert!(man.contains(&format!("\"ghostunnel {}\"", env!("CARGO_PKG_VERSION"))));
        for var in [
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "WATCHDOG_USEC",
            "SSL_CERT_FILE",
            "GHOSTUNNEL_TLS_RESUMPTION",
            "JOURNAL_STREAM",
        ] {
            assert!(man.contains(var), "{var}");
        }
        assert!(man.contains("systemd.socket\\fR(5)") && man.contains("systemd.service\\fR(5)"));
        // No text line may start like a request, and no bare hyphen may remain.
        for line in man.lines() {
            assert!(
                line.starts_with('.') && !line.starts_with(".\\&")
                    || !(line.starts_with('\'') || line.starts_with(' ')),
                "{line}"
            );
            if !line.starts_with(".\\\"") {
                let unescaped = line.replace("\\-", "").replace("\\e", "");
                assert!(!unescaped.contains('-'), "unescaped hyphen: {line}");
            }
        }
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(roff("--a-b"), "\\-\\-a\\-b");
        assert_eq!(roff("a\\b"), "a\\eb");
        assert_eq!(roff(".x"), "\\&.x");
        assert_eq!(roff("'x"), "\\&'x");
    }

    #[test]
    fn enum_values_in_completions() {
        let bash = bash_completion();
        assert!(bash.contains("compgen -W 'all conns conn-errs handshake-errs'"));
        assert!(bash.contains("compgen -W 'conn tls tls-full'"));
        let zsh = zsh_completion();
        assert!(zsh.contains(":(all conns conn-errs handshake-errs)'"));
        assert!(zsh.contains(":(conn tls tls-full)'"));
        for flag in FLAGS.iter().filter(|f| f.file && !f.hidden) {
            assert!(zsh.contains(&format!("--{}=[", flag.name)));
            assert!(zsh.contains(&format!("]:{}:_files'", value_name(flag).to_lowercase())));
        }
    }
}
