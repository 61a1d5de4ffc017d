#!/usr/bin/python3
"""Build the example data set: N 32x32 digit images as .npy files plus labels.csv.

usage: make_data.py N OUTDIR

The images come from scikit-learn's bundled 8x8 digits (shipped in the Debian
package; nothing is downloaded), scaled up 4x, shifted and given noise seeded
by the sample number, so every file differs and the set is the same bytes on
every machine:

    OUTDIR/samples/<label>/<index:06d>.npy
    OUTDIR/labels.csv            (path,label; paths relative to OUTDIR)
"""
import csv
import io
import os
import sys

import numpy as np
from sklearn.datasets import load_digits


def image(digits, i):
    base = digits.images[i % len(digits.images)]
    big = np.repeat(np.repeat(base, 4, axis=0), 4, axis=1) * 16.0
    rng = np.random.default_rng(1000 + i)
    big = np.roll(big, tuple(int(s) for s in rng.integers(-2, 3, size=2)), axis=(0, 1))
    big += rng.normal(0.0, 10.0, big.shape)
    return np.clip(big, 0, 255).astype(np.uint8), int(digits.target[i % len(digits.target)])


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    n, out = int(sys.argv[1]), sys.argv[2]
    digits = load_digits()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for i in range(n):
            arr, label = image(digits, i)
            rel = f"samples/{label}/{i:06d}.npy"
            os.makedirs(os.path.join(out, os.path.dirname(rel)), exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            with open(os.path.join(out, rel), "wb") as g:
                g.write(buf.getvalue())
            w.writerow([rel, label])
    print(f"wrote {n} samples to {out}")


if __name__ == "__main__":
    main()
