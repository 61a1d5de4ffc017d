"""A training-shaped Python workload for measuring the hook's overhead.

  bench_train.py DIR prep   # write 4000 samples of 4 KiB
  bench_train.py DIR        # import torch, 8 epochs of a DataLoader with
                            # 2 forked workers reading every sample, a small
                            # MLP trained on them, torch.save at each epoch;
                            # prints the wall time from start to end
Run it bare and under hookdump --quiet (tests/hooks/bench.sh does both).
"""
import os
import sys
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402

N = 4000


class Samples(torch.utils.data.Dataset):
    def __init__(self, root):
        self.root = root

    def __len__(self):
        return N

    def __getitem__(self, i):
        with open(os.path.join(self.root, "s%05d.bin" % i), "rb") as f:
            data = np.frombuffer(f.read(), dtype=np.float32)
        return torch.from_numpy(data[:64].copy()), int(data[0] > 0)


def main():
    d = sys.argv[1]
    if len(sys.argv) > 2 and sys.argv[2] == "prep":
        os.makedirs(d, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(N):
            rng.standard_normal(1024, dtype=np.float32).tofile(os.path.join(d, "s%05d.bin" % i))
        return
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(Samples(d), batch_size=32, shuffle=True, num_workers=2,
                                         multiprocessing_context="fork")
    for epoch in range(8):
        for x, y in loader:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        torch.save(model.state_dict(), os.path.join(d, "ckpt-%d.pt" % epoch))
    print("%.3f" % (time.perf_counter() - T0))


if __name__ == "__main__":
    main()
