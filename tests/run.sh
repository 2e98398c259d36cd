#!/usr/bin/env bash
# The whole test suite from a fresh Debian/Ubuntu machine: installs what the tests need (apt,
# pip and cargo-nextest, each only when missing), then runs every test. Extra arguments go to
# `cargo nextest run` (e.g. `tests/run.sh -E 'test(/status/)'`). CI runs this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

# Root installs directly; anyone else through sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Every tool a test runs; a test whose tool is missing fails rather than skips.
# openssl: PKCS#12 fixtures and the TLS 1.1 / CBC-only client tests.
# systemd: systemd-analyze for the packaging tests, systemd-socket-activate for the activation
# tests. sslscan: the TLS policy scan. groff-base, bash, zsh: the man page and shell completion
# tests. python3-prometheus-client: the real Prometheus text parser for the metrics tests.
# tinyproxy, microsocks: real HTTP CONNECT and SOCKS5 proxies for the --proxy tests.
# python3-pip: installs the PROXY v2 decoder below. util-linux: unshare for the syslog tests.
# pebble: the ACME test CA (and pebble-challtestsrv, its DNS) for the ACME tests.
# softhsm2: a real PKCS#11 token (module and softhsm2-util) for the PKCS#11 tests.
# default-jre-headless: keytool, which makes the JCEKS/JKS keystores of the keystore tests.
# tar (with gzip): the OPA policy bundles the policy tests build.
packages=(openssl ca-certificates systemd sslscan groff-base bash zsh python3
    python3-prometheus-client python3-pip tinyproxy microsocks util-linux pebble softhsm2
    default-jre-headless tar gzip)
missing=()
if command -v apt-get >/dev/null 2>&1; then
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
else
    echo "not a Debian/Ubuntu system: install the equivalents of: ${packages[*]}" >&2
fi
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi
# proxy-protocol: an independent PROXY v2 decoder for the backend of the PROXY protocol tests.
if ! python3 -c 'import proxyprotocol' 2>/dev/null; then
    python3 -m pip install -q proxy-protocol 2>/dev/null ||
        python3 -m pip install -q --break-system-packages proxy-protocol
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked

cargo nextest run --no-fail-fast "$@"
