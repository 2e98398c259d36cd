//! The generated documents under packaging/: the man page and the shell completions are exactly
//! what the binary prints (so they cannot drift from the flag table), the man page renders
//! without groff warnings, and the completion scripts work in the real shells.
//!
//! The tools these tests drive (groff, bash, zsh) are installed by `tests/run.sh`; a missing tool
//! fails the test rather than skipping it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// Fails with the regeneration command when `path` differs from the output of `flag`.
fn assert_current(flag: &str, path: &str) {
    let o = Cmd::bare().arg(flag).run(Duration::from_secs(10));
    o.assert_code(0);
    let committed = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    assert!(
        committed == o.stdout,
        "{path} is stale: regenerate it with `cargo run -- {flag} > {path}`"
    );
}

#[test]
fn man_page_is_current() {
    assert_current("--help-man", "packaging/ghostunnel.1");
}

#[test]
fn bash_completion_is_current() {
    assert_current(
        "--completion-script-bash",
        "packaging/completions/ghostunnel.bash",
    );
}

#[test]
fn zsh_completion_is_current() {
    assert_current(
        "--completion-script-zsh",
        "packaging/completions/_ghostunnel",
    );
}

/// `--help-custom-man` is kingpin's other name for the same page.
#[test]
fn help_custom_man_prints_the_same_page() {
    let a = Cmd::bare().arg("--help-man").run(Duration::from_secs(10));
    let b = Cmd::bare()
        .arg("--help-custom-man")
        .run(Duration::from_secs(10));
    assert_eq!(a.stdout, b.stdout);
    assert!(a.stderr.is_empty() && b.stderr.is_empty());
}

/// `groff -man -ww -z` prints nothing for the page: no unknown macros, no bad escapes.
#[test]
fn man_page_renders_without_warnings() {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z", "packaging/ghostunnel.1"])
        .output()
        .expect("groff is required (apt-get install groff-base)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "groff: {stderr}");
    // And the rendered text has what a reader looks for.
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-P-cbou", "packaging/ghostunnel.1"])
        .output()
        .unwrap();
    // `\-` renders as U+2212 MINUS SIGN in UTF-8.
    let text = String::from_utf8_lossy(&out.stdout).replace(['\u{2212}', '\u{2010}'], "-");
    for needle in [
        "ghostunnel - a simple SSL/TLS proxy",
        "--keystore=PATH",
        "--allow-cn=CN",
        "--verify-cn=CN",
        "--check",
        "KEYSTORE_PATH",
        "NOTIFY_SOCKET",
        "SIGHUP",
        "/etc/ghostunnel/INSTANCE.args",
        "systemd.socket(5)",
    ] {
        assert!(
            text.contains(needle),
            "rendered page lacks {needle:?}:\n{text}"
        );
    }
    assert!(!text.contains("--cipher-suites"), "hidden flag rendered");
}

/// Runs the committed bash script's completion function for the words of a command line,
/// the cursor on the last word; returns COMPREPLY.
fn bash_complete(words: &[&str]) -> Vec<String> {
    bash_complete_in(Path::new("."), words)
}

fn bash_complete_in(dir: &Path, words: &[&str]) -> Vec<String> {
    let script = std::fs::canonicalize("packaging/completions/ghostunnel.bash").unwrap();
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect();
    let program = format!(
        "set -u\nsource '{}'\nCOMP_WORDS=({})\nCOMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
         _ghostunnel\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" ")
    );
    let out = Command::new("bash")
        .arg("--norc")
        .arg("--noprofile")
        .arg("-c")
        .arg(&program)
        .current_dir(dir)
        .output()
        .expect("bash is required");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{words:?}: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_commands() {
    assert_eq!(bash_complete(&["ghostunnel", "ser"]), ["server"]);
    assert_eq!(
        bash_complete(&["ghostunnel", ""]),
        ["server", "client", "help"]
    );
    assert_eq!(
        bash_complete(&["ghostunnel", "help", ""]),
        ["server", "client"]
    );
    // A flag's value is not the command.
    assert_eq!(
        bash_complete(&["ghostunnel", "--keystore", "server", "cl"]),
        ["client"]
    );
    assert!(bash_complete(&["ghostunnel", "server", "x"]).is_empty());
}

#[test]
fn bash_completes_flags_per_command() {
    let server = bash_complete(&["ghostunnel", "server", "--allow-c"]);
    assert_eq!(server, ["--allow-cn"]);
    // Client flags are not offered for server, nor server flags for client.
    assert!(bash_complete(&["ghostunnel", "server", "--verify-"]).is_empty());
    assert!(bash_complete(&["ghostunnel", "client", "--allow-"]).is_empty());
    let client = bash_complete(&["ghostunnel", "client", "--verify-"]);
    for flag in ["--verify-cn", "--verify-dns", "--verify-spki-pin"] {
        assert!(client.contains(&flag.to_string()), "{client:?}");
    }
    // Mode flags only after the command; global flags everywhere; hidden flags never.
    assert!(bash_complete(&["ghostunnel", "--allow-c"]).is_empty());
    assert_eq!(bash_complete(&["ghostunnel", "--chec"]), ["--check"]);
    assert_eq!(
        bash_complete(&["ghostunnel", "client", "--listen", "x", "--chec"]),
        ["--check"]
    );
    assert!(bash_complete(&["ghostunnel", "server", "--cipher"]).is_empty());
    assert!(bash_complete(&["ghostunnel", "server", "--allow-dns-"]).is_empty());
    assert!(bash_complete(&["ghostunnel", "server", "--allow-ip"]).is_empty());
}

#[test]
fn bash_completes_enum_values() {
    assert_eq!(
        bash_complete(&["ghostunnel", "--quiet", ""]),
        ["all", "conns", "conn-errs", "handshake-errs"]
    );
    assert_eq!(
        bash_complete(&["ghostunnel", "--quiet=conn"]),
        ["conns", "conn-errs"]
    );
    // As bash splits it: `--quiet`, `=`, `conn`.
    assert_eq!(
        bash_complete(&["ghostunnel", "--quiet", "=", "conn"]),
        ["conns", "conn-errs"]
    );
    assert_eq!(
        bash_complete(&["ghostunnel", "server", "--proxy-protocol-mode", "=", ""]),
        ["conn", "tls", "tls-full"]
    );
    assert_eq!(
        bash_complete(&["ghostunnel", "server", "--proxy-protocol-mode", "tls"]),
        ["tls", "tls-full"]
    );
    // Free-form values get nothing (not flags, not commands).
    assert!(bash_complete(&["ghostunnel", "server", "--listen", ""]).is_empty());
}

#[test]
fn bash_completes_paths_and_arg_files() {
    let dir = TempDir::new();
    dir.write("web.args", "server\n");
    dir.write("web.pem", "");
    let files = ["web.args", "web.pem"];
    for flag in [
        "--keystore",
        "--cert",
        "--key",
        "--cacert",
        "--storepass-file",
    ] {
        assert_eq!(
            bash_complete_in(dir.path(), &["ghostunnel", "server", flag, "we"]),
            files,
            "{flag}"
        );
        assert_eq!(
            bash_complete_in(dir.path(), &["ghostunnel", flag, "=", "web.p"]),
            ["web.pem"],
            "{flag}="
        );
    }
    assert_eq!(
        bash_complete_in(dir.path(), &["ghostunnel", "--check", "@we"]),
        ["@web.args", "@web.pem"]
    );
    // Not for a flag whose value is no file.
    assert!(bash_complete_in(dir.path(), &["ghostunnel", "--storepass", "we"]).is_empty());
}

/// Drives an interactive zsh in a pseudo-terminal (zsh/zpty) with the committed completion
/// on its `fpath`: types `line`, presses TAB, and returns every candidate offered (captured by
/// wrapping `compadd`), as space-separated groups.
const ZSH_DRIVER: &str = r#"
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=''; RPROMPT=''; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z 'ghostunnel() { : }'
zpty -w z "zstyle ':completion:*' list-prompt ''; zstyle ':completion:*' menu no; LISTMAX=10000"
zpty -w z 'compadd() { if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi; typeset -a h; builtin compadd -A h "$@"; local r=$?; print -r -- "<H""ITS>${(j: :)h}</H""ITS>" >&2; builtin compadd "$@"; return r; }'
zpty -w z "$2"$'\t'
zpty -w z $'\C-u''print "<D""ONE>"'
zpty -r z out '*<DONE>*'
print -r -- ${(M)${(f)out}:#*<HITS>*}
zpty -d z
"#;

fn zsh_complete_in(dir: &Path, line: &str) -> Vec<String> {
    let fpath = std::fs::canonicalize("packaging/completions").unwrap();
    let mut child = Command::new("timeout")
        .args(["20", "zsh", "-f", "-c", ZSH_DRIVER, "zsh"])
        .arg(&fpath)
        .arg(line)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("zsh is required (apt-get install zsh)");
    let out = child.stdout.take().map(|mut s| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text).unwrap();
        text
    });
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "zsh driver failed for {line:?}: {status:?}"
    );
    let out = out.unwrap_or_default();
    let mut hits = Vec::new();
    let mut rest = out.as_str();
    while let Some(start) = rest.find("<HITS>") {
        let after = &rest[start + 6..];
        let end = after.find("</HITS>").unwrap_or(after.len());
        hits.push(after[..end].to_string());
        rest = &after[end..];
    }
    hits
}

#[test]
fn zsh_completes_commands_flags_and_values() {
    let dir = TempDir::new();
    dir.write("web.args", "server\n");
    dir.write("web.pem", "");
    let z = |line: &str| zsh_complete_in(dir.path(), line).join(" ");
    assert_eq!(z("ghostunnel ser"), "server");
    assert_eq!(z("ghostunnel help "), "server client");
    assert_eq!(z("ghostunnel server --allow-c"), "--allow-cn");
    // Client flags are not offered for server.
    assert_eq!(z("ghostunnel server --verify-"), "");
    let client = z("ghostunnel client --verify-");
    assert!(
        client.contains("--verify-cn") && !client.contains("--allow-"),
        "{client}"
    );
    assert_eq!(
        z("ghostunnel --quiet="),
        "all conns conn-errs handshake-errs"
    );
    assert_eq!(
        z("ghostunnel server --proxy-protocol-mode "),
        "conn tls tls-full"
    );
    assert_eq!(z("ghostunnel server --cacert=we"), "web.args web.pem");
    assert_eq!(z("ghostunnel --check @we"), "web.args web.pem");
}

/// zsh parses the script.
#[test]
fn zsh_completion_parses() {
    let out = Command::new("zsh")
        .args(["-n", "packaging/completions/_ghostunnel"])
        .output()
        .expect("zsh is required (apt-get install zsh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bash_completion_parses() {
    let out = Command::new("bash")
        .args(["-n", "packaging/completions/ghostunnel.bash"])
        .output()
        .expect("bash is required");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
