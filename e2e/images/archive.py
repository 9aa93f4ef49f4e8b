#!/usr/bin/env python3
"""Writes a root file system as a single-layer docker-archive image.

The format `docker save` writes and `ctr images import`, `kind load
image-archive`, `docker load` and `buildah pull docker-archive:` read:
manifest.json, the image config, and one uncompressed layer tar.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rootfs", required=True)
    parser.add_argument("--tag", required=True, help="e.g. localhost/parley-redis:7")
    parser.add_argument("--out", required=True)
    parser.add_argument("--entrypoint", help="JSON list")
    parser.add_argument("--cmd", help="JSON list")
    parser.add_argument("--user")
    parser.add_argument("--workdir")
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()

    config = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + args.env}
    if args.entrypoint:
        config["Entrypoint"] = json.loads(args.entrypoint)
    if args.cmd:
        config["Cmd"] = json.loads(args.cmd)
    if args.user:
        config["User"] = args.user
    if args.workdir:
        config["WorkingDir"] = args.workdir

    out_dir = os.path.dirname(os.path.abspath(args.out))
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        layer = os.path.join(work, "layer.tar")
        # GNU tar keeps owners, modes, links and special files as they are;
        # the kernel's pseudo file systems are left empty.
        subprocess.run(
            ["tar", "-C", args.rootfs, "--numeric-owner", "--xattrs", "--sort=name",
             "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./dev/*",
             "-cf", layer, "."],
            check=True,
        )
        diff_id = sha256_of(layer)
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created_by": f"e2e/images: {args.tag}"}],
        }
        config_bytes = json.dumps(image_config, sort_keys=True).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        with open(os.path.join(work, config_name), "wb") as f:
            f.write(config_bytes)
        manifest = [{"Config": config_name, "RepoTags": [args.tag], "Layers": [f"{diff_id}/layer.tar"]}]
        with open(os.path.join(work, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f)
        tmp_out = args.out + ".tmp"
        with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(os.path.join(work, "manifest.json"), arcname="manifest.json")
            tar.add(os.path.join(work, config_name), arcname=config_name)
            tar.add(layer, arcname=f"{diff_id}/layer.tar")
        os.replace(tmp_out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
