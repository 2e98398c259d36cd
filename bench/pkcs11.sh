#!/usr/bin/env bash
# Handshake rate of a server whose key sits in a SoftHSM token, beside the same key in a file
# (README "PKCS#11"; not a test). For an ECDSA P-256 and an RSA-2048 server key it starts
# `ghostunnel server` with `--keystore`, then with `--cert` + `--pkcs11-module`, and runs
# CLIENTS parallel `openssl s_time -new` loops (full mutual-TLS handshakes, no resumption) for
# SECS seconds. Prints handshakes per second and the server's CPU milliseconds per handshake.
#
#   GT=target/release/ghostunnel SECS=10 CLIENTS=4 bench/pkcs11.sh
#
# Needs openssl and softhsm2. Loopback only; everything it starts is stopped at exit.
set -euo pipefail
GT=$(realpath "${GT:-target/release/ghostunnel}")
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-4}
MODULE=/usr/lib/softhsm/libsofthsm2.so
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export SOFTHSM2_CONF=$work/softhsm2.conf
mkdir tokens
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$work" >"$SOFTHSM2_CONF"

quiet() { "$@" >/dev/null 2>&1; }
quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
    -out ca.pem -subj /CN=bench-ca -days 2 -addext basicConstraints=critical,CA:TRUE
issue() { # name keyopts eku
    quiet openssl req -new $2 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%s\n' "$3" >"$1.ext"
    quiet openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -out "$1.crt" -extfile "$1.ext"
    quiet openssl pkcs8 -topk8 -nocrypt -in "$1.key" -out "$1.p8"
    cat "$1.crt" "$1.p8" >"$1.pem"
}
issue client "-newkey ec -pkeyopt ec_paramgen_curve:P-256" clientAuth
issue server-ec "-newkey ec -pkeyopt ec_paramgen_curve:P-256" serverAuth
issue server-rsa "-newkey rsa:2048" serverAuth
for k in ec rsa; do
    quiet softhsm2-util --init-token --free --label "$k" --so-pin 0000 --pin 1234
    quiet softhsm2-util --import "server-$k.p8" --token "$k" --label key --id 01 --pin 1234
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "full mutual-TLS handshakes (TLS 1.3), $CLIENTS openssl s_time clients, ${SECS}s per row"
echo "| server key | key source | handshakes/s | server CPU ms/handshake |"
echo "|---|---|---|---|"
for k in ec rsa; do
    for src in file SoftHSM; do
        port=$(free_port)
        args=(server --quiet=all --listen "127.0.0.1:$port" --target 127.0.0.1:9
            --cacert ca.pem --allow-cn client)
        if [ "$src" = file ]; then
            args+=(--keystore "server-$k.pem")
        else
            args+=(--cert "server-$k.crt" --pkcs11-module "$MODULE" --pkcs11-token-label "$k"
                --pkcs11-pin 1234)
        fi
        "$GT" "${args[@]}" >/dev/null 2>&1 &
        server=$!
        pids+=("$server")
        for _ in $(seq 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        before=$(ticks "$server")
        outs=()
        for c in $(seq "$CLIENTS"); do
            openssl s_time -connect "127.0.0.1:$port" -new -time "$SECS" -cert client.crt \
                -key client.key -CAfile ca.pem >"s_time.$c" 2>&1 &
            outs+=($!)
        done
        wait "${outs[@]}" || true
        after=$(ticks "$server")
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        total=$(cat s_time.* | awk '/connections in .* real seconds/ {n += $1} END {print n + 0}')
        name=$([ "$k" = ec ] && echo "ECDSA P-256" || echo "RSA 2048")
        awk -v n="$total" -v s="$SECS" -v t=$((after - before)) -v name="$name" -v src="$src" \
            'BEGIN { printf "| %s | %s | %.0f | %.2f |\n", name, src, n / s, (n ? t * 10 / n : 0) }'
    done
done
