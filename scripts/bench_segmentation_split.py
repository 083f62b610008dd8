"""Times splitting a labelmap into nodes: the former per-label full-volume comparison against the one-pass split
of LNMStagingLib.io.segmentation (the masks are asserted identical).

Run: .venv/bin/python scripts/bench_segmentation_split.py
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from LNMStagingLib.io.segmentation import nodes_from_label_array


def per_label_split(labels: np.ndarray) -> list[np.ndarray]:
    """The former way: ``labels == value`` over the whole volume and find_objects, once per label."""
    masks = []
    for value in [int(v) for v in np.unique(labels) if v]:
        mask = labels == value
        box = ndimage.find_objects(mask.astype(np.uint8))[0]
        masks.append(mask[box].copy())
    return masks


def main() -> None:
    """Print the two timings for 15 and 100 nodes on a 40 x 384 x 384 uint16 labelmap (seeded)."""
    rng = np.random.default_rng(0)
    for count in (15, 100):
        labels = np.zeros((40, 384, 384), np.uint16)
        for value in range(1, count + 1):
            k, j, i = rng.integers(2, 34), rng.integers(5, 370), rng.integers(5, 370)
            labels[k:k + 4, j:j + 8, i:i + 7] = value
        started = time.perf_counter()
        reference = per_label_split(labels)
        old = time.perf_counter() - started
        started = time.perf_counter()
        nodes = nodes_from_label_array(labels).nodes
        new = time.perf_counter() - started
        assert all(np.array_equal(m, n.mask) for m, n in zip(reference, nodes, strict=True))
        print(f"{count} nodes, 40x384x384 uint16: per-label {old * 1000:.0f} ms, one pass {new * 1000:.0f} ms, "
              f"{old / new:.1f}x")


if __name__ == "__main__":
    main()
