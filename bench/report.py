#!/usr/bin/env python3
"""Helpers for bench/run.sh and bench/hash.sh (policies, count checks, tables).

    report.py policies CHECKS_JSON OUTDIR       writes policy-a.toml, policy-b.toml
    report.py check EXPECTED REF_TXT A_JSON B_JSON
                                               compares the counts; exit 1 on a mismatch
    report.py table TIMINGS_TSV [--md]         medians, peak RSS, ratios, targets
    report.py strace NAME LINKS STRACE_OUT     one line: syscalls, syscalls per link, top 5
"""

import json
import re
import statistics
import sys
from collections import Counter, defaultdict

POLICY_HEAD = """# written by bench/run.sh
root = "/nonexistent"                 # run.sh passes --root
[registries."*"]
max-removals = 100000000              # the bench measures the would-remove path, not the guard
max-removal-share = 0.9
"""


def policies(checks_json, outdir):
    checks = json.load(open(checks_json))
    ids = {c["id"]: c["max_level"] for c in checks}
    missing = [c for c in ("orphan-layer-links", "orphan-index-children") if c not in ids]
    if missing:
        sys.exit(f"seed checks not registered: {missing}")
    with open(f"{outdir}/policy-a.toml", "w") as f:
        f.write(POLICY_HEAD)
        f.write('\n[policies.a]\ndescription = "the two seed checks, as the shipped policy"\n'
                '[policies.a.registries."*"]\norphan-layer-links = "fix"\n'
                '[policies.a.registries.private]\norphan-index-children = "warn"\n')
    enabled = []
    levels = {cid: ("fix" if ids[cid] == "fix" else "warn") for cid in sorted(ids) if cid != "corrupt-blobs"}
    with open(f"{outdir}/policy-b.toml", "w") as f:
        f.write(POLICY_HEAD)
        f.write('\n[policies.b]\ndescription = "every registered check but corrupt-blobs"\n'
                '[policies.b.registries."*"]\n')
        for cid, level in levels.items():
            f.write(f'{cid} = "{level}"\n')
            enabled.append(f"{cid}={level}")
    # (c): as (b), with the index check where the brief's operators run it.
    with open(f"{outdir}/policy-c.toml", "w") as f:
        f.write(POLICY_HEAD)
        f.write('\n[policies.c]\ndescription = "as b, orphan-index-children on private only"\n'
                '[policies.c.registries."*"]\n')
        for cid, level in levels.items():
            if cid != "orphan-index-children":
                f.write(f'{cid} = "{level}"\n')
        f.write('[policies.c.registries.private]\norphan-index-children = "warn"\n')
    print(" ".join(enabled))


# ---- count checks ---------------------------------------------------------------------------

REF_LAYER = re.compile(r"^(?:\[DRY RUN\] )?\[([^/\]]+)/(.+)\] removing orphaned layer link: ([0-9a-f]{12})\.\.\.$")
REF_INDEX = re.compile(r"^WARNING \[([^/\]]+)/(.+)\] ORPHAN INDEX: ([0-9a-f]{12}) references missing child "
                       r"([0-9a-f]{12}) \((.*?), (blob-data-present|blob-data-gone)\)")
REF_LSUM = re.compile(r"Layer scan: checked (\d+) links, removed (\d+) orphaned\.")
REF_ISUM = re.compile(r"Index scan: inspected (\d+) image indexes, found (\d+) orphaned children\.")


class Checker:
    def __init__(self):
        self.bad = 0
        self.n = 0

    def eq(self, what, got, want, soft=False):
        self.n += 1
        ok = got == want
        if not ok and not soft:
            self.bad += 1
        mark = "ok  " if ok else ("note" if soft else "FAIL")
        print(f"  [{mark}] {what}: {got}" + ("" if ok else f" (expected {want})"))
        return ok


def parse_reference(path):
    layers, index = [], []
    lsum = isum = None
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if m := REF_LAYER.match(line):
            layers.append(m.groups())
        elif m := REF_INDEX.match(line):
            index.append(m.groups())
        if m := REF_LSUM.search(line):
            lsum = tuple(map(int, m.groups()))
        if m := REF_ISUM.search(line):
            isum = tuple(map(int, m.groups()))
    return layers, index, lsum, isum


def check(expected_path, ref_path, a_path, b_path):
    exp = json.load(open(expected_path))
    regs, tot = exp["registries"], exp["totals"]
    c = Checker()
    print("reference (registry_scan.py --dry-run) vs expected.json:")
    layers, index, lsum, isum = parse_reference(ref_path)
    if lsum is None or isum is None:
        print("  [FAIL] the reference's summary lines are missing")
        c.bad += 1
        lsum, isum = lsum or (-1, -1), isum or (-1, -1)
    c.eq("links checked", lsum[0], tot["layer_links"])
    c.eq("orphaned layer links (summary)", lsum[1], tot["orphan_layer_links"])
    c.eq("orphaned layer links (per-link lines)", len(layers), tot["orphan_layer_links"])
    per_reg = Counter(l[0] for l in layers)
    for r in sorted(regs):
        c.eq(f"  {r}: orphaned layer links", per_reg.get(r, 0), regs[r]["orphan_layer_links"])
    c.eq("indexes inspected on private (indexes with mediaType)", isum[0], tot["indexes_private_reference_visible"])
    c.eq("orphaned index children (summary)", isum[1], tot["orphan_index_children_reference_visible"])
    c.eq("orphaned index children (lines)", len(index), tot["orphan_index_children_reference_visible"])
    c.eq("  of which child blob present", sum(1 for i in index if i[5] == "blob-data-present"),
         regs["private"]["reference_visible_child_blob_present"])

    print("regfsck (a) seed checks, --dry-run --format json, vs expected.json and the reference:")
    a = json.load(open(a_path))
    c.eq("problems", len(a["problems"]), 0)
    sregs = a["summary"]["registries"]
    for r in sorted(regs):
        ol = sregs.get(r, {}).get("checks", {}).get("orphan-layer-links", {}).get("counters", {})
        c.eq(f"{r}: links checked", ol.get("links_checked"), regs[r]["layer_links"])
        c.eq(f"{r}: orphaned layer links", ol.get("orphaned"), regs[r]["orphan_layer_links"])
        c.eq(f"{r}: fixes refused", sregs.get(r, {}).get("fix_refused"), None)
    oi = sregs["private"]["checks"].get("orphan-index-children", {}).get("counters", {})
    c.eq("private: indexes inspected (all three kinds)", oi.get("indexes_inspected"), regs["private"]["indexes"])
    c.eq("private: orphaned index children", oi.get("orphaned_children"), regs["private"]["orphan_index_children"])
    fl = [f for f in a["findings"] if f["check"] == "orphan-layer-links"]
    fi = [f for f in a["findings"] if f["check"] == "orphan-index-children"]
    c.eq("layer findings that would be removed", sum(1 for f in fl if f["action"] == "would-remove"),
         tot["orphan_layer_links"])
    c.eq("layer findings with the blob dir left (no data)",
         sum(1 for f in fl if f["details"].get("blob_dir") == "present"),
         sum(r["orphan_layer_links_blob_dir_present"] for r in regs.values()))
    c.eq("index-child findings with child blob present",
         sum(1 for f in fi if f["details"].get("child_blob") == "present"), regs["private"]["child_blob_present"])
    c.eq("index-child findings on registries other than private",
         sum(1 for f in fi if f["registry"] != "private"), 0)
    # Same findings as the reference, link for link.
    ref_set = {(r, repo, d) for r, repo, d in layers}
    rf_set = {(f["registry"], f["repository"], f["digest"][7:19]) for f in fl}
    c.eq("layer findings equal the reference's, link for link (symmetric difference)",
         len(ref_set ^ rf_set), 0)
    ref_idx = {(r, repo, i, ch) for r, repo, i, ch, _, _ in index}
    rf_idx = {(f["registry"], f["repository"], f["details"]["index"][7:19], f["digest"][7:19]) for f in fi}
    c.eq("reference's index-child findings missing from regfsck's", len(ref_idx - rf_idx), 0)
    c.eq("index-child findings only regfsck has (indexes without mediaType)", len(rf_idx - ref_idx),
         regs["private"]["no_media_type"])

    if b_path:
        print("regfsck (b) every check but corrupt-blobs, on every registry, --dry-run:")
        b = json.load(open(b_path))
        breg = b["summary"]["registries"]
        per_check = defaultdict(int)
        for f in b["findings"]:
            per_check[f["check"]] += 1
        for r in sorted(regs):
            ol = breg.get(r, {}).get("checks", {}).get("orphan-layer-links", {}).get("counters", {})
            c.eq(f"{r}: orphaned layer links", ol.get("orphaned"), regs[r]["orphan_layer_links"])
            oi = breg.get(r, {}).get("checks", {}).get("orphan-index-children", {}).get("counters", {})
            c.eq(f"{r}: orphaned index children (planted + pull-through partial)", oi.get("orphaned_children"),
                 regs[r]["orphan_index_children"] + regs[r]["partial_index_children"])
        if "stale-uploads" in per_check or any("stale-uploads" in r.get("checks", {}) for r in breg.values()):
            c.eq("stale uploads (soft: planted 8-60 days old; true while the tree is < 7 days old)",
                 per_check.get("stale-uploads", 0), tot["uploads_stale"], soft=True)
        for cid in ("invalid-links", "dangling-tags"):
            if any(cid in r.get("checks", {}) for r in breg.values()):
                c.eq(f"{cid} findings (soft: none planted)", per_check.get(cid, 0), 0, soft=True)
        print("  findings per check: " + ", ".join(f"{k} {v}" for k, v in sorted(per_check.items())))
        print(f"  problems: {len(b['problems'])}" + (
            "  e.g. " + "; ".join(f"{p['path']}: {p['message']}" for p in b["problems"][:3]) if b["problems"] else ""))
    print(f"count checks: {c.n - c.bad}/{c.n} passed" + (f", {c.bad} FAILED" if c.bad else ""))
    return 1 if c.bad else 0


# ---- tables ---------------------------------------------------------------------------------

def table(tsv, md=False):
    rows = defaultdict(list)  # (size, tool) -> [(elapsed, rss_kb, user, sys, disk_gb)]
    links = {}
    order = []
    for line in open(tsv):
        if line.startswith("#") or not line.strip():
            continue
        # Older files have no ninth column (512-byte blocks read from disk).
        size, tool, lk, run, el, rss, us, sy, *blocks = line.rstrip("\n").split("\t")
        key = (int(size), tool)
        if key not in rows:
            order.append(key)
        disk = int(blocks[0]) * 512 / 1e9 if blocks and blocks[0] else None
        rows[key].append((float(el), int(rss), float(us), float(sy), disk))
        links[key] = int(lk)
    med = {k: statistics.median(x[0] for x in v) for k, v in rows.items()}
    cpu = {k: statistics.median(x[2] + x[3] for x in v) for k, v in rows.items()}
    rss = {k: max(x[1] for x in v) / 1024 for k, v in rows.items()}
    disk = {k: statistics.median(x[4] for x in v) if all(x[4] is not None for x in v) else None
            for k, v in rows.items()}
    sizes = sorted({k[0] for k in rows})
    head = ["tree", "tool", "links", "runs", "median s", "min-max s", "cpu s", "peak RSS MiB",
            "disk GB", "time / reference", "time / find"]
    out = []
    for size in sizes:
        ref = med.get((size, "reference"))
        fnd = med.get((size, "find"))
        for key in [k for k in order if k[0] == size]:
            v = rows[key]
            ratio = lambda base: "-" if not base else f"{med[key] / base:.3f}"  # noqa: E731
            out.append([f"{size:,}", key[1], f"{links[key]:,}", str(len(v)), f"{med[key]:.2f}",
                        f"{min(x[0] for x in v):.2f}-{max(x[0] for x in v):.2f}", f"{cpu[key]:.2f}",
                        f"{rss[key]:.1f}", "-" if disk[key] is None else f"{disk[key]:.2f}",
                        ratio(ref), ratio(fnd)])
    if md:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for r in out:
            print("| " + " | ".join(r) + " |")
    else:
        w = [max(len(h), *(len(r[i]) for r in out)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
        for r in out:
            print("  ".join(c.rjust(w[i]) if i != 1 else c.ljust(w[i]) for i, c in enumerate(r)))
    # Targets (only for the largest tree, and growth when two sizes ran).
    big = sizes[-1]
    lines = []

    def have(*ks):
        return all((big, k) in med for k in ks)

    if have("regfsck-a", "reference"):
        s = med[(big, "reference")] / med[(big, "regfsck-a")]
        lines.append(f"(a) >= 10x faster than the reference at {big:,}: {s:.1f}x -> {'MET' if s >= 10 else 'NOT MET'}")
    if have("regfsck-a", "find"):
        r = med[(big, "regfsck-a")] / med[(big, "find")]
        lines.append(f"(a) <= 0.25x the find time at {big:,}: {r:.3f}x -> {'MET' if r <= 0.25 else 'NOT MET'}")
    for t in ("regfsck-b", "regfsck-c"):
        if have(t, "find"):
            r = med[(big, t)] / med[(big, "find")]
            lines.append(f"({t[-1]}) no slower than find at {big:,}: {r:.3f}x -> {'MET' if r <= 1 else 'NOT MET'}")
    for t in ("regfsck-a", "regfsck-b", "regfsck-c"):
        if have(t):
            lines.append(f"{t} peak RSS <= 150 MiB at {big:,}: {rss[(big, t)]:.1f} MiB -> "
                         f"{'MET' if rss[(big, t)] <= 150 else 'NOT MET'}")
    if len(sizes) >= 2:
        small = sizes[0]
        k = big / small
        for t in sorted({t for (_, t) in rows}):
            if (small, t) in med and (big, t) in med:
                g = med[(big, t)] / med[(small, t)]
                lines.append(f"growth {small:,} -> {big:,} ({k:.0f}x links), {t}: time x{g:.1f}, "
                             f"peak RSS x{rss[(big, t)] / rss[(small, t)]:.1f}")
    if lines:
        print()
        for l in lines:
            print(("- " if md else "") + l)


def strace(name, links, path):
    total = None
    per = []
    for line in open(path):
        f = line.split()
        if not f or not re.match(r"^\d", f[0]):
            continue
        if f[-1] == "total":
            total = int(f[3])
        else:
            per.append((int(f[3]), f[-1]))
    if total is None:
        print(f"{name}: no strace summary in {path}")
        return
    per.sort(reverse=True)
    top = ", ".join(f"{s} {n}" for n, s in per[:6])
    print(f"{name}: {total} syscalls, {total / int(links):.2f} per link; top: {top}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "policies":
        policies(*args)
    elif cmd == "check":
        sys.exit(check(args[0], args[1], args[2], args[3] if len(args) > 3 else None))
    elif cmd == "table":
        table(args[0], md="--md" in args)
    elif cmd == "strace":
        strace(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
