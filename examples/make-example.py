#!/usr/bin/env python3
"""Writes the small example data root used by the README's first command.

Deterministic: running it again rewrites the same tree. Two registries:
  private    team/app/api  OCI index (amd64, arm64/v8); the arm64 child's revision link is
                           gone (orphan-index-children), its blob survives
             team/app/web  image manifest; one layer's blob data is gone (orphan-layer-links)
             base/alpine   Docker manifest list, healthy
  dockerhub  library/nginx index of which only amd64 was pulled (legitimately partial),
                           and one orphaned layer link
  quay       prometheus/node-exporter, healthy
"""
import hashlib
import json
import os
import shutil
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
V2 = "docker/registry/v2"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


class Registry:
    def __init__(self, name):
        self.base = os.path.join(ROOT, name, V2)

    def blob(self, content):
        hex_ = hashlib.sha256(content).hexdigest()
        write(os.path.join(self.base, "blobs/sha256", hex_[:2], hex_, "data"), content)
        return hex_

    def link(self, repo, kind, hex_):
        write(os.path.join(self.base, "repositories", repo, kind, "sha256", hex_, "link"),
              f"sha256:{hex_}".encode())

    def layer(self, repo, content):
        hex_ = self.blob(content)
        self.link(repo, "_layers", hex_)
        return hex_

    def image(self, repo, name, oci=True, platform=("linux", "amd64", None)):
        cfg = json.dumps({"architecture": platform[1], "os": platform[0], "rootfs": {"type": "layers"}}).encode()
        layers = [f"{name} layer {i}".encode() * 64 for i in range(2)]
        cfg_hex = self.layer(repo, cfg)
        layer_hexes = [self.layer(repo, l) for l in layers]
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "digest": f"sha256:{cfg_hex}", "size": len(cfg)},
            "layers": [{"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "digest": f"sha256:{h}", "size": len(l)}
                       for h, l in zip(layer_hexes, layers)],
        }
        raw = json.dumps(manifest, indent=2).encode()
        hex_ = self.blob(raw)
        self.link(repo, "_manifests/revisions", hex_)
        return hex_, len(raw), layer_hexes

    def index(self, repo, children, media_type):
        doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": []}
        for hex_, size, (os_, arch, variant) in children:
            platform = {"architecture": arch, "os": os_}
            if variant:
                platform["variant"] = variant
            child_type = DOCKER_MANIFEST if media_type == DOCKER_LIST else OCI_MANIFEST
            doc["manifests"].append({"mediaType": child_type, "digest": f"sha256:{hex_}", "size": size, "platform": platform})
        raw = json.dumps(doc, indent=2).encode()
        hex_ = self.blob(raw)
        self.link(repo, "_manifests/revisions", hex_)
        return hex_

    def tag(self, repo, tag, hex_):
        tags = os.path.join(self.base, "repositories", repo, "_manifests/tags", tag)
        write(os.path.join(tags, "current/link"), f"sha256:{hex_}".encode())
        write(os.path.join(tags, "index/sha256", hex_, "link"), f"sha256:{hex_}".encode())

    def drop_revision(self, repo, hex_):
        shutil.rmtree(os.path.join(self.base, "repositories", repo, "_manifests/revisions/sha256", hex_))

    def drop_blob(self, hex_):
        shutil.rmtree(os.path.join(self.base, "blobs/sha256", hex_[:2], hex_))


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    private = Registry("private")
    amd = ("linux", "amd64", None)
    arm = ("linux", "arm64", "v8")
    a, asz, _ = private.image("team/app/api", "api-amd64", platform=amd)
    b, bsz, _ = private.image("team/app/api", "api-arm64", platform=arm)
    idx = private.index("team/app/api", [(a, asz, amd), (b, bsz, arm)], OCI_INDEX)
    private.tag("team/app/api", "1.0", idx)
    private.drop_revision("team/app/api", b)

    w, _, web_layers = private.image("team/app/web", "web")
    private.tag("team/app/web", "latest", w)
    private.drop_blob(web_layers[1])

    x, xsz, _ = private.image("base/alpine", "alpine-amd64", oci=False, platform=amd)
    y, ysz, _ = private.image("base/alpine", "alpine-arm", oci=False, platform=("linux", "arm", "v7"))
    lst = private.index("base/alpine", [(x, xsz, amd), (y, ysz, ("linux", "arm", "v7"))], DOCKER_LIST)
    private.tag("base/alpine", "3.20", lst)

    hub = Registry("dockerhub")
    n, nsz, nginx_layers = hub.image("library/nginx", "nginx-amd64", platform=amd)
    other = hashlib.sha256(b"nginx arm64 manifest, never pulled through this cache").hexdigest()
    idx = hub.index("library/nginx", [(n, nsz, amd), (other, 1234, arm)], OCI_INDEX)
    hub.tag("library/nginx", "1.27", idx)
    hub.drop_blob(nginx_layers[0])
    # A healthy pull-through cache: nothing to report.
    quay = Registry("quay")
    q, _, _ = quay.image("prometheus/node-exporter", "node-exporter")
    quay.tag("prometheus/node-exporter", "v1.8", q)
    print(f"wrote {ROOT}", file=sys.stderr)


if __name__ == "__main__":
    main()
