#!/usr/bin/env bash
# Fuzz every target (or those named) for a bounded time each, then print executions per
# target. Not run in CI.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s; targets: manifest link policy digest)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz passes nightly-only flags to
# rustc (-Zsanitizer, sanitizer-coverage); RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. FUZZ_SANITIZER=none runs without AddressSanitizer (default: address).
# FUZZ_JOBS=N runs N libFuzzer workers per target (default 1).
#
# New interesting inputs go to fuzz/corpus/<target>/ (ignored by git); the committed seeds in
# fuzz/seeds/<target>/ are read, never written. Crashes go to fuzz/artifacts/<target>/; reproduce
# one with:  RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-…
set -euo pipefail

cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest link policy digest)
sanitizer=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR # fuzz/target, never the workspace's

command -v cargo-fuzz >/dev/null || { echo "run.sh: cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 2; }

cargo fuzz build --sanitizer "$sanitizer" >&2

mkdir -p logs
declare -A runs took status
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="logs/$t.log"
    dict=()
    [ -f "dicts/$t.dict" ] && dict=("-dict=dicts/$t.dict")
    echo "== $t: ${secs}s" >&2
    start=$(date +%s)
    set +e
    cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -jobs="$jobs" -workers="$jobs" "${dict[@]}" >"$log" 2>&1
    rc=$?
    set -e
    took[$t]=$(( $(date +%s) - start ))
    # With -jobs>1 each worker logs to fuzz-<n>.log in the current directory.
    if [ "$jobs" -gt 1 ]; then cat fuzz-*.log >>"$log" 2>/dev/null && rm -f fuzz-*.log; fi
    runs[$t]=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
    if [ "$rc" -eq 0 ]; then status[$t]=ok; else status[$t]="FAILED (exit $rc, see fuzz/$log)"; fi
done

printf '\n%-10s %12s %8s %10s  %s\n' target executions seconds exec/s result
fail=0
for t in "${targets[@]}"; do
    s=${took[$t]}
    printf '%-10s %12s %8s %10s  %s\n' "$t" "${runs[$t]}" "$s" "$(( ${runs[$t]} / (s > 0 ? s : 1) ))" "${status[$t]}"
    [ "${status[$t]}" = ok ] || fail=1
done
ls artifacts/*/crash-* artifacts/*/timeout-* artifacts/*/oom-* 2>/dev/null && fail=1
exit $fail
