#!/usr/bin/env bash
# Quickstart: builds ghostunnel, makes INSECURE demo certificates, and carries one HTTP request
# through a client -> server tunnel on loopback:
#
#   curl -> ghostunnel client (localhost:18001) => mutual TLS => ghostunnel server
#        (localhost:18002) -> python3 http.server (localhost:18003)
#
# The certificates in demo/certs are throwaway keys made by this script for the demo only.
# NEVER use them for anything real.
set -euo pipefail
cd "$(dirname "$0")/.."
CERTS=demo/certs
CLIENT_PORT=${CLIENT_PORT:-18001}
SERVER_PORT=${SERVER_PORT:-18002}
BACKEND_PORT=${BACKEND_PORT:-18003}

if [ -n "${GHOSTUNNEL:-}" ]; then
    BIN=$GHOSTUNNEL # a binary built elsewhere, e.g. by packaging/build-static.sh
else
    echo "==> building (cargo build --release)"
    cargo build --release --quiet
    BIN=target/release/ghostunnel
fi

echo "==> making INSECURE demo certificates in $CERTS"
mkdir -p "$CERTS"
cd "$CERTS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -keyout ca.key -out ca.pem -subj "/CN=INSECURE ghostunnel demo CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
issue() { # name subject extensions
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
        -out "$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    cat "$1.crt" "$1.key" > "$1.pem"
    rm -f "$1.csr" "$1.ext"
}
issue server "/CN=server/OU=INSECURE demo" \
    "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue client "/CN=client/OU=INSECURE demo" "extendedKeyUsage=clientAuth"
cd - >/dev/null

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p demo/www
echo "hello through ghostunnel" > demo/www/index.txt
python3 -m http.server "$BACKEND_PORT" --bind 127.0.0.1 --directory demo/www >/dev/null 2>&1 &
pids+=($!)
"$BIN" server --listen "localhost:$SERVER_PORT" --target "localhost:$BACKEND_PORT" \
    --keystore "$CERTS/server.pem" --cacert "$CERTS/ca.pem" --allow-cn client &
pids+=($!)
"$BIN" client --listen "localhost:$CLIENT_PORT" --target "localhost:$SERVER_PORT" \
    --keystore "$CERTS/client.pem" --cacert "$CERTS/ca.pem" &
pids+=($!)

for _ in $(seq 50); do
    curl -sf "http://localhost:$CLIENT_PORT/index.txt" >/dev/null 2>&1 && break
    sleep 0.1
done
echo "==> curl http://localhost:$CLIENT_PORT/index.txt"
body=$(curl -sf --max-time 5 "http://localhost:$CLIENT_PORT/index.txt")
echo "$body"
[ "$body" = "hello through ghostunnel" ]
echo "==> OK: the request crossed the mutual-TLS tunnel"
