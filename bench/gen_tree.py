#!/usr/bin/env python3
"""Generates a deterministic, realistic CNCF Distribution data root for benchmarking regfsck.

    bench/gen_tree.py --links 100000 --out /work/bench-data/links-100000
        writes OUT/data/<registry>/docker/registry/v2/...   (private, dockerhub, ghcr, quay)
        and    OUT/expected.json                             (what was planted, counted)

    bench/gen_tree.py --hash-blobs 12 --hash-blob-mib 10 --out /work/bench-data/hash
        writes one registry with a few large random layer blobs (for bench/hash.sh)

The same arguments always write the same tree (same digests, same names, same breakage);
only upload `startedat` times follow the clock (they are relative to the generation time).

What a tree holds, per registry (`--links N` is the exact total of layer links, split
private 40 %, dockerhub 30 %, ghcr 15 %, quay 15 %):

- nested repository names (`team-17/app-3/api`, and `team-17/app-3` itself is a repository
  in some teams; `library/img-4`, `org-2/proj-5/img-1`, ...);
- image manifests, OCI and Docker v2 schema2, each with a unique config blob (real JSON) and
  layers whose blobs are drawn from shared pools (base-image chains per architecture, runtime
  chains, and a large pool of application layers), so most links point into a pool of
  distinct blobs shared across repositories (and across registries: a pool layer has the
  same content, hence digest, everywhere);
- multi-platform indexes: OCI indexes, Docker manifest lists, and OCI indexes without
  `mediaType`; in private, half the OCI indexes carry buildx attestation manifests;
- tags with `current/link` and history `index/sha256/<d>/link`, untagged older revisions;
- some `_uploads/<uuid>/{data,startedat,hashstates/sha256/<n>}` (stale and fresh);
- a few unreferenced blobs (what GC would sweep);
- planted breakage, counted exactly into expected.json:
  * orphaned layer links (`--orphan-share` of each registry's links, default 1 %): blobs
    deleted after the fact, ~85 % with their blob directory removed, ~15 % leaving the
    directory without `data`; a deleted pool blob orphans every link to it;
  * orphaned index children on private (`--orphan-index-share` of private indexes lose one
    child revision directory; half of them also lose the child's manifest blob and config
    blob, as a 2.8 `garbage-collect -m` does);
  * pull-through caches hold legitimately partial indexes (only some platforms pulled:
    children without revision, blob or layer links). The reference script and a policy with
    orphan-index-children on private only do not see them; a policy enabling it on "*" does.

Digests are the true sha256 of the content. Files are written with os.open/os.write relative
to directory file descriptors to keep per-file overhead low.
"""

import argparse
import datetime
import hashlib
import json
import os
import random
import shutil
import sys
import time

V2 = "docker/registry/v2"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
INTOTO = "application/vnd.in-toto+json"

REGISTRIES = [("private", 0.40), ("dockerhub", 0.30), ("ghcr", 0.15), ("quay", 0.15)]

ARCHES = [
    ("linux", "amd64", None),
    ("linux", "arm64", "v8"),
    ("linux", "arm", "v7"),
    ("linux", "ppc64le", None),
    ("linux", "s390x", None),
    ("linux", "386", None),
    ("linux", "arm", "v6"),
    ("linux", "riscv64", None),
]
COMPONENTS = ["api", "web", "worker", "cron", "migrations", "frontend", "gateway", "sidecar"]
WFLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
DFLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

N_BASE_CHAINS = 40
N_RUNTIME_CHAINS = 200


def wfile(name, data, dir_fd):
    fd = os.open(name, WFLAGS, 0o644, dir_fd=dir_fd)
    os.write(fd, data)
    os.close(fd)


def pool_content(seed, key):
    """Deterministic pseudo-random layer bytes (64..511 bytes) for a pool key."""
    h = hashlib.shake_256(f"{seed}|{key}".encode())
    head = h.digest(2)
    n = 64 + ((head[0] << 8 | head[1]) % 448)
    return h.digest(n + 2)[2:]


def platform_obj(p):
    o = {"architecture": p[1], "os": p[0]}
    if p[2]:
        o["variant"] = p[2]
    return o


def platform_str(p):
    return f"{p[0]}/{p[1]}" + (f"/{p[2]}" if p[2] else "")


class Registry:
    """Writes one registry and keeps the counts that go into expected.json."""

    def __init__(self, name, root, seed, link_budget, args, now):
        self.name = name
        self.seed = seed
        self.args = args
        self.now = now
        self.rng = random.Random(f"{seed}:{name}")
        self.base = os.path.join(root, name, V2)
        self.budget = link_budget
        self.links = 0
        self.refcount = {}  # blob hex -> number of _layers links to it
        self.written = set()  # blob hexes with data on disk
        self.pool_hex = {}  # pool key -> hex (cache)
        self.layer_blobs = []  # hexes that may be deleted to orphan links (configs, pool app layers)
        self.indexes = []  # (repo, index hex, kind, [(child hex, config hex, platform)])
        self.c = {
            "repositories": 0,
            "layer_links": 0,
            "image_manifests": 0,
            "attestation_manifests": 0,
            "indexes_oci": 0,
            "indexes_docker": 0,
            "indexes_oci_no_media_type": 0,
            "revision_links": 0,
            "tags": 0,
            "tag_history_links": 0,
            "uploads": 0,
            "uploads_stale": 0,
            "unreferenced_blobs": 0,
            "partial_index_children": 0,
        }
        blobs = os.path.join(self.base, "blobs/sha256")
        os.makedirs(blobs)
        self.prefix_fd = {}
        for i in range(256):
            p = f"{i:02x}"
            os.mkdir(os.path.join(blobs, p))
            self.prefix_fd[p] = os.open(os.path.join(blobs, p), DFLAGS)
        self.repos_dir = os.path.join(self.base, "repositories")
        os.makedirs(self.repos_dir)

    def close(self):
        for fd in self.prefix_fd.values():
            os.close(fd)

    # ---- blobs ---------------------------------------------------------------------------

    def put_blob(self, content, hex_=None):
        hex_ = hex_ or hashlib.sha256(content).hexdigest()
        if hex_ not in self.written:
            self.written.add(hex_)
            pfd = self.prefix_fd[hex_[:2]]
            os.mkdir(hex_, dir_fd=pfd)
            wfile(hex_ + "/data", content, pfd)
        return hex_

    def pool_layer(self, key):
        """A shared layer: (hex, size, content); the content is the same in every registry."""
        hit = self.pool_hex.get(key)
        if hit is not None:
            return hit
        content = pool_content(self.seed, key)
        hit = (hashlib.sha256(content).hexdigest(), len(content), content)
        self.pool_hex[key] = hit
        return hit

    # ---- repositories --------------------------------------------------------------------

    def new_repo(self, name):
        path = os.path.join(self.repos_dir, name)
        lay = os.path.join(path, "_layers/sha256")
        rev = os.path.join(path, "_manifests/revisions/sha256")
        tags = os.path.join(path, "_manifests/tags")
        os.makedirs(lay)
        os.makedirs(rev)
        os.makedirs(tags)
        self.c["repositories"] += 1
        return {
            "name": name,
            "path": path,
            "lfd": os.open(lay, DFLAGS),
            "rfd": os.open(rev, DFLAGS),
            "tfd": os.open(tags, DFLAGS),
            "links": set(),
            "revs": set(),
        }

    def close_repo(self, repo):
        os.close(repo["lfd"])
        os.close(repo["rfd"])
        os.close(repo["tfd"])

    def link_layer(self, repo, hex_):
        if hex_ in repo["links"]:
            return
        repo["links"].add(hex_)
        os.mkdir(hex_, dir_fd=repo["lfd"])
        wfile(hex_ + "/link", b"sha256:" + hex_.encode(), repo["lfd"])
        self.refcount[hex_] = self.refcount.get(hex_, 0) + 1
        self.links += 1

    def link_revision(self, repo, hex_):
        if hex_ in repo["revs"]:
            return
        repo["revs"].add(hex_)
        os.mkdir(hex_, dir_fd=repo["rfd"])
        wfile(hex_ + "/link", b"sha256:" + hex_.encode(), repo["rfd"])
        self.c["revision_links"] += 1

    def tag(self, repo, tag, history):
        """`history`: manifest hexes, oldest first; the last is current."""
        tfd = repo["tfd"]
        os.mkdir(tag, dir_fd=tfd)
        os.mkdir(tag + "/current", dir_fd=tfd)
        wfile(tag + "/current/link", b"sha256:" + history[-1].encode(), tfd)
        os.mkdir(tag + "/index", dir_fd=tfd)
        os.mkdir(tag + "/index/sha256", dir_fd=tfd)
        for h in dict.fromkeys(history):
            os.mkdir(f"{tag}/index/sha256/{h}", dir_fd=tfd)
            wfile(f"{tag}/index/sha256/{h}/link", b"sha256:" + h.encode(), tfd)
            self.c["tag_history_links"] += 1
        self.c["tags"] += 1

    def upload(self, repo, stale):
        up = os.path.join(repo["path"], "_uploads")
        os.makedirs(up, exist_ok=True)
        uid = "%08x-%04x-4%03x-a%03x-%012x" % (
            self.rng.getrandbits(32), self.rng.getrandbits(16), self.rng.getrandbits(12),
            self.rng.getrandbits(12), self.rng.getrandbits(48))
        d = os.path.join(up, uid)
        os.makedirs(os.path.join(d, "hashstates/sha256"))
        size = self.rng.randrange(1, 4096)
        fd = os.open(d, DFLAGS)
        wfile("data", self.rng.randbytes(size), fd)
        age = datetime.timedelta(days=self.rng.uniform(8, 60)) if stale else \
            datetime.timedelta(minutes=self.rng.uniform(1, 600))
        started = (self.now - age).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        wfile("startedat", started.encode(), fd)
        wfile(f"hashstates/sha256/{size}", self.rng.randbytes(108), fd)
        os.close(fd)
        ts = (self.now - age).timestamp()
        for p in ("data", "startedat", f"hashstates/sha256/{size}"):
            os.utime(os.path.join(d, p), (ts, ts))
        self.c["uploads"] += 1
        self.c["uploads_stale"] += int(stale)

    # ---- images --------------------------------------------------------------------------

    def remaining(self):
        return self.budget - self.links

    def image(self, repo, layers, plat, oci, label, write=True, attestation=False):
        """Writes (when `write`) an image: config blob + layer links + manifest blob + revision.

        `layers`: [(hex, size, content)]. Truncated so that the registry's link budget holds.
        Returns (manifest hex, manifest size, config hex).
        """
        if write:
            new = [l for l in layers if l[0] not in repo["links"]]
            allowed = max(0, self.remaining() - 1)  # the config is always a new link
            if len(new) > allowed:
                keep = set(l[0] for l in new[:allowed])
                layers = [l for l in layers if l[0] in repo["links"] or l[0] in keep]
        r = self.rng
        if attestation:
            cfg = json.dumps({"architecture": "unknown", "os": "unknown", "config": {},
                              "rootfs": {"type": "layers", "diff_ids": [
                                  "sha256:" + hashlib.sha256(b"diff" + l[0].encode()).hexdigest()
                                  for l in layers]}}, separators=(",", ":")).encode()
        else:
            created = f"2026-{r.randrange(1, 12):02d}-{r.randrange(1, 28):02d}T{r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}Z"
            cfg_doc = {
                "architecture": plat[1],
                "os": plat[0],
                **({"variant": plat[2]} if plat[2] else {}),
                "created": created,
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            f"APP_BUILD={label}"],
                    "Cmd": ["/app/" + repo["name"].rsplit("/", 1)[-1]],
                    "WorkingDir": "/app",
                    "Labels": {"org.opencontainers.image.source": f"https://git.example.com/{repo['name']}",
                               "org.opencontainers.image.revision": "%040x" % r.getrandbits(160)},
                },
                "rootfs": {"type": "layers", "diff_ids": [
                    "sha256:" + hashlib.sha256(b"diff" + l[0].encode()).hexdigest() for l in layers]},
                "history": [{"created": created, "created_by": f"/bin/sh -c #(nop) step {i}"}
                            for i in range(len(layers))],
            }
            if oci:
                cfg = json.dumps(cfg_doc, separators=(",", ":")).encode()
            else:
                cfg = json.dumps(cfg_doc, indent=3).encode()
        cfg_hex = hashlib.sha256(cfg).hexdigest()
        lmt = INTOTO if attestation else (OCI_LAYER if oci else DOCKER_LAYER)
        man = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                       "digest": "sha256:" + cfg_hex, "size": len(cfg)},
            "layers": [{"mediaType": lmt, "digest": "sha256:" + l[0], "size": l[1]} for l in layers],
        }
        if attestation:
            for d in man["layers"]:
                d["annotations"] = {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}
        raw = (json.dumps(man, separators=(",", ":")) if oci else json.dumps(man, indent=3)).encode()
        hex_ = hashlib.sha256(raw).hexdigest()
        if write:
            self.put_blob(cfg, cfg_hex)
            self.link_layer(repo, cfg_hex)
            self.layer_blobs.append(cfg_hex)
            for l in layers:
                self.put_blob(l[2], l[0])
                self.link_layer(repo, l[0])
            self.put_blob(raw, hex_)
            self.link_revision(repo, hex_)
            if attestation:
                self.c["attestation_manifests"] += 1
            else:
                self.c["image_manifests"] += 1
        return hex_, len(raw), cfg_hex

    def index(self, repo, kind, children):
        """children: [(hex, size, platform, is_attestation, ref_hex)]."""
        child_mt = DOCKER_MANIFEST if kind == "docker" else OCI_MANIFEST
        doc = {"schemaVersion": 2}
        if kind == "oci":
            doc["mediaType"] = OCI_INDEX
        elif kind == "docker":
            doc["mediaType"] = DOCKER_LIST
        doc["manifests"] = []
        for hex_, size, plat, att, ref in children:
            d = {"mediaType": child_mt, "digest": "sha256:" + hex_, "size": size}
            if att:
                d["annotations"] = {"vnd.docker.reference.digest": "sha256:" + ref,
                                    "vnd.docker.reference.type": "attestation-manifest"}
                d["platform"] = {"architecture": "unknown", "os": "unknown"}
            else:
                d["platform"] = platform_obj(plat)
            doc["manifests"].append(d)
        raw = (json.dumps(doc, indent=3) if kind == "docker" else json.dumps(doc, separators=(",", ":"))).encode()
        hex_ = self.put_blob(raw)
        self.link_revision(repo, hex_)
        self.c["indexes_" + {"oci": "oci", "docker": "docker", "bare": "oci_no_media_type"}[kind]] += 1
        return hex_


def zipf_pick(rng, n, s=1.1):
    """A Zipf-ish index in [0, n): a few popular choices, a long tail."""
    u = rng.random()
    return min(n - 1, int(n ** (u ** s)) - 1) if n > 1 else 0


class Planner:
    """Decides what each repository holds and asks the Registry to write it."""

    def __init__(self, reg, pool_size):
        self.reg = reg
        self.rng = reg.rng
        self.pool_size = pool_size

    def base_chain(self, chain, plat):
        n = 1 + chain % 5
        return [self.reg.pool_layer(f"base:{chain}:{platform_str(plat)}:{i}") for i in range(n)]

    def runtime_chain(self, chain, plat):
        n = 1 + chain % 3
        return [self.reg.pool_layer(f"rt:{chain}:{platform_str(plat)}:{i}") for i in range(n)]

    def app_layer(self):
        k = self.rng.randrange(self.pool_size)
        hit = self.reg.pool_layer(f"app:{k}")
        return hit

    def stack(self, base, runtime, deps, plat, fresh):
        layers = self.base_chain(base, plat) + self.runtime_chain(runtime, plat)
        layers += deps
        layers += [self.app_layer() for _ in range(fresh)]
        return layers

    def note_app_layers(self, layers):
        for l in layers:
            self.reg.layer_blobs.append(l[0])


def private_repos(rng):
    """Endless stream of private repository names: team-T/app-A/<component>, team-T/tools-X, ..."""
    t = 0
    while True:
        t += 1
        for a in range(1, rng.randrange(2, 7)):
            comps = rng.sample(COMPONENTS, rng.randrange(1, 5))
            if rng.random() < 0.25:
                yield f"team-{t}/app-{a}"  # a repository that also has nested repositories
            for c in comps:
                yield f"team-{t}/app-{a}/{c}"
        if rng.random() < 0.3:
            yield f"team-{t}/tools"


def cache_repos(rng, name):
    i = 0
    while True:
        i += 1
        if name == "dockerhub":
            yield f"library/img-{i}" if rng.random() < 0.3 else f"org-{rng.randrange(1, 400)}/img-{i}"
        elif name == "ghcr":
            yield f"org-{rng.randrange(1, 300)}/proj-{rng.randrange(1, 20)}/img-{i}"
        else:
            yield f"org-{rng.randrange(1, 200)}/img-{i}"


def fill_private(reg, args):
    rng = reg.rng
    pl = Planner(reg, max(500, reg.budget // 3))
    names = private_repos(rng)
    while reg.remaining() > 0:
        repo = reg.new_repo(next(names))
        multi = rng.random() < 0.35
        oci = rng.random() < 0.5
        kind = rng.choices(["oci", "docker", "bare"], [0.5, 0.3, 0.2])[0]
        if multi:
            oci = kind != "docker"
        base = zipf_pick(rng, N_BASE_CHAINS)
        runtime = zipf_pick(rng, N_RUNTIME_CHAINS)
        deps = [pl.app_layer() for _ in range(rng.randrange(1, 3))]
        pl.note_app_layers(deps)
        versions = 1 + min(11, int(rng.expovariate(1 / 4)))
        history = []
        tags = []
        plats = [ARCHES[0], ARCHES[1]] + ([ARCHES[2]] if rng.random() < 0.3 else [])
        for v in range(versions):
            if reg.remaining() <= 0:
                break
            if rng.random() < 0.3:  # dependencies changed in this version
                deps = [pl.app_layer() for _ in range(rng.randrange(1, 3))]
                pl.note_app_layers(deps)
            label = f"{repo['name']}:{v}"
            fresh = rng.randrange(1, 3)
            if multi and reg.remaining() > 40:
                children = []
                for p in plats:
                    layers = pl.stack(base, runtime, deps, p, 0) + [pl.app_layer() for _ in range(fresh)]
                    pl.note_app_layers(layers[-fresh:])
                    h, size, cfg = reg.image(repo, layers, p, oci, label)
                    children.append((h, size, p, False, None, cfg))
                if kind == "oci" and rng.random() < 0.5:
                    for ch in list(children):
                        att_layers = [reg.pool_layer(f"att:{label}:{platform_str(ch[2])}:{i}") for i in range(2)]
                        h, size, cfg = reg.image(repo, att_layers, ch[2], True, label, attestation=True)
                        children.append((h, size, ch[2], True, ch[0], cfg))
                ih = reg.index(repo, kind, [c[:5] for c in children])
                reg.indexes.append((repo["name"], ih, kind,
                                    [(c[0], c[5], c[2]) for c in children]))
                history.append(ih)
            else:
                layers = pl.stack(base, runtime, deps, ARCHES[0], 0) + [pl.app_layer() for _ in range(fresh)]
                pl.note_app_layers(layers[-fresh:])
                h, _, _ = reg.image(repo, layers, ARCHES[0], oci, label)
                history.append(h)
            if rng.random() < 0.7:
                tags.append((f"v1.{v}.{rng.randrange(10)}", [history[-1]]))
        if history:
            tags.append(("latest", history))
            if rng.random() < 0.3:
                tags.append((f"sha-{rng.getrandbits(28):07x}", [history[-1]]))
        for t, h in tags:
            reg.tag(repo, t, h)
        if rng.random() < args.upload_share:
            reg.upload(repo, stale=rng.random() < 0.6)
        reg.close_repo(repo)


def fill_cache(reg, args):
    rng = reg.rng
    pl = Planner(reg, max(500, reg.budget // 3))
    names = cache_repos(rng, reg.name)
    multi_share = {"dockerhub": 0.6, "ghcr": 0.4, "quay": 0.3}[reg.name]
    while reg.remaining() > 0:
        repo = reg.new_repo(next(names))
        base = zipf_pick(rng, N_BASE_CHAINS)
        runtime = zipf_pick(rng, N_RUNTIME_CHAINS)
        multi = rng.random() < multi_share
        kind = rng.choices(["docker", "oci", "bare"], [0.5, 0.4, 0.1])[0]
        oci = kind != "docker" if multi else rng.random() < 0.4
        deps = [pl.app_layer() for _ in range(rng.randrange(1, 4))]
        pl.note_app_layers(deps)
        for t in range(rng.randrange(1, 4)):
            if reg.remaining() <= 0:
                break
            label = f"{reg.name}/{repo['name']}:{t}"
            fresh = rng.randrange(1, 4)
            if multi and reg.remaining() > 40:
                plats = ARCHES[: rng.randrange(2, 9)]
                pulled = {0} | ({1} if rng.random() < 0.3 else set())
                children = []
                for i, p in enumerate(plats):
                    layers = pl.stack(base, runtime, deps, p, 0) + [pl.app_layer() for _ in range(fresh)]
                    got = i in pulled
                    if got:
                        pl.note_app_layers(layers[-fresh:])
                    else:
                        reg.c["partial_index_children"] += 1
                    h, size, cfg = reg.image(repo, layers, p, oci, label, write=got)
                    children.append((h, size, p, False, None))
                ih = reg.index(repo, kind, children)
                reg.tag(repo, f"{t + 1}.{rng.randrange(30)}", [ih])
            else:
                layers = pl.stack(base, runtime, deps, ARCHES[0], 0) + [pl.app_layer() for _ in range(fresh)]
                pl.note_app_layers(layers[-fresh:])
                h, _, _ = reg.image(repo, layers, ARCHES[0], oci, label)
                reg.tag(repo, f"{t + 1}.{rng.randrange(30)}", [h])
        reg.close_repo(repo)


def unreferenced(reg, n):
    for i in range(n):
        reg.put_blob(pool_content(reg.seed, f"unref:{reg.name}:{i}"))
        reg.c["unreferenced_blobs"] += 1


def rm_blob_data(reg, hex_, keep_dir):
    pfd = reg.prefix_fd[hex_[:2]]
    os.unlink(hex_ + "/data", dir_fd=pfd)
    if not keep_dir:
        os.rmdir(hex_, dir_fd=pfd)


def break_private_indexes(reg, args, deleted):
    """Removes child revision directories of a share of private indexes."""
    rng = reg.rng
    out = {"orphan_index_children": 0, "child_blob_present": 0, "child_blob_missing": 0,
           "reference_visible": 0, "reference_visible_child_blob_present": 0,
           "no_media_type": 0, "indexes_broken": 0}
    n = round(len(reg.indexes) * args.orphan_index_share)
    for repo, ih, kind, children in rng.sample(reg.indexes, n):
        out["indexes_broken"] += 1
        k = 1 if len(children) < 3 or rng.random() < 0.7 else 2
        for child_hex, cfg_hex, plat in rng.sample(children, k):
            d = os.path.join(reg.repos_dir, repo, "_manifests/revisions/sha256", child_hex)
            os.unlink(os.path.join(d, "link"))
            os.rmdir(d)
            gone = rng.random() < 0.5  # GC -m swept the child's manifest and its config
            if gone:
                for h in (child_hex, cfg_hex):
                    if h not in deleted:
                        rm_blob_data(reg, h, keep_dir=False)
                        deleted[h] = False
            out["orphan_index_children"] += 1
            out["child_blob_missing" if gone else "child_blob_present"] += 1
            if kind == "bare":
                out["no_media_type"] += 1
            else:
                out["reference_visible"] += 1
                out["reference_visible_child_blob_present"] += int(not gone)
    return out


def break_layer_links(reg, args, deleted):
    """Deletes blobs until about `orphan_share` of the registry's links are orphaned."""
    rng = reg.rng
    target = round(reg.links * args.orphan_share)
    orphaned = sum(reg.refcount.get(h, 0) for h in deleted)
    cands = list(dict.fromkeys(h for h in reg.layer_blobs
                               if 0 < reg.refcount.get(h, 0) <= 20 and h not in deleted))
    rng.shuffle(cands)
    for h in cands:
        if orphaned >= target:
            break
        keep_dir = rng.random() < 0.15
        rm_blob_data(reg, h, keep_dir)
        deleted[h] = keep_dir
        orphaned += reg.refcount[h]


def gen_registry(name, budget, data, args, now):
    """Writes one registry; returns (name, its counts for expected.json)."""
    t = time.monotonic()
    reg = Registry(name, data, args.seed, budget, args, now)
    if name == "private":
        fill_private(reg, args)
    else:
        fill_cache(reg, args)
    unreferenced(reg, max(1, reg.links // 1000))
    deleted = {}  # hex -> blob dir kept (without data)
    idx = None
    if name == "private":
        idx = break_private_indexes(reg, args, deleted)
    break_layer_links(reg, args, deleted)
    reg.close()
    orph = [h for h in deleted if reg.refcount.get(h, 0) > 0]
    e = dict(reg.c)
    e["layer_links"] = reg.links
    e["blobs_written"] = len(reg.written)
    e["blobs_deleted"] = len(deleted)
    e["blob_dirs_without_data"] = sum(1 for k in deleted.values() if k)
    e["distinct_linked_blobs"] = len(reg.refcount)
    e["orphan_layer_links"] = sum(reg.refcount[h] for h in orph)
    e["orphan_layer_links_blob_dir_missing"] = sum(reg.refcount[h] for h in orph if not deleted[h])
    e["orphan_layer_links_blob_dir_present"] = sum(reg.refcount[h] for h in orph if deleted[h])
    e["indexes"] = e["indexes_oci"] + e["indexes_docker"] + e["indexes_oci_no_media_type"]
    e["indexes_reference_visible"] = e["indexes_oci"] + e["indexes_docker"]
    if idx:
        e.update(idx)
    else:
        e.update({"orphan_index_children": 0, "reference_visible": 0, "child_blob_present": 0,
                  "child_blob_missing": 0, "no_media_type": 0, "indexes_broken": 0,
                  "reference_visible_child_blob_present": 0})
    e["generation_seconds"] = round(time.monotonic() - t, 1)
    print(f"  {name:10s} {reg.links:>9} links  {e['repositories']:>6} repos  "
          f"{e['blobs_written']:>8} blobs  {e['orphan_layer_links']:>6} orphaned links  "
          f"{e['generation_seconds']:7.1f}s", flush=True)
    return name, e


def generate(args):
    out = os.path.abspath(args.out)
    data = os.path.join(out, "data")
    if os.path.exists(data):
        if not args.force:
            sys.exit(f"{data} exists (use --force to replace it)")
        shutil.rmtree(data)
    for p in (os.path.join(out, "expected.json"), os.path.join(out, ".complete")):
        if os.path.exists(p):
            os.unlink(p)
    os.makedirs(data)
    now = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    budgets, left = [], args.links
    for i, (name, share) in enumerate(REGISTRIES):
        b = left if i == len(REGISTRIES) - 1 else round(args.links * share)
        budgets.append((name, b))
        left -= b
    expected = {
        "version": 1,
        "generator": {"links": args.links, "seed": args.seed, "orphan_share": args.orphan_share,
                      "orphan_index_share": args.orphan_index_share,
                      "upload_share": args.upload_share, "generated_at": now.isoformat()},
        "data": data,
        "registries": {},
    }
    jobs = max(1, min(args.jobs, len(budgets)))
    tasks = [(name, budget, data, args, now) for name, budget in budgets]
    if jobs == 1:
        results = [gen_registry(*t) for t in tasks]
    else:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.starmap(gen_registry, tasks, chunksize=1)
    for name, e in results:
        expected["registries"][name] = e
    regs = expected["registries"].values()
    tot = lambda k: sum(r[k] for r in regs)  # noqa: E731
    expected["totals"] = {
        "layer_links": tot("layer_links"),
        "orphan_layer_links": tot("orphan_layer_links"),
        "orphan_index_children_private": expected["registries"]["private"]["orphan_index_children"],
        "orphan_index_children_reference_visible": expected["registries"]["private"]["reference_visible"],
        # what orphan-index-children finds when enabled on every registry
        "orphan_index_children_all_registries": tot("orphan_index_children") + tot("partial_index_children"),
        "indexes_private": expected["registries"]["private"]["indexes"],
        "indexes_private_reference_visible": expected["registries"]["private"]["indexes_reference_visible"],
        "repositories": tot("repositories"),
        "blobs_with_data": tot("blobs_written") - tot("blobs_deleted"),
        "uploads": tot("uploads"),
        "uploads_stale": tot("uploads_stale"),
    }
    assert expected["totals"]["layer_links"] == args.links, expected["totals"]
    elapsed = time.monotonic() - t0
    expected["generation_seconds"] = round(elapsed, 1)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out, ".complete"), "w") as f:
        f.write(json.dumps({"links": args.links, "seed": args.seed}) + "\n")
    t = expected["totals"]
    print(f"generated {t['layer_links']} links in {t['repositories']} repositories, "
          f"{t['orphan_layer_links']} orphaned links, {t['orphan_index_children_private']} orphaned "
          f"index children on private, in {elapsed:.1f}s -> {data}")


def generate_hash(args):
    """One registry `private`, repository bench/big: K random blobs of M MiB, all linked."""
    out = os.path.abspath(args.out)
    data = os.path.join(out, "data")
    if os.path.exists(data):
        if not args.force:
            sys.exit(f"{data} exists (use --force to replace it)")
        shutil.rmtree(data)
    t0 = time.monotonic()
    reg = Registry("private", data, args.seed, 10 ** 9, args, datetime.datetime.now(datetime.timezone.utc))
    rng = random.Random(f"{args.seed}:hash")
    repo = reg.new_repo("bench/big")
    size = int(args.hash_blob_mib * 1024 * 1024)
    layers = []
    total = 0
    for i in range(args.hash_blobs):
        content = rng.randbytes(size)
        h = hashlib.sha256(content).hexdigest()
        layers.append((h, size, content))
        total += size
    h, _, _ = reg.image(repo, layers, ARCHES[0], True, "big")
    reg.tag(repo, "latest", [h])
    reg.close_repo(repo)
    reg.close()
    files = sorted(os.path.join(reg.base, "blobs/sha256", x[:2], x, "data") for x in reg.written)
    info = {"blobs": len(files), "bytes": sum(os.path.getsize(f) for f in files),
            "large_blobs": args.hash_blobs, "large_blob_bytes": size, "files": files}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, ".complete"), "w") as f:
        f.write(json.dumps({"hash_blobs": args.hash_blobs, "mib": args.hash_blob_mib}) + "\n")
    print(f"generated {len(files)} blobs ({info['bytes'] / 2**20:.1f} MiB) in {time.monotonic() - t0:.1f}s -> {data}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory: OUT/data and OUT/expected.json")
    ap.add_argument("--links", type=int, default=100_000, help="total layer links over all registries")
    ap.add_argument("--seed", default="regfsck-bench-1")
    ap.add_argument("--orphan-share", type=float, default=0.01,
                    help="share of each registry's layer links to orphan (default 0.01)")
    ap.add_argument("--orphan-index-share", type=float, default=0.03,
                    help="share of private indexes that lose children (default 0.03)")
    ap.add_argument("--upload-share", type=float, default=0.02,
                    help="share of private repositories with an upload in progress")
    ap.add_argument("--jobs", type=int, default=1,
                    help="registries written in parallel (the tree does not depend on it; on ext4 here 2 jobs were slower than 1)")
    ap.add_argument("--force", action="store_true", help="replace OUT/data if it exists")
    ap.add_argument("--hash-blobs", type=int, default=0, help="hash mode: this many large blobs")
    ap.add_argument("--hash-blob-mib", type=float, default=10)
    args = ap.parse_args()
    if args.hash_blobs:
        generate_hash(args)
    else:
        generate(args)


if __name__ == "__main__":
    main()
