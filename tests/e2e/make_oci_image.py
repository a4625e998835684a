#!/usr/bin/env python3
"""Builds an OCI image-layout tar (index.json, manifest, config, gzip layers) from directories or
file lists, offline and reproducibly. Used by the end-to-end tests, the demo and bench/.

  make_oci_image.py OUT.tar NAME [--cmd ARG]... (--dir DIR | --list FILE)...

--dir DIR   a layer holding the tree under DIR (paths relative to DIR)
--list FILE a layer holding the absolute paths listed in FILE, stored relative to / (as in the
            host), with parent directories implied
Layers are tar'ed with sorted names, uid/gid 0 and mtime 0, and gzip'ed without a name/time
(pigz -n), so the same input gives the same digests.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def tar_layer(kind, src, out_tar):
    common = ["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0",
              "--format=pax", "--pax-option=delete=atime,delete=ctime", "-cf", out_tar]
    if kind == "dir":
        subprocess.run(common + ["-C", src, "."], check=True)
    else:
        # Relative to / so that extraction recreates the host paths.
        rel = tempfile.NamedTemporaryFile("w", delete=False)
        with open(src) as f:
            for line in f:
                line = line.strip()
                if line:
                    rel.write(line.lstrip("/") + "\n")
        rel.close()
        try:
            subprocess.run(common + ["-C", "/", "--no-recursion", "-T", rel.name], check=True,
                           stderr=subprocess.DEVNULL)
        finally:
            os.unlink(rel.name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("name")
    ap.add_argument("--cmd", action="append", default=[])
    ap.add_argument("--dir", action="append", default=[], dest="layers",
                    type=lambda v: ("dir", v))
    ap.add_argument("--list", action="append", default=[], dest="layers",
                    type=lambda v: ("list", v))
    a = ap.parse_args()
    if not a.layers:
        sys.exit("make_oci_image.py: at least one --dir or --list is needed")
    work = tempfile.mkdtemp(prefix="ipfly-img.")
    try:
        blobs = os.path.join(work, "oci", "blobs", "sha256")
        os.makedirs(blobs)

        def put(path):
            d = sha256_file(path)
            shutil.move(path, os.path.join(blobs, d))
            return d

        layers, diff_ids = [], []
        for i, (kind, src) in enumerate(a.layers):
            t = os.path.join(work, "l%d.tar" % i)
            tar_layer(kind, src, t)
            diff_ids.append("sha256:" + sha256_file(t))
            gz = t + ".gz"
            with open(gz, "wb") as out:
                subprocess.run(["pigz", "-n", "-6", "-c", t], stdout=out, check=True)
            os.unlink(t)
            size = os.path.getsize(gz)
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           "digest": "sha256:" + put(gz), "size": size})
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                             "Cmd": a.cmd or ["/bin/sh"],
                             "Labels": {"org.opencontainers.image.description":
                                        "ipfly sample image " + a.name}},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        cpath = os.path.join(work, "config.json")
        with open(cpath, "w") as f:
            json.dump(config, f, separators=(",", ":"), sort_keys=True)
        csize = os.path.getsize(cpath)
        manifest = {"schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": "sha256:" + put(cpath), "size": csize},
                    "layers": layers}
        mpath = os.path.join(work, "manifest.json")
        with open(mpath, "w") as f:
            json.dump(manifest, f, separators=(",", ":"))
        msize = os.path.getsize(mpath)
        mdigest = put(mpath)
        with open(os.path.join(work, "oci", "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + mdigest, "size": msize,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": a.name,
                            "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[-1]}}]}
        with open(os.path.join(work, "oci", "index.json"), "w") as f:
            json.dump(index, f, separators=(",", ":"))
        subprocess.run(["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner",
                        "--mtime=@0", "-C", os.path.join(work, "oci"), "-cf", a.out, "."],
                       check=True)
        total = sum(l["size"] for l in layers)
        print("image %s manifest=sha256:%s layers=%d compressed=%d" %
              (a.name, mdigest, len(layers), total))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
