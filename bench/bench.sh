#!/usr/bin/env bash
# Benchmark (not a test): every figure of README "Performance" through a ghostunnel pair, a
# stunnel4 pair and plain TCP in one run (bench/bench.rs). Loopback only; every load is bounded.
#
#   bench/bench.sh                    # 5 repetitions, 5,000 idle connections (~4 minutes)
#   bench/bench.sh --quick            # the CI variant: 3 short repetitions
#   bench/bench.sh --quick --check    # ... and fail on a large regression of a ratio to stunnel4
#   bench/bench.sh --gt-b /path/to/other/ghostunnel   # adds a column for a second build
#   bench/bench.sh --reference /path/to/go/ghostunnel --haproxy
#                                     # optional columns: the Go reference, HAProxy (mutual-TLS
#                                     # pair in tcp mode), with ratio columns
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || missing+=(stunnel4)
command -v wrk >/dev/null || missing+=(wrk)
command -v openssl >/dev/null || missing+=(openssl)
# The plaintext relay pair that bulk throughput is compared with.
command -v socat >/dev/null || missing+=(socat)
case " $* " in
*" --haproxy "*) command -v haproxy >/dev/null || missing+=(haproxy) ;;
esac
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (apt-get)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --quiet --bin ghostunnel --example bench
exec target/release/examples/bench "$@"
