#!/usr/bin/env bash
# Hashing throughput: sha256sum vs regfsck's corrupt-blobs check (GitHub issue #6).
#
#     bench/hash.sh            (bench/run.sh calls it at the end unless HASH=0)
#
# Generates (or reuses) $DATA_DIR/hash-<K>x<M>MiB: one registry with K random blobs of M MiB
# (HASH_BLOBS=32, HASH_MIB=10), all linked from one image. Warm cache (each command runs once
# untimed first), RUNS=3 timed runs of:
#   sha256sum      sha256sum FILES                    (one process, one core)
#   sha256sum-xP   xargs -P$(nproc) -n1 sha256sum     (one process per core)
#   corrupt-blobs  regfsck with only corrupt-blobs at warn, --dry-run --format json
# and prints MB/s (10^6 bytes per wall second) and MB per CPU-second (per core: bytes divided
# by user+sys time). Skips with a message when corrupt-blobs is not registered.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
DATA_DIR=${DATA_DIR:-/work/bench-data}
RUNS=${RUNS:-3}
HASH_BLOBS=${HASH_BLOBS:-32}
HASH_MIB=${HASH_MIB:-10}
OUT=${OUT:-$DATA_DIR/results/hash-$(date -u +%Y%m%dT%H%M%SZ)}
BIN=${BIN:-$REPO/target/release/regfsck}
mkdir -p "$OUT"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p regfsck
fi
if ! "$BIN" checks --format json | grep -q '"corrupt-blobs"'; then
    echo "hash.sh: the corrupt-blobs check is not registered in $BIN yet: skipped"
    exit 0
fi
TREE="$DATA_DIR/hash-${HASH_BLOBS}x${HASH_MIB}MiB"
if [ ! -f "$TREE/.complete" ]; then
    rm -rf "$TREE/data"
    python3 bench/gen_tree.py --out "$TREE" --hash-blobs "$HASH_BLOBS" --hash-blob-mib "$HASH_MIB"
fi
DATA="$TREE/data"
python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["files"]))' "$TREE/expected.json" > "$OUT/hash-files.txt"
BYTES=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$TREE/expected.json")
cat > "$OUT/policy-hash.toml" <<'EOF'
root = "/nonexistent"
[policies.hash]
description = "corrupt-blobs only"
[policies.hash.registries."*"]
corrupt-blobs = "warn"
EOF

declare -A CMD=(
    [sha256sum]="xargs -a '$OUT/hash-files.txt' sha256sum"
    [sha256sum-xP]="xargs -a '$OUT/hash-files.txt' -P$(nproc) -n1 sha256sum"
    [corrupt-blobs]="'$BIN' run hash --config '$OUT/policy-hash.toml' --root '$DATA' --dry-run --format json"
)
TOOLS="sha256sum sha256sum-xP corrupt-blobs"
echo "hash tree: $TREE, $(wc -l < "$OUT/hash-files.txt") blob files, $BYTES bytes; nproc $(nproc); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for tool in $TOOLS; do  # warm-up, and the outputs checked
    bash -c "${CMD[$tool]}" > "$OUT/$tool.out" 2>/dev/null || true
done
python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
bad = 0
for line in open(f"{out}/sha256sum.out"):
    digest, path = line.split(maxsplit=1)
    if os.path.basename(os.path.dirname(path.strip())) != digest:
        bad += 1
j = json.load(open(f"{out}/corrupt-blobs.out"))
c = j["summary"]["registries"]["private"]["checks"]["corrupt-blobs"]["counters"]
print(f"sha256sum: {bad} mismatching digests; regfsck corrupt-blobs counters: {json.dumps(c)}")
if bad or c.get("corrupt", 0):
    sys.exit("hash.sh: digests do not match (the tree is not what gen_tree.py wrote)")
EOF
TSV="$OUT/hash-timings.tsv"
: > "$TSV"
for r in $(seq 1 "$RUNS"); do
    for tool in $TOOLS; do
        /usr/bin/time -f '%e %M %U %S' -o "$OUT/time.tmp" bash -c "${CMD[$tool]}" > /dev/null 2>&1 || true
        read -r el rss us sy < <(grep -E '^[0-9.]+ [0-9]+ ' "$OUT/time.tmp" | tail -1)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$r" "$el" "$rss" "$us" "$sy" >> "$TSV"
    done
done
python3 - "$TSV" "$BYTES" <<'EOF' | tee "$OUT/hash-table.md"
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    tool, run, el, rss, us, sy = line.split("\t")
    rows[tool].append((float(el), int(rss), float(us) + float(sy)))
mb = int(sys.argv[2]) / 1e6
print(f"| tool | MB hashed | median s | cpu s | MB/s | MB per CPU-second (per core) | peak RSS MiB |")
print("|---|---|---|---|---|---|---|")
for tool, v in rows.items():
    el = statistics.median(x[0] for x in v)
    cpu = statistics.median(x[2] for x in v)
    rss = max(x[1] for x in v) / 1024
    print(f"| {tool} | {mb:.0f} | {el:.3f} | {cpu:.3f} | {mb / el:.0f} | {mb / cpu:.0f} | {rss:.1f} |")
EOF
