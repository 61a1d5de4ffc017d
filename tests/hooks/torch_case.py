"""A small training-shaped Python program for tests/hooks/test_hooks.py.

Reads DIR/config.txt with open(), DIR/arr.npy with np.load, DIR/samples/*
through a DataLoader with two forked workers, and saves a state dict with
torch.save to DIR/model.pt. Prints the sum of the sample sizes.
"""
import os
import sys

import numpy as np
import torch


class Samples(torch.utils.data.Dataset):
    def __init__(self, root, n):
        self.root = root
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        with open(os.path.join(self.root, "samples", "s%02d.bin" % i), "rb") as f:
            return torch.tensor(len(f.read()))


def main():
    d = sys.argv[1]
    n = int(sys.argv[2])
    with open(os.path.join(d, "config.txt")) as f:
        f.read()
    arr = np.load(os.path.join(d, "arr.npy"))
    loader = torch.utils.data.DataLoader(
        Samples(d, n), batch_size=4, num_workers=2, multiprocessing_context="fork"
    )
    total = sum(int(b.sum()) for b in loader)
    torch.manual_seed(0)
    model = torch.nn.Linear(int(arr.shape[0]), 2)
    torch.save(model.state_dict(), os.path.join(d, "model.pt"))
    print(total)


if __name__ == "__main__":
    main()
