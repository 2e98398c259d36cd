#!/usr/bin/env bash
# Scans a server of ours, and of the reference binary when one is given, with testssl.sh on the
# same certificate, and prints the "NOT ok" and "VULNERABLE" lines of each and the difference.
#
#   tools/testssl-compare.sh OURS_BINARY [REFERENCE_BINARY] [extra server flags...]
#
# Default server flags: --allow-all (client certificates required, as in production); pass
# e.g. --disable-authentication instead to scan without them. Loopback only; each scan takes
# about 10 minutes. Needs testssl.sh (apt-get install testssl.sh) and openssl. A development
# instrument, not part of CI.
set -euo pipefail
ours=$1
ref=${2:-}
shift $(( $# >= 2 ? 2 : 1 ))
flags=("$@")
[ ${#flags[@]} -eq 0 ] && flags=(--allow-all)
command -v testssl >/dev/null || { echo "testssl.sh is required (apt-get install testssl.sh)" >&2; exit 1; }

dir=$(mktemp -d /tmp/gt-testssl-XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 30 -subj /CN=ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
    -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 30 \
    -extfile server.ext -out server.crt 2>/dev/null
cat server.crt server.key > server.pem

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # label binary -> prints the port
    local p
    p=$(port)
    "$2" server --listen "127.0.0.1:$p" --target "127.0.0.1:$(port)" --keystore server.pem \
        --cacert ca.pem --quiet all "${flags[@]}" > "$1.log" 2>&1 &
    pids+=($!)
    echo "$p" > "$1.port"
}

scan() { # label
    testssl --color 0 --warnings batch --ip one "127.0.0.1:$(cat "$1.port")" > "$1.txt" 2>&1 || true
    grep -a 'NOT ok\|VULNERABLE' "$1.txt" | sed 's/  */ /g' > "$1.bad" || true
}

start ours "$ours"
[ -n "$ref" ] && start reference "$ref"
sleep 1
scan ours &
w=($!)
if [ -n "$ref" ]; then
    scan reference &
    w+=($!)
fi
wait "${w[@]}"
for label in ours ${ref:+reference}; do
    echo "== $label: $(wc -l < "$label.bad") NOT ok / VULNERABLE line(s)"
    sed 's/^/   /' "$label.bad"
done
if [ -n "$ref" ]; then
    echo "== lines ours has and the reference does not:"
    comm -23 <(sort ours.bad) <(sort reference.bad) | sed 's/^/   /'
fi
