#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (SECONDS_PER_TARGET, default 60). Needs cargo-fuzz
# (`cargo install cargo-fuzz`); the stable toolchain is told to accept the sanitizer flags with
# RUSTC_BOOTSTRAP=1, since no nightly toolchain is available here. Exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")"
secs=${SECONDS_PER_TARGET:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for target in cli uri_pattern keystore jceks workload_update policy_bundle; do
    echo "== fuzzing $target for ${secs}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048
done
