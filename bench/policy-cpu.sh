#!/usr/bin/env bash
# Server CPU per full mTLS handshake with an OPA policy, against the same decision made by
# --allow-cn. Runs the release binary (or $GHOSTUNNEL) on loopback twice, drives full
# handshakes with `openssl s_time -new` for SECONDS (default 10) each, and reads the server's
# user+system CPU from /proc before and after. Needs openssl and tar.
#
#   bench/policy-cpu.sh            # prints one line per configuration and the difference
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${GHOSTUNNEL:-target/release/ghostunnel}
secs=${SECONDS_PER_RUN:-10}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "${pid:-}" "${sink:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
    -out ca.pem -days 2 -subj "/CN=bench CA" 2>/dev/null
leaf() { # name subject ext
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
        -out "$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -set_serial "$RANDOM" -days 2 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
leaf server "/CN=server" "subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf client "/O=Example Org/OU=Payments/CN=client" \
    "subjectAltName=DNS:client.example.com,URI:spiffe://example.com/ns/default/sa/client"
cat server.pem server.key > server-keystore.pem

# A typical policy: a data document of allowed SPIFFE IDs and OUs, and a CN fallback.
mkdir bundle
cat > bundle/policy.rego <<'EOF'
package ghostunnel

default allow := false

allow if {
  some uri in input.certificate.URIs
  uri.Scheme == "spiffe"
  sprintf("spiffe://%s%s", [uri.Host, uri.Path]) in data.ghostunnel.spiffe_ids
}

allow if {
  some ou in input.certificate.Subject.OrganizationalUnit
  ou in data.ghostunnel.ous
}

allow if input.certificate.Subject.CommonName in data.ghostunnel.cns
EOF
mkdir bundle/ghostunnel
cat > bundle/ghostunnel/data.json <<'EOF'
{"spiffe_ids": ["spiffe://example.com/ns/default/sa/client", "spiffe://example.com/ns/prod/sa/api"],
 "ous": ["Ops"], "cns": ["admin"]}
EOF
tar czf bundle.tar.gz -C bundle .

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -c '
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(128); print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept(); c.close()
' > sinkport &
sink=$!
for _ in $(seq 50); do [ -s sinkport ] && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

run() { # label flags...
    local label=$1; shift
    "$bin" server --listen "127.0.0.1:$port" --target "127.0.0.1:$(cat sinkport)" \
        --keystore server-keystore.pem --cacert ca.pem --quiet=conns "$@" > log 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q 'listening for connections' log && break; sleep 0.1; done
    local before out conns after
    before=$(cpu_ticks "$pid")
    out=$(openssl s_time -connect "127.0.0.1:$port" -new -cert client.pem -key client.key \
        -CAfile ca.pem -time "$secs" 2>&1)
    after=$(cpu_ticks "$pid")
    conns=$(printf '%s\n' "$out" | awk '/connections in [0-9.]+s/ {print $1; exit}')
    kill "$pid"; wait "$pid" 2>/dev/null || true
    awk -v l="$label" -v c="$conns" -v t=$((after - before)) -v hz="$hz" \
        'BEGIN { printf "%-8s %6d handshakes, server CPU %.0f us per handshake\n", l, c, t / hz * 1e6 / c }'
}

acl=$(run acl --allow-cn=client)
policy=$(run policy --allow-policy=bundle.tar.gz --allow-query=data.ghostunnel.allow)
printf '%s\n%s\n' "$acl" "$policy"
a=$(printf '%s' "$acl" | awk '{print $(NF-3)}')
p=$(printf '%s' "$policy" | awk '{print $(NF-3)}')
awk -v a="$a" -v p="$p" 'BEGIN { printf "policy adds %.0f us of server CPU per handshake (%+.0f%%)\n", p - a, (p - a) / a * 100 }'
