#!/usr/bin/env bash
# regfsck benchmark (GitHub issue #6). One command, from anywhere in the repository:
#
#     bench/run.sh
#
# 1. builds `cargo build --release -p regfsck` (target/release/regfsck), retrying while the
#    workspace does not load (another engineer's half-written crate in checks/);
# 2. generates, or reuses, deterministic data roots with bench/gen_tree.py under
#    $DATA_DIR/links-<N>/{data,expected.json} for each N in $SIZES;
# 3. per tree: runs every command once untimed (warm cache, and the output the counts are
#    checked on), checks that regfsck's counts equal expected.json and the reference's
#    output, link for link (fails loudly otherwise), then times $RUNS rounds of:
#      reference   python3 crates/regfsck/tests/reference/registry_scan.py DATA --dry-run
#      find        find DATA -type f | wc -l
#      gc-private  docker-registry garbage-collect --dry-run CONFIG  (rootdirectory DATA/private,
#                  so its "links" column is private's links only)
#      regfsck-a   the two seed checks (orphan-layer-links fix on "*", orphan-index-children
#                  warn on private), --dry-run --format json
#      regfsck-b   every registered check but corrupt-blobs (fix where the check allows it,
#                  else warn) on "*", --dry-run --format json; ids from `regfsck checks`
#      regfsck-c   as (b), but orphan-index-children only on private, as an operator runs it
#                  (pull-through caches hold partial indexes legitimately; on them (b) reports
#                  ~15% of the links as orphaned children)
#    with /usr/bin/time -f '%e %M %U %S %I'; prints medians, peak RSS, the data read from
#    disk (%I: the page cache did not hold it), ratios and the targets;
# 4. strace -f -c of regfsck (a), (b), find and the reference on the smallest tree
#    (syscalls per link);
# 5. bench/hash.sh (sha256sum vs corrupt-blobs), unless HASH=0.
#
# Environment:
#   SIZES="100000 1000000"  layer links per tree          RUNS=3       timed rounds
#   COLD=1      sync; echo 3 > /proc/sys/vm/drop_caches before every timed run (root)
#   DATA_DIR=/work/bench-data   trees and results         REGEN=1      regenerate the trees
#   TOOLS="reference find gc-private regfsck-a regfsck-b regfsck-c" which commands to time
#   STRACE=1    strace on the smallest tree (0: skip)     HASH=1       run bench/hash.sh
#   SKIP_BUILD=1  use the existing target/release/regfsck; REGFSCK_BIN=path: time that binary
#   CHECK=0     warm up only $TOOLS and skip the count checks (for extra timings, e.g.
#               SIZES=1000000 TOOLS=regfsck-a RUNS=5 CHECK=0 STRACE=0 HASH=0 bench/run.sh)
# Outputs: $DATA_DIR/results/<timestamp>/ (timings.tsv, table.md, outputs of every command,
# and the regfsck binary that was timed: a copy, since others share target/).
# Needs: python3, /usr/bin/time, strace, docker-registry (apt-get installs them if missing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
SIZES=${SIZES:-"100000 1000000"}
RUNS=${RUNS:-3}
COLD=${COLD:-0}
DATA_DIR=${DATA_DIR:-/work/bench-data}
TOOLS=${TOOLS:-"reference find gc-private regfsck-a regfsck-b regfsck-c"}
STRACE=${STRACE:-1}
CHECK=${CHECK:-1}
HASH=${HASH:-1}
BIN="$REPO/target/release/regfsck"
REF="$REPO/crates/regfsck/tests/reference/registry_scan.py"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$DATA_DIR/results/$STAMP"
mkdir -p "$OUT"
TSV="$OUT/timings.tsv"
LOG="$OUT/log.txt"
exec > >(tee -a "$LOG") 2>&1

say() { printf '\n=== %s\n' "$*"; }
die() { printf '\n!!! %s\n' "$*" >&2; exit 1; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

need() { # command, debian package
    command -v "$1" >/dev/null 2>&1 && return
    echo "installing $2 ..."
    apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; } \
        || die "cannot install $2"
}
[ -x /usr/bin/time ] || need /usr/bin/time time
need strace strace
need docker-registry docker-registry
need python3 python3

say "machine"
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "nproc: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "memory: $(free -m | awk '/^Mem:/ {print $2 " MiB total, " $7 " MiB available"}')"
echo "kernel: $(uname -r); fs of $DATA_DIR: $(df -T "$DATA_DIR" | awk 'NR==2 {print $2 " on " $1}')"
echo "python3: $(python3 --version 2>&1); docker-registry: $(docker-registry --version 2>&1 | head -1)"
echo "commit: $(git -C "$REPO" log -1 --format='%h %s' 2>/dev/null || echo '?')$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo ' (work tree has uncommitted changes: others are editing)')"
echo "load average before: $(load)"
echo "SIZES=$SIZES RUNS=$RUNS COLD=$COLD results: $OUT"

if [ "$COLD" = 1 ]; then
    if ! (sync && echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then
        die "COLD=1: dropping the page cache is not permitted here (echo 3 > /proc/sys/vm/drop_caches failed); rerun without COLD=1"
    fi
    echo "cold cache: page cache dropped before every timed run"
fi

if [ -n "${REGFSCK_BIN:-}" ]; then
    BIN=$REGFSCK_BIN  # e.g. the copy a previous run timed
elif [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "cargo build --release -p regfsck"
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        if cargo build --release -p regfsck 2>"$OUT/build.err"; then break; fi
        tail -5 "$OUT/build.err"
        [ "$attempt" = 10 ] && die "the build failed 10 times (see $OUT/build.err)"
        echo "build failed (another engineer's crate half-written?); retrying in 60 s ($attempt/10)"
        sleep 60
    done
fi
[ -x "$BIN" ] || die "$BIN is missing"
# Others share target/: time a private copy, so a rebuild mid-benchmark cannot change it.
cp "$BIN" "$OUT/regfsck"
BIN="$OUT/regfsck"
echo "binary: $BIN ($(stat -c %s "$BIN") bytes, sha256 $(sha256sum "$BIN" | cut -c1-12))"
"$BIN" checks --format json > "$OUT/checks.json"
echo "checks: $(python3 -c 'import json,sys; print(" ".join(c["id"]+"("+c["max_level"]+")" for c in json.load(open(sys.argv[1]))))' "$OUT/checks.json")"
echo "policy b: $(python3 bench/report.py policies "$OUT/checks.json" "$OUT")"
printf '#size\ttool\tlinks\trun\telapsed_s\tmaxrss_kb\tuser_s\tsys_s\n' > "$TSV"

# cmd_for TOOL DATA: the command line (a bash string) for one tool.
cmd_for() {
    local data=$1 tool=$2
    case $tool in
        reference) echo "python3 '$REF' '$data' --dry-run" ;;
        find) echo "find '$data' -type f | wc -l" ;;
        gc-private) echo "docker-registry garbage-collect --dry-run '$OUT/gc-$(basename "$(dirname "$data")").yml'" ;;
        regfsck-a) echo "'$BIN' run a --config '$OUT/policy-a.toml' --root '$data' --dry-run --format json" ;;
        regfsck-b) echo "'$BIN' run b --config '$OUT/policy-b.toml' --root '$data' --dry-run --format json" ;;
        regfsck-c) echo "'$BIN' run c --config '$OUT/policy-c.toml' --root '$data' --dry-run --format json" ;;
        *) die "unknown tool $tool" ;;
    esac
}

# run_once TOOL DATA OUTFILE: runs it, checks the exit code; stdout to OUTFILE.
run_once() {
    local tool=$1 data=$2 out=$3 rc=0 wait
    for wait in $(seq 1 60); do
        rc=0
        bash -c "$(cmd_for "$data" "$tool")" > "$out" 2> "$out.err" || rc=$?
        [ "$rc" = 4 ] || break
        echo "  $tool: another regfsck run holds $data/.regfsck/lock (someone else is using this tree); waiting 30 s"
        sleep 30
    done
    case $tool:$rc in
        regfsck-a:[01] | regfsck-[bc]:[013] | reference:0 | find:0 | gc-private:0) ;;
        *) tail -5 "$out.err"; die "$tool exited with $rc (output in $out, $out.err)" ;;
    esac
    [ "$tool:$rc" = regfsck-b:3 ] && echo "note: regfsck (b) exited 3: scan problems (listed by the count check)"
    return 0
}

SMALLEST=$(tr ' ' '\n' <<<"$SIZES" | sort -n | head -1)
for N in $SIZES; do
    TREE="$DATA_DIR/links-$N"
    DATA="$TREE/data"
    if [ "${REGEN:-0}" = 1 ] || [ ! -f "$TREE/.complete" ] || [ ! -f "$TREE/expected.json" ]; then
        say "generating $N links -> $TREE"
        rm -rf "$DATA"
        python3 bench/gen_tree.py --links "$N" --out "$TREE"
    else
        say "reusing $TREE (generated in $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["generation_seconds"])' "$TREE/expected.json") s; REGEN=1 regenerates)"
    fi
    PRIVATE_LINKS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["registries"]["private"]["layer_links"])' "$TREE/expected.json")
    printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n' \
        "$DATA/private" > "$OUT/gc-links-$N.yml"

    WARM="reference find gc-private regfsck-a regfsck-b regfsck-c"
    [ "$CHECK" = 1 ] || WARM=$TOOLS
    say "$N links: untimed run of each command (warm-up$([ "$CHECK" = 1 ] && echo ', and the outputs checked'))"
    for tool in $WARM; do
        t0=$(date +%s.%N)
        run_once "$tool" "$DATA" "$OUT/$tool-$N.out"
        printf '  %-11s %6.1f s\n' "$tool" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')"
    done
    if [ "$CHECK" = 1 ]; then
        echo "find: $(cat "$OUT/find-$N.out") files; gc-private: $(grep -c 'eligible for deletion' "$OUT/gc-private-$N.out" || true) blobs eligible for deletion"
        say "$N links: counts"
        python3 bench/report.py check "$TREE/expected.json" "$OUT/reference-$N.out" "$OUT/regfsck-a-$N.out" "$OUT/regfsck-b-$N.out" \
            || die "COUNTS DO NOT MATCH at $N links (outputs in $OUT). If another run modified the tree, REGEN=1."
    else
        echo "CHECK=0: counts not checked"
    fi

    say "$N links: $RUNS timed rounds (load average $(load))"
    for r in $(seq 1 "$RUNS"); do
        echo "round $r, load average $(load)"
        for tool in $TOOLS; do
            links=$N
            [ "$tool" = gc-private ] && links=$PRIVATE_LINKS
            for wait in $(seq 1 60); do
                [ "$COLD" = 1 ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
                rc=0
                /usr/bin/time -f '%e %M %U %S %I' -o "$OUT/time.tmp" \
                    bash -c "$(cmd_for "$DATA" "$tool")" > /dev/null 2> "$OUT/$tool-$N.timed.err" || rc=$?
                [ "$rc" = 4 ] || break
                echo "  $tool: another regfsck run holds the tree's lock (someone else is using it); waiting 30 s"
                sleep 30
            done
            case $tool:$rc in
                regfsck-?:[013] | *:0) ;;
                *) die "$tool exited with $rc during a timed run" ;;
            esac
            read -r el rss us sy inblocks < <(grep -E '^[0-9.]+ [0-9]+ ' "$OUT/time.tmp" | tail -1)
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$N" "$tool" "$links" "$r" "$el" "$rss" "$us" "$sy" "$inblocks" >> "$TSV"
            printf '  %-11s %8.2f s %8.1f MiB %7.2f GB read from disk\n' "$tool" "$el" \
                "$(awk -v r="$rss" 'BEGIN {print r / 1024}')" "$(awk -v b="$inblocks" 'BEGIN {print b * 512 / 1e9}')"
        done
    done
    echo "load average after: $(load)"

    if [ "$STRACE" = 1 ] && [ "$N" = "$SMALLEST" ]; then
        say "$N links: strace -f -c (syscalls per link; warm cache)"
        for tool in regfsck-a regfsck-b find reference; do
            bash -c "strace -f -c -o '$OUT/strace-$tool-$N.txt' $(cmd_for "$DATA" "$tool")" > /dev/null 2>&1 || true
            python3 bench/report.py strace "$tool" "$N" "$OUT/strace-$tool-$N.txt"
        done | tee "$OUT/strace-$N.txt"
    fi
done

say "results ($( [ "$COLD" = 1 ] && echo cold || echo warm ) cache, median of $RUNS; links of gc-private = private's only)"
python3 bench/report.py table "$TSV"
python3 bench/report.py table "$TSV" --md > "$OUT/table.md"
echo
echo "markdown table: $OUT/table.md; raw timings: $TSV; log: $LOG"

if [ "$HASH" = 1 ]; then
    say "hashing (bench/hash.sh)"
    SKIP_BUILD=1 BIN="$BIN" DATA_DIR="$DATA_DIR" RUNS="$RUNS" OUT="$OUT" bench/hash.sh
fi
