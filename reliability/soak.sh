#!/usr/bin/env bash
# Reliability run (README "Reliability"): soak, hostile peers, fd and thread exhaustion, backend
# faults and shutdown under load, against real ghostunnel processes. Everything stays on
# 127.0.0.1 and every load is bounded in count and time. Exits non-zero if any check fails.
#
#   reliability/soak.sh            # the full run: 10-minute soak with 5,000 idle connections
#   reliability/soak.sh --quick    # the CI variant: 30 s soak, 500 idle connections, smaller counts
#   DURATION=120 IDLE=2000 reliability/soak.sh
#   ONLY=hostile,faults reliability/soak.sh --quick
#   PROFILE=dev reliability/soak.sh --quick    # a debug build instead of release
#   KEEP=1 reliability/soak.sh --quick         # keep the daemons' logs
#
# Needs root for the thread-exhaustion phase (it runs one daemon as an unused uid under a low
# RLIMIT_NPROC with setpriv and prlimit), openssl for the throwaway certificates.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
WORK=$(mktemp -d)
# KEEP=1 keeps the certificates and the daemons' logs.
if [ -n "${KEEP:-}" ]; then echo "soak: keeping $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi

args=()
[ "${1:-}" = --quick ] && args+=(--quick)
[ -n "${DURATION:-}" ] && args+=(--duration "$DURATION")
[ -n "${IDLE:-}" ] && args+=(--idle "$IDLE")
[ -n "${ONLY:-}" ] && args+=(--only "$ONLY")

cargo build --quiet --profile "$PROFILE" --bin ghostunnel --example soak
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
GT=target/$dir/ghostunnel
SOAK=target/$dir/examples/soak

# Both proxies hold two descriptors per idle connection, the driver (its clients and the
# backend) two more, besides the churn and the hostile peers.
idle=${IDLE:-$([ "${1:-}" = --quick ] && echo 500 || echo 5000)}
need=$(( idle * 2 + 2000 ))
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    echo "soak: $idle idle connections need $need open files (ulimit -Hn is $(ulimit -Hn))" >&2
    exit 2
fi

# Throwaway certificates: one CA, two server and two client identities to alternate between on
# reload, and a file that is not a certificate for the bad reloads.
(
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -keyout ca.key \
        -out ca.pem -subj /CN=soak-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null
    for who in server-a server-b client-a client-b; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $who.key \
            -out $who.csr -subj /CN=$who 2>/dev/null
        case $who in
            server-*) printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' ;;
            client-*) printf 'extendedKeyUsage=clientAuth\n' ;;
        esac > ext
        openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
            -extfile ext -out $who.crt 2>/dev/null
        cat $who.crt $who.key > $who.pem
    done
    printf -- '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n' > bad.pem
    rm -f ./*.csr ./*.srl ext ca.key
)
# The thread-exhaustion daemon runs as an unprivileged uid and must read these.
chmod 755 "$WORK"
chmod 644 "$WORK"/*

"$SOAK" "$GT" "$WORK" "${args[@]}"
