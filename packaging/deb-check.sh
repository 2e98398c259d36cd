#!/usr/bin/env bash
# Builds the Debian package and checks it the way a user would meet it (CI step, .ci/run):
#   1. `cargo deb` (installs cargo-deb 3.8.0 if missing) builds target/debian/ghostunnel_*.deb;
#   2. `dpkg-deb -c` must list every expected path and nothing under /etc/systemd;
#   3. lintian: any error or warning not overridden in packaging/debian/lintian-overrides fails;
#   4. `dpkg -i`, then the installed binary runs, the installed man page and completions are
#      what it generates, no unit got enabled, and
#      `systemd-analyze verify` passes every installed unit against /usr/bin/ghostunnel;
#   5. a reinstall keeps a locally edited conffile; `dpkg -r` removes the binary and units but
#      keeps /etc; `dpkg --purge` removes /etc/ghostunnel's packaged files too.
# Needs root, dpkg, lintian and systemd-analyze (Debian 12: apt-get install lintian systemd).
# PID 1 need not be systemd: nothing is started.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> deb-check: $*"; }
fail() { echo "deb-check: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (dpkg -i)"
for tool in dpkg dpkg-deb lintian systemd-analyze; do
    command -v "$tool" >/dev/null || fail "$tool not installed (apt-get install lintian systemd)"
done
if dpkg-query -W -f '${Status}' ghostunnel 2>/dev/null | grep -q installed; then
    fail "a ghostunnel package is already installed; purge it first (dpkg --purge ghostunnel)"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step "building the package"
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
DEB=$WORK/ghostunnel.deb
cargo deb --locked --output "$DEB"
echo "$(dpkg-deb -f "$DEB" Package Version Depends | tr '\n' ' ')($(stat -c %s "$DEB") bytes)"

step "contents (dpkg-deb -c)"
listing=$(dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's|^\./|/|')
expected=(
    /usr/bin/ghostunnel
    /usr/share/man/man1/ghostunnel.1.gz
    /usr/share/bash-completion/completions/ghostunnel
    /usr/share/zsh/vendor-completions/_ghostunnel
    /usr/share/doc/ghostunnel/README.Debian
    /usr/share/doc/ghostunnel/copyright
    /usr/share/doc/ghostunnel/changelog.Debian.gz
    /usr/share/lintian/overrides/ghostunnel
    /etc/ghostunnel/README
    /etc/ghostunnel/example.args
)
units=(ghostunnel.service ghostunnel@.service ghostunnel.socket ghostunnel-socket.service
    ghostunnel-unix.socket ghostunnel-hardened.service)
for unit in "${units[@]}"; do expected+=("/usr/lib/systemd/system/$unit"); done
for path in "${expected[@]}"; do
    grep -qxF "$path" <<<"$listing" || fail "$path missing from $DEB"
done
packaged_units=$(grep -c '^/usr/lib/systemd/system/.' <<<"$listing" || true)
[ "$packaged_units" = "${#units[@]}" ] ||
    fail "expected ${#units[@]} units, the package has $packaged_units"
if grep -q '^/etc/systemd' <<<"$listing"; then fail "the package ships files in /etc/systemd"; fi
conffiles=$(dpkg-deb -I "$DEB" conffiles 2>/dev/null || true)
for conf in /etc/ghostunnel/README /etc/ghostunnel/example.args; do
    grep -qxF "$conf" <<<"$conffiles" || fail "$conf is not a conffile"
done
# dpkg-shlibdeps sees versioned symbols only, not the GLIBC_ABI_DT_RELR version that a
# binary linked with -z pack-relative-relocs needs (build.rs): Depends must say 2.36 then.
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/bin/ghostunnel >"$WORK/ghostunnel"
if grep -q GLIBC_ABI_DT_RELR <<<"$(readelf -V "$WORK/ghostunnel")"; then
    dpkg-deb -f "$DEB" Depends | grep -q 'libc6 (>= 2.36)' ||
        fail "the binary uses DT_RELR but Depends lacks libc6 (>= 2.36): $(dpkg-deb -f "$DEB" Depends)"
fi
echo "${#expected[@]} expected paths present, ${#units[@]} units, conffiles marked"

step "lintian"
lintian --display-info --fail-on error,warning --tag-display-limit 0 "$DEB"

step "installing (dpkg -i)"
dpkg -i "$DEB" </dev/null
# Everything below runs the installed files, not the build tree.
trap 'dpkg --purge ghostunnel >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
[ "$(command -v ghostunnel)" = /usr/bin/ghostunnel ] || fail "ghostunnel is not /usr/bin/ghostunnel"
version=$(/usr/bin/ghostunnel --version 2>&1) # on stderr, like the reference
echo "$version"
grep -q "^rev $(dpkg-query -W -f '${Version}' ghostunnel | sed 's/-[^-]*$//') " <<<"$version" ||
    fail "installed binary reports another version: $version"
# The installed page and completions are what the installed binary generates.
zcat /usr/share/man/man1/ghostunnel.1.gz | cmp -s - <(/usr/bin/ghostunnel --help-man) ||
    fail "the installed man page differs from /usr/bin/ghostunnel --help-man"
cmp -s /usr/share/bash-completion/completions/ghostunnel \
    <(/usr/bin/ghostunnel --completion-script-bash) || fail "stale bash completion"
cmp -s /usr/share/zsh/vendor-completions/_ghostunnel \
    <(/usr/bin/ghostunnel --completion-script-zsh) || fail "stale zsh completion"
enabled=$(find /etc/systemd -name '*ghostunnel*' 2>/dev/null || true)
[ -z "$enabled" ] || fail "installing enabled units: $enabled"

step "systemd-analyze verify on the installed units"
for unit in "${units[@]}"; do
    # A template is verified through an instance (the one of /etc/ghostunnel/example.args).
    name=${unit/@./@example.}
    err=$(systemd-analyze verify "$name" 2>&1 >/dev/null) || fail "$name: $err"
    # systemd 252 (Debian 12) predates Type=notify-reload and warns; anything else fails.
    unexpected=$(grep -v 'Failed to parse service type, ignoring: notify-reload' <<<"$err" || true)
    [ -z "$unexpected" ] || fail "$name: systemd-analyze verify said: $unexpected"
    echo "$name: ok"
done

step "reinstall keeps a local conffile edit"
echo "# local edit by deb-check" >>/etc/ghostunnel/example.args
dpkg -i "$DEB" </dev/null >/dev/null
grep -q '^# local edit by deb-check$' /etc/ghostunnel/example.args ||
    fail "reinstalling replaced the edited /etc/ghostunnel/example.args"

step "removing (dpkg -r), then purging"
dpkg -r ghostunnel </dev/null >/dev/null
[ ! -e /usr/bin/ghostunnel ] || fail "/usr/bin/ghostunnel still there after dpkg -r"
for unit in "${units[@]}"; do
    [ ! -e "/usr/lib/systemd/system/$unit" ] || fail "$unit still there after dpkg -r"
done
[ -f /etc/ghostunnel/example.args ] || fail "dpkg -r removed the conffiles (only --purge may)"
dpkg --purge ghostunnel </dev/null >/dev/null
trap 'rm -rf "$WORK"' EXIT
[ ! -e /etc/ghostunnel/example.args ] || fail "/etc/ghostunnel/example.args left after --purge"
if dpkg-query -W ghostunnel >/dev/null 2>&1; then fail "dpkg still knows ghostunnel"; fi
step "OK"
