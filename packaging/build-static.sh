#!/usr/bin/env bash
# Builds a fully static ghostunnel (static-pie, glibc linked in) for appliances and for
# distributions whose glibc is older than the build machine's:
#
#   packaging/build-static.sh                 # default features (aws-lc-rs, pkcs12)
#   packaging/build-static.sh --no-default-features --features ring,pkcs12
#
# It uses the ordinary gnu target with +crt-static, so it needs no extra rustup target and no
# musl toolchain, and keeps glibc's malloc and speed (musl's malloc halved upload throughput
# in our measurements). The explicit --target keeps RUSTFLAGS off build scripts and proc macros,
# which must stay dynamic, and puts the result in its own directory:
#   target/x86_64-unknown-linux-gnu/release/ghostunnel
#
# Caveat (README "Static build"): glibc's "files" and "dns" name services are built in, so
# `localhost`, /etc/hosts and DNS through /etc/resolv.conf work anywhere. Any other module named
# in /etc/nsswitch.conf (myhostname, resolve, mdns, sss, ...) is dlopen()ed from the system and is
# only safe with the very glibc version the binary was built with; where that is not the case,
# give addresses, /etc/hosts entries or DNS names, or use the dynamic build.
#
# SMOKE=1 then carries one HTTP request through a client -> server tunnel of the static binary
# (demo/run.sh, which resolves `localhost`).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${TARGET:-$(rustc -vV | sed -n 's/^host: //p')}
case "$TARGET" in
    *-linux-gnu) ;;
    *) echo "build-static.sh: $TARGET is not a *-linux-gnu target" >&2; exit 1 ;;
esac
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --bin ghostunnel --target "$TARGET" "$@"
BIN=target/$TARGET/release/ghostunnel
# Refuse to call it static if anything would still be loaded at run time.
if readelf -d "$BIN" | grep -q NEEDED; then
    echo "build-static.sh: $BIN still needs shared libraries:" >&2
    readelf -d "$BIN" | grep NEEDED >&2
    exit 1
fi
echo "$BIN: $(stat -c %s "$BIN") bytes, static"
if [ "${SMOKE:-0}" = 1 ]; then
    GHOSTUNNEL=$BIN demo/run.sh
fi
