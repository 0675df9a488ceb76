"""Sending an image without the layers the host already has.

``python -m deployer.hosts.layers IMAGE SKIP`` writes ``docker save IMAGE`` to standard output without
the blobs of its first SKIP layers. ``docker load`` reads a layer's blob only when the host lacks that
layer (it looks the layer up by its chain ID first), so a host that has the first SKIP layers (the
deploy read which from the host's images) loads the image from what is sent. A rebuilt image whose
last layer changed costs that layer, not the whole image. Layers are matched by content (``docker
save`` writes each layer uncompressed: its digest is the layer's diff ID, whatever file name the format
gives it). At the end it prints to standard error how much it sent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Docker's chain IDs: a layer together with every layer below it (what a host has or lacks)."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else "sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def present_prefix(diff_ids: list[str], present: set[str]) -> int:
    """How many of the image's first layers the host has (a chain is there only with all below it)."""
    count = 0
    for i, chain in enumerate(chain_ids(diff_ids)):
        if chain in present:
            count = i + 1
    return count


def diff_ids(image: str) -> list[str]:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", image], capture_output=True, text=True, check=True)
    return json.loads(out.stdout) or []


class _Counter:
    def __init__(self, out) -> None:
        self.out, self.bytes = out, 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def main(argv: list[str]) -> int:
    image, skip = argv[0], int(argv[1])
    skipped = set(diff_ids(image)[:skip])
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    out = _Counter(sys.stdout.buffer)
    if not skipped:  # the host has none of it: the stream as docker save writes it, not taken apart and hashed
        shutil.copyfileobj(save.stdout, out, 1 << 20)
        if save.wait() != 0:
            return save.returncode
        print(f"sent {out.bytes / 1e6:.1f} MB of {image} (the host had none of its layers)", file=sys.stderr)
        return 0
    dropped = dropped_bytes = 0
    with tarfile.open(fileobj=save.stdout, mode="r|") as source, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as sent:
        for member in source:
            if not member.isfile():
                sent.addfile(member)
                continue
            # A layer is recognised by its content (its digest is its diff ID), whatever the format calls it:
            # held here while it is hashed, then sent or dropped.
            digest = hashlib.sha256()
            with tempfile.SpooledTemporaryFile(max_size=16 << 20) as held:
                data = source.extractfile(member)
                while chunk := data.read(1 << 20):
                    digest.update(chunk)
                    held.write(chunk)
                if f"sha256:{digest.hexdigest()}" in skipped:
                    dropped, dropped_bytes = dropped + 1, dropped_bytes + member.size
                    continue
                held.seek(0)
                sent.addfile(member, held)
    if save.wait() != 0:
        return save.returncode
    print(f"sent {out.bytes / 1e6:.1f} MB of {image} ({dropped} of its layers, {dropped_bytes / 1e6:.1f} MB, were there already)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
