"""Regenerate the small real Fashion-MNIST subset shipped in ``calibration_data/data``.

``python -m quantbench.calibration_data.make_subset [--source /usr/share/datasets/fashion-mnist]``:
2000 training images (calibration) and 2000 test images (evaluation), class-balanced and seeded,
as gzipped IDX files plus MANIFEST.json (source, license, indices, checksums).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from .idx import DEBIAN_FASHION_MNIST, SHIPPED, open_idx, write_idx

PER_SPLIT = 2000
SEED = 20261122


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(DEBIAN_FASHION_MNIST), help="directory with the full IDX files")
    args = ap.parse_args(argv)
    src = open_idx(Path(args.source), "fashion-mnist", "fashion-mnist")
    SHIPPED.mkdir(parents=True, exist_ok=True)
    manifest = {
        "dataset": "Fashion-MNIST (Zalando Research)",
        "license": "MIT",
        "upstream": "github.com/zalandoresearch/fashion-mnist (Debian package dataset-fashion-mnist)",
        "how": f"class-balanced random subset, seed {SEED}: {PER_SPLIT} of the 60000 training images "
               f"(calibration) and {PER_SPLIT} of the 10000 test images (evaluation)",
        "indices": {}, "sha256": {},
    }
    for split, prefix in ((src.calibration, "train"), (src.evaluation, "t10k")):
        idx = split.select(PER_SPLIT, seed=SEED)
        manifest["indices"][prefix] = idx.tolist()
        for kind, arr in (("images-idx3", split.read(idx)), ("labels-idx1", split.labels[idx].astype(np.uint8))):
            path = SHIPPED / f"{prefix}-{kind}-ubyte.gz"
            write_idx(path, arr)
            manifest["sha256"][path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (SHIPPED / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {SHIPPED}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
