#!/usr/bin/env bash
# Benchmark (not a test): throughput, new connections per second and RSS per idle connection
# through a client -> server tunnel pair, beside plain TCP and stunnel4 doing the same job, in
# the same run. Everything stays on 127.0.0.1; every load is bounded in size or time.
#
#   bench/bench.sh            # MIB=256 per stream, 5 s connection runs, 200 idle connections
#   MIB=64 SECS=2 IDLE=100 bench/bench.sh
#   GT_B=/path/to/other/ghostunnel bench/bench.sh   # adds a row for a second build
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${MIB:-256}
SECS=${SECS:-5}
IDLE=${IDLE:-200}
WORK=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

if ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; then
    echo "installing stunnel4 (apt-get)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 >/dev/null
fi
STUNNEL=$(command -v stunnel4 || command -v stunnel)

cargo build --release --quiet --bin ghostunnel --example loadgen
GT=target/release/ghostunnel
LOAD=target/release/examples/loadgen

# Throwaway certificates for this run only.
(
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -keyout ca.key \
        -out ca.pem -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null
    for who in server client; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $who.key \
            -out $who.csr -subj /CN=$who 2>/dev/null
        if [ $who = server ]; then
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext
        else
            printf 'extendedKeyUsage=clientAuth\n' > ext
        fi
        openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
            -extfile ext -out $who.crt 2>/dev/null
        cat $who.crt $who.key > $who.pem
    done
)

SINK=19003
$LOAD sink $SINK & pids+=($!)
$GT server --quiet=conns --listen localhost:19002 --target localhost:$SINK \
    --keystore "$WORK/server.pem" --cacert "$WORK/ca.pem" --allow-cn client >/dev/null & pids+=($!)
GT_SERVER=$!
$GT client --quiet=conns --listen localhost:19001 --target localhost:19002 \
    --keystore "$WORK/client.pem" --cacert "$WORK/ca.pem" >/dev/null & pids+=($!)
GT_CLIENT=$!
if [ -n "${GT_B:-}" ]; then
    "$GT_B" server --quiet=conns --listen localhost:19022 --target localhost:$SINK \
        --keystore "$WORK/server.pem" --cacert "$WORK/ca.pem" --allow-cn client >/dev/null &
    pids+=($!)
    GTB_SERVER=$!
    "$GT_B" client --quiet=conns --listen localhost:19021 --target localhost:19022 \
        --keystore "$WORK/client.pem" --cacert "$WORK/ca.pem" >/dev/null & pids+=($!)
    GTB_CLIENT=$!
fi

cat > "$WORK/st-server.conf" <<CONF
foreground = yes
pid =
debug = 3
[srv]
accept = 127.0.0.1:19012
connect = 127.0.0.1:$SINK
cert = $WORK/server.crt
key = $WORK/server.key
CAfile = $WORK/ca.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.2
ciphers = ECDHE+AESGCM
CONF
cat > "$WORK/st-client.conf" <<CONF
foreground = yes
pid =
debug = 3
[cli]
client = yes
accept = 127.0.0.1:19011
connect = 127.0.0.1:19012
cert = $WORK/client.crt
key = $WORK/client.key
CAfile = $WORK/ca.pem
verifyChain = yes
checkHost = localhost
sslVersionMin = TLSv1.2
CONF
$STUNNEL "$WORK/st-server.conf" 2>/dev/null & pids+=($!)
ST_SERVER=$!
$STUNNEL "$WORK/st-client.conf" 2>/dev/null & pids+=($!)
ST_CLIENT=$!
sleep 1

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
idle_cost() { # addr pid pid -> KiB per idle connection (both proxy processes)
    local before after
    before=$(( $(rss_kib "$2") + $(rss_kib "$3") ))
    $LOAD idle "$1" "$IDLE" 4 >/dev/null & local load=$!
    sleep 3
    after=$(( $(rss_kib "$2") + $(rss_kib "$3") ))
    wait $load
    echo "scale=1; ($after - $before) / $IDLE" | bc 2>/dev/null || echo $(( (after - before) / IDLE ))
}

row() { # name addr pid pid
    local one eight rate idle="-"
    one=$($LOAD throughput "$2" 1 "$MIB")
    eight=$($LOAD throughput "$2" 8 "$(( MIB / 8 > 0 ? MIB / 8 : 1 ))")
    rate=$($LOAD connrate "$2" "$SECS")
    [ -n "${3:-}" ] && idle=$(idle_cost "$2" "$3" "$4")
    printf '%-28s %12s %12s %12s %16s\n' "$1" "$one" "$eight" "$rate" "$idle"
}

echo
echo "ghostunnel $($GT --version 2>&1 | head -1); $($STUNNEL -version 2>&1 | grep -m1 -i "^stunnel" || echo stunnel)"
echo "$(nproc) cores; ${MIB} MiB per single stream, 8 streams x $(( MIB / 8 )) MiB; ${SECS} s of new connections; ${IDLE} idle connections"
echo
printf '%-28s %12s %12s %12s %16s\n' "path" "1 stream" "8 streams" "conns/s" "KiB/idle conn"
printf '%-28s %12s %12s %12s %16s\n' "" "MB/s" "MB/s" "" "(both proxies)"
row "plain TCP (no proxy)" 127.0.0.1:$SINK
row "ghostunnel client->server" 127.0.0.1:19001 $GT_CLIENT $GT_SERVER
[ -n "${GT_B:-}" ] && row "ghostunnel (GT_B)" 127.0.0.1:19021 $GTB_CLIENT $GTB_SERVER
row "stunnel4 client->server" 127.0.0.1:19011 $ST_CLIENT $ST_SERVER
