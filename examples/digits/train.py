#!/usr/bin/python3
"""Train a small digit classifier on the example data set.

usage: train.py --data DIR --out DIR [--epochs N] [--workers N] [--batch N]

A training run shaped like a real one, for cleanroom's example and tests:
a Dataset that opens one .npy file per sample, a DataLoader with forked
worker processes, torch.save of {model, optimizer, epoch} after every epoch
(epoch-N.pt), and the final weights as model.safetensors written in the
safetensors layout (little-endian u64 header length, JSON header, raw data).
It marks each checkpoint with cleanroom.checkpoint() when that module is
importable, to show the explicit API; the hook sees the files either way.
"""
import argparse
import csv
import json
import os
import struct
import sys

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

try:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "hooks", "python"))
    import cleanroom
except ImportError:  # the example also runs without cleanroom
    cleanroom = None


class Digits(Dataset):
    def __init__(self, root):
        self.root = root
        with open(os.path.join(root, "labels.csv"), newline="") as f:
            self.rows = [(r["path"], int(r["label"])) for r in csv.DictReader(f)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        rel, label = self.rows[i]
        with open(os.path.join(self.root, rel), "rb") as f:
            img = np.load(f, allow_pickle=False)
        return torch.from_numpy(img.astype(np.float32) / 255.0).unsqueeze(0), label


def model():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10))


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.float64: "F64", torch.int64: "I64"}


def write_safetensors(tensors, path):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.numpy().tobytes()  # x86-64 is little-endian already
        header[name] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    loader = DataLoader(Digits(a.data), batch_size=a.batch, shuffle=True,
                        num_workers=a.workers, generator=torch.Generator().manual_seed(0),
                        multiprocessing_context="fork" if a.workers else None)
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, a.epochs + 1):
        seen = correct = 0
        total = 0.0
        for x, y in loader:
            opt.zero_grad()
            out = net(x)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
        path = os.path.join(a.out, f"epoch-{epoch}.pt")
        torch.save({"epoch": epoch, "model": net.state_dict(), "optim": opt.state_dict()}, path)
        if cleanroom is not None and cleanroom.active():
            cleanroom.checkpoint(path, step=epoch, metrics={"loss": total / seen,
                                                            "accuracy": correct / seen})
        print(f"epoch {epoch}: loss {total / seen:.4f} accuracy {correct / seen:.3f} -> {path}",
              flush=True)
    final = os.path.join(a.out, "model.safetensors")
    write_safetensors(net.state_dict(), final)
    print(f"final weights -> {final}", flush=True)


if __name__ == "__main__":
    main()
