"""Checkpoint history end to end: `cleanroom record` stores a tensor manifest
and a delta with every checkpoint of a real PyTorch run; `show`, `replay`,
`diff` and `find` read them back. Every hash and norm is recomputed here in
Python from the framework's own tensors (torch.load), so a wrong answer from
the binary fails a test.

Needs /usr/bin/python3 with torch and numpy (scripts/setup.sh).
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402
from test_record import PY, workload  # noqa: E402

import torch  # noqa: E402


def flatten(obj, prefix=""):
    """State-dict style names for every tensor of a torch.load()ed object."""
    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def safetensors_tensors(path):
    """Tensors of a safetensors file, read with the standard library and torch."""
    import struct
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    kinds = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16,
             "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(raw[base + a:base + b]), dtype=kinds[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


class History(crtest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = os.path.realpath(tempfile.mkdtemp(prefix="cr-hist-"))
        wl, kind = workload()
        cls.data = os.path.join(cls.dir, "data")
        cls.ckpt = os.path.join(cls.dir, "ckpt")
        r = crtest.run([PY, os.path.join(wl, "make_data.py"), "600", cls.data])
        assert r.rc == 0, r
        cls.store = crtest.Store(os.path.join(cls.dir, "store"))
        args = [PY, os.path.join(wl, "train.py"), "--data", cls.data, "--out", cls.ckpt,
                "--epochs", "3", "--workers", "1"]
        cls.rec = crtest.cleanroom("record", "--quiet", "--data", cls.data, "--", *args,
                                   store=cls.store.path, timeout=900)
        assert cls.rec.rc == 0, cls.rec

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, True)

    def show(self, key):
        r = crtest.cleanroom("show", "--json", key, store=self.store.path)
        self.assertEqual(r.rc, 0, r)
        return r.json()

    def epoch(self, k):
        return os.path.join(self.ckpt, f"epoch-{k}.pt")

    def test_torch_manifests_match_torch(self):
        for k in (1, 2, 3):
            out = self.show(self.epoch(k))
            m = out["tensors"]
            self.assertEqual(m["format"], "pytorch")
            self.assertEqual(out["event"]["tensors"], m)
            # the digest the event carries is the SHA-256 of the manifest's canonical JSON
            self.assertEqual(out["event"]["tensors_sha256"], crtest.sha256(crtest.canonical(m)).hex())
            want = {n: hashlib.sha256(tensor_bytes(t)).hexdigest()
                    for n, t in flatten(torch.load(self.epoch(k), weights_only=False)).items()}
            got = {t["name"]: t["sha256"] for t in m["tensors"]}
            self.assertEqual(got, want)
            for t in m["tensors"]:
                self.assertRegex(t["sha256"], "^[0-9a-f]{64}$")
            self.assertTrue(any(n.startswith("model.") for n in got), got)
            self.assertTrue(any(n.startswith("optim.state.") for n in got), got)

    def test_safetensors_manifest_matches(self):
        path = os.path.join(self.ckpt, "model.safetensors")
        out = self.show(path)
        self.assertEqual(out["tensors"]["format"], "safetensors")
        want = {n: hashlib.sha256(tensor_bytes(t)).hexdigest()
                for n, t in safetensors_tensors(path).items()}
        self.assertEqual({t["name"]: t["sha256"] for t in out["tensors"]["tensors"]}, want)

    def test_deltas_match_torch(self):
        first = self.show(self.epoch(1))
        self.assertIsNone(first["delta"], "the first checkpoint of a run has no delta")
        for k in (2, 3):
            prev_ev = self.show(self.epoch(k - 1))
            out = self.show(self.epoch(k))
            d = out["delta"]
            self.assertEqual(d["previous"], prev_ev["index"])
            old = flatten(torch.load(self.epoch(k - 1), weights_only=False))
            new = flatten(torch.load(self.epoch(k), weights_only=False))
            changed = {c["name"]: c for c in d["changed"]}
            for name, t in new.items():
                o = old[name]
                if tensor_bytes(t) == tensor_bytes(o):
                    self.assertNotIn(name, changed)
                    continue
                self.assertIn(name, changed)
                c = changed[name]
                self.assertEqual(c["old"], hashlib.sha256(tensor_bytes(o)).hexdigest())
                self.assertEqual(c["new"], hashlib.sha256(tensor_bytes(t)).hexdigest())
                if t.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                    diff = t.double() - o.double()
                    l2 = diff.norm().item()
                    self.assertAlmostEqual(float(c["l2"]), l2, delta=1e-6 * max(l2, 1e-30))
                    self.assertAlmostEqual(float(c["max_abs"]), diff.abs().max().item(),
                                           delta=1e-6 * max(diff.abs().max().item(), 1e-30))
                    on = o.double().norm().item()
                    if on > 0:
                        self.assertAlmostEqual(float(c["rel"]), l2 / on, delta=1e-6 * (l2 / on) + 1e-30)
            self.assertEqual(d["added"], [])
            self.assertEqual(d["removed"], [])

    def test_replay_passes(self):
        r = crtest.cleanroom("replay", "--json", "--checkpoints", self.ckpt, store=self.store.path)
        self.assertEqual(r.rc, 0, r)
        out = r.json()
        self.assertTrue(out["ok"])
        rows = out["checkpoints"]
        self.assertEqual([os.path.basename(x["file"]) for x in rows],
                         ["epoch-1.pt", "epoch-2.pt", "epoch-3.pt", "model.safetensors"])
        self.assertTrue(all(x["status"] == "ok" and not x["problems"] for x in rows), rows)
        self.assertEqual(out["summary"]["deltas_checked"], 3)
        self.assertGreater(rows[0]["inputs"], 0)
        text = crtest.cleanroom("replay", "--checkpoints", self.ckpt, store=self.store.path)
        self.assertEqual(text.rc, 0, text)
        self.assertIn("REPLAYED", text.out)

    def tensor_file_offset(self, recorded, path, name):
        """Where the bytes of tensor `name` lie in a copy of a torch.save zip, per the manifest."""
        t = next(t for t in self.show(recorded)["tensors"]["tensors"] if t["name"] == name)
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(t["member"])
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        return info.header_offset + 30 + name_len + extra_len + t["offset"], t

    def test_replay_names_the_flipped_tensor(self):
        copy = os.path.join(self.dir, "flipped")
        shutil.rmtree(copy, True)
        shutil.copytree(self.ckpt, copy)
        victim = next(t["name"] for t in self.show(self.epoch(2))["tensors"]["tensors"]
                      if t["length"] > 16 and t["name"].startswith("model."))
        off, t = self.tensor_file_offset(self.epoch(2), os.path.join(copy, "epoch-2.pt"), victim)
        with open(os.path.join(copy, "epoch-2.pt"), "r+b") as f:
            f.seek(off + 5)
            b = f.read(1)
            f.seek(off + 5)
            f.write(bytes([b[0] ^ 0x40]))
        r = crtest.cleanroom("replay", "--json", "--checkpoints", copy, store=self.store.path)
        self.assertEqual(r.rc, 1, r)
        rows = {os.path.basename(x["file"]): x for x in r.json()["checkpoints"]}
        bad = rows["epoch-2.pt"]
        self.assertEqual(bad["status"], "mismatch")
        tensor_problems = [p for p in bad["problems"] if "tensor " in p and "SHA-256" in p]
        self.assertEqual(len(tensor_problems), 1, bad["problems"])
        self.assertIn("tensor %s:" % victim, tensor_problems[0])
        for other in ("epoch-1.pt", "epoch-3.pt", "model.safetensors"):
            self.assertEqual(rows[other]["status"], "ok", rows[other])
            self.assertEqual(rows[other]["problems"], [], rows[other])
        # epoch-3's delta is not recomputed from a base that does not match its record
        self.assertFalse(rows["epoch-3.pt"]["delta_checked"])
        self.assertIn("does not match", rows["epoch-3.pt"]["delta_note"])
        self.assertEqual(r.json()["summary"]["failed"], 1)
        text = crtest.cleanroom("replay", "--checkpoints", copy, store=self.store.path)
        self.assertEqual(text.rc, 1)
        self.assertIn("epoch-2.pt: tensor %s:" % victim, text.out)

    def test_replay_missing_file(self):
        copy = os.path.join(self.dir, "missing")
        shutil.rmtree(copy, True)
        shutil.copytree(self.ckpt, copy)
        os.unlink(os.path.join(copy, "epoch-1.pt"))
        r = crtest.cleanroom("replay", "--json", "--checkpoints", copy, store=self.store.path)
        self.assertEqual(r.rc, 1, r)
        rows = {os.path.basename(x["file"]): x for x in r.json()["checkpoints"]}
        self.assertEqual(rows["epoch-1.pt"]["status"], "missing")
        self.assertFalse(rows["epoch-2.pt"]["delta_checked"])

    def test_replay_recomputes_the_totals(self):
        r = crtest.cleanroom("replay", "--json", "--checkpoints", self.ckpt, store=self.store.path)
        rows = {os.path.basename(x["file"]): x for x in r.json()["checkpoints"]}
        recorded = self.show(self.epoch(2))["delta"]
        self.assertTrue(rows["epoch-2.pt"]["delta_checked"])
        self.assertAlmostEqual(float(rows["epoch-2.pt"]["l2"]), float(recorded["l2"]),
                               delta=1e-6 * float(recorded["l2"]))

    def test_replay_with_nothing_to_replay(self):
        empty = crtest.Store(os.path.join(self.dir, "empty"))
        self.assertEqual(crtest.cleanroom("init", store=empty.path).rc, 0)
        r = crtest.cleanroom("replay", "--checkpoints", self.ckpt, store=empty.path)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("no checkpoint", r.err)

    def test_replay_from_bundle(self):
        keys = os.path.join(self.dir, "keys")
        if not os.path.exists(keys):
            r = crtest.cleanroom("keygen", "--out", keys)
            self.assertEqual(r.rc, 0, r)
        bundle = os.path.join(self.dir, "b.tar.zst")
        r = crtest.cleanroom("bundle", "--key", os.path.join(keys, "cleanroom.key"), "-o", bundle,
                             store=self.store.path)
        self.assertEqual(r.rc, 0, r)
        r = crtest.cleanroom("replay", "--json", "--key", os.path.join(keys, "cleanroom.pub"),
                             "--checkpoints", self.ckpt, bundle)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(len(r.json()["checkpoints"]), 4)
        # a bundle that does not verify is refused
        other = os.path.join(self.dir, "keys2")
        if not os.path.exists(other):
            crtest.cleanroom("keygen", "--out", other)
        r = crtest.cleanroom("replay", "--key", os.path.join(other, "cleanroom.pub"),
                             "--checkpoints", self.ckpt, bundle)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("does not verify", r.err)

    def test_diff_files_and_recorded(self):
        r = crtest.cleanroom("diff", "--json", self.epoch(1), self.epoch(3))
        self.assertEqual(r.rc, 0, r)
        d = r.json()["delta"]
        old = flatten(torch.load(self.epoch(1), weights_only=False))
        new = flatten(torch.load(self.epoch(3), weights_only=False))
        name = next(n for n in new if n.startswith("model.") and n.endswith("weight"))
        c = next(c for c in d["changed"] if c["name"] == name)
        l2 = (new[name].double() - old[name].double()).norm().item()
        self.assertAlmostEqual(float(c["l2"]), l2, delta=1e-6 * l2)
        # recorded checkpoints by hash: hashes only
        s1 = self.show(self.epoch(1))["event"]["sha256"]
        s3 = self.show(self.epoch(3))["event"]["sha256"]
        r = crtest.cleanroom("diff", "--json", s1, s3, store=self.store.path)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual({c["name"] for c in r.json()["delta"]["changed"]},
                         {c["name"] for c in d["changed"]})
        r = crtest.cleanroom("diff", self.epoch(1), "no-such-checkpoint", store=self.store.path)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("no-such-checkpoint", r.err)

    def test_find_input(self):
        sample = next(os.path.join(root, n) for root, _, names in sorted(os.walk(self.data))
                      for n in sorted(names) if n.endswith(".npy"))
        sha = crtest.file_sha256(sample)
        r = crtest.cleanroom("find", "--json", sha, store=self.store.path)
        self.assertEqual(r.rc, 0, r)
        out = r.json()
        self.assertEqual(len(out["matches"]), 1)
        m = out["matches"][0]
        self.assertEqual(m["path"], sample)
        cks = [(os.path.basename(c["path"]), c["direct"]) for c in m["checkpoints"]]
        self.assertEqual(cks[0], ("epoch-1.pt", True))
        self.assertIn(("epoch-3.pt", True), cks)  # read again every epoch
        self.assertIn(m["run"], out["runs"])
        r = crtest.cleanroom("find", os.path.basename(sample), store=self.store.path)
        self.assertEqual(r.rc, 0, r)
        self.assertIn("epoch-1.pt", r.out)
        # a relative path resolves to the recorded absolute one
        r = crtest.cleanroom("find", "--json", os.path.relpath(sample, self.dir), store=self.store.path,
                             cwd=self.dir)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual([m["path"] for m in r.json()["matches"]], [sample])
        r = crtest.cleanroom("find", "0" * 64, store=self.store.path)
        self.assertEqual(r.rc, 1, r)


class InPlaceAndTied(crtest.TestCase):
    """A model with tied weights saved over the same path every step: the
    delta still comes from the bytes the previous save held."""

    SCRIPT = r"""
import sys, time, torch, torch.nn as nn
torch.manual_seed(0)
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.out = nn.Linear(16, 50, bias=False)
        self.out.weight = self.emb.weight   # tied
        self.norm = nn.LayerNorm(16).to(torch.bfloat16)
m = M()
opt = torch.optim.SGD(m.parameters(), lr=0.1)
for step in range(3):
    x = torch.randint(0, 50, (8,))
    loss = m.out(m.emb(x)).logsumexp(1).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    torch.save(m.state_dict(), sys.argv[1])
    torch.save(m.state_dict(), sys.argv[1] + ".step%d" % step)
    time.sleep(1)  # the recorder reads each save before the next overwrites it
"""

    def test_overwritten_in_place_with_tied_weights(self):
        d = os.path.realpath(tempfile.mkdtemp(prefix="cr-tied-"))
        self.addCleanup(shutil.rmtree, d, True)
        script = os.path.join(d, "tied.py")
        with open(script, "w") as f:
            f.write(self.SCRIPT)
        store = crtest.Store(os.path.join(d, "store"))
        model = os.path.join(d, "model.pt")
        r = crtest.cleanroom("record", "--quiet", "--checkpoints", "model.pt", "--", PY, script, model,
                             store=store.path, timeout=600)
        self.assertEqual(r.rc, 0, r)
        evs = [e for e in store.events() if e["event"]["type"] == "checkpoint"]
        self.assertEqual(len(evs), 3)
        for step, e in enumerate(evs):
            saved = torch.load(model + ".step%d" % step, weights_only=False)
            m = {t["name"]: t for t in e["event"]["tensors"]["tensors"]}
            self.assertEqual(set(m), set(saved))
            for name, t in saved.items():
                self.assertEqual(m[name]["sha256"], hashlib.sha256(tensor_bytes(t)).hexdigest(), name)
            # tied: both names, one storage, the same bytes
            self.assertEqual(m["emb.weight"]["sha256"], m["out.weight"]["sha256"])
            self.assertEqual(m["emb.weight"]["member"], m["out.weight"]["member"])
            if step == 0:
                self.assertNotIn("delta", e["event"])
                continue
            self.assertEqual(e["event"]["delta"]["previous"], evs[step - 1]["index"])
            old = torch.load(model + ".step%d" % (step - 1), weights_only=False)
            changed = {c["name"]: c for c in e["event"]["delta"]["changed"]}
            diff = saved["emb.weight"].double() - old["emb.weight"].double()
            self.assertAlmostEqual(float(changed["emb.weight"]["l2"]), diff.norm().item(),
                                   delta=1e-6 * diff.norm().item())
            self.assertEqual(changed["out.weight"]["l2"], changed["emb.weight"]["l2"])


class Shards(crtest.TestCase):
    """WebDataset-style shards: each archive read by the training gets a member
    manifest, and `find` traces one sample inside a shard to the checkpoint."""

    SCRIPT = r"""
import sys, tarfile, zipfile, torch
total = 0
for name in sys.argv[1:-1]:
    if name.endswith(".zip"):
        with zipfile.ZipFile(name) as z:
            for m in z.namelist():
                total += len(z.read(m))
    else:
        with tarfile.open(name) as t:
            for m in t:
                if m.isfile():
                    total += len(t.extractfile(m).read())
torch.save({"w": torch.full((4,), float(total))}, sys.argv[-1])
"""

    def make_shards(self, d):
        """Two tar shards (one gzipped) and a zip under d/data: returns
        (data folder, {member name: (archive path, sha256, size)})."""
        import io
        import tarfile
        data = os.path.join(d, "data")
        os.makedirs(data)
        samples = {}
        for k, mode in ((0, "w:gz"), (1, "w")):
            path = os.path.join(data, "shard-%06d.tar%s" % (k, ".gz" if mode == "w:gz" else ""))
            with tarfile.open(path, mode) as t:
                for i in range(5):
                    name = "%06d.cls" % (k * 10 + i)
                    body = ("label %d of shard %d" % (i, k)).encode() * (i + 1)
                    info = tarfile.TarInfo(name)
                    info.size = len(body)
                    t.addfile(info, io.BytesIO(body))
                    samples[name] = (path, hashlib.sha256(body).hexdigest(), len(body))
        zpath = os.path.join(data, "extra.zip")
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("zz/sample.txt", b"zip member " * 50)
        samples["zz/sample.txt"] = (zpath, hashlib.sha256(b"zip member " * 50).hexdigest(), 550)
        return data, samples

    def check_members(self, store, shards, samples):
        inputs = {e["event"]["path"]: e["event"] for e in store.events() if e["event"]["type"] == "input"}
        self.assertEqual(sorted(inputs), shards)
        for path, ev in inputs.items():
            self.assertEqual(ev["sha256"], crtest.file_sha256(path))
            sh = ev["shard"]
            self.assertEqual(ev["shard_sha256"], crtest.sha256(crtest.canonical(sh)).hex())
            want = {n: (h, size) for n, (p, h, size) in samples.items() if p == path}
            self.assertEqual({m["name"]: (m["sha256"], m["size"]) for m in sh["members"]}, want)
        return inputs

    def test_members_recorded_and_found(self):
        d = os.path.realpath(tempfile.mkdtemp(prefix="cr-shards-"))
        self.addCleanup(shutil.rmtree, d, True)
        data, samples = self.make_shards(d)
        zpath = os.path.join(data, "extra.zip")
        script = os.path.join(d, "read.py")
        with open(script, "w") as f:
            f.write(self.SCRIPT)
        store = crtest.Store(os.path.join(d, "store"))
        shards = sorted(os.path.join(data, n) for n in os.listdir(data))
        r = crtest.cleanroom("record", "--quiet", "--data", data, "--", PY, script, *shards,
                             os.path.join(d, "w.pt"), store=store.path, timeout=600)
        self.assertEqual(r.rc, 0, r)
        inputs = self.check_members(store, shards, samples)
        self.assertEqual(inputs[zpath]["shard"]["format"], "zip")
        for name, (path, sha, _) in samples.items():
            for key in (sha, name):
                r = crtest.cleanroom("find", "--json", key, store=store.path)
                self.assertEqual(r.rc, 0, r)
                m = [m for m in r.json()["matches"] if m.get("member") == name]
                self.assertEqual(len(m), 1, r.out)
                self.assertEqual(m[0]["path"], path)
                self.assertEqual(m[0]["sha256"], sha)
                self.assertEqual([os.path.basename(c["path"]) for c in m[0]["checkpoints"] if c["direct"]],
                                 ["w.pt"])

    def test_add_gives_archives_member_manifests(self):
        """`cleanroom add` records shards as `record` does; a damaged archive
        keeps its file hash and says why it has no manifest."""
        d = os.path.realpath(tempfile.mkdtemp(prefix="cr-addshards-"))
        self.addCleanup(shutil.rmtree, d, True)
        data, samples = self.make_shards(d)
        shards = sorted(os.path.join(data, n) for n in os.listdir(data))
        store = crtest.Store(os.path.join(d, "store"))
        store.init()
        r = store.cr("add", "--json", data)
        self.assertEqual(r.json()["shards"], len(shards), r)
        self.assertEqual(r.json()["recorded"], len(shards), r)
        self.check_members(store, shards, samples)
        name, (path, sha, _) = sorted(samples.items())[0]
        r = store.cr("find", "--json", sha)
        self.assertEqual([(m["path"], m.get("member")) for m in r.json()["matches"]], [(path, name)])
        # Named as an archive, but not one: hashed and recorded all the same.
        bad = os.path.join(d, "more", "broken.tar.gz")
        os.makedirs(os.path.dirname(bad))
        with open(bad, "wb") as f:
            f.write(b"\x1f\x8b not really gzip" * 10)
        r = store.cr("add", "--json", bad)
        self.assertEqual((r.json()["recorded"], r.json()["shards"]), (1, 0), r)
        ev = store.events()[-1]["event"]
        self.assertEqual(ev["sha256"], crtest.file_sha256(bad))
        self.assertNotIn("shard", ev)
        self.assertNotIn("shard_sha256", ev)
        self.assertTrue(ev["shard_error"], ev)
        store.cr("check")

    def test_member_manifest_too_large_for_an_event(self):
        import tarfile
        d = os.path.realpath(tempfile.mkdtemp(prefix="cr-bigshard-"))
        self.addCleanup(shutil.rmtree, d, True)
        data = os.path.join(d, "data")
        os.makedirs(data)
        big = os.path.join(data, "big.tar")
        with tarfile.open(big, "w", format=tarfile.GNU_FORMAT) as t:
            for i in range(70000):
                t.addfile(tarfile.TarInfo("sample-%08d-with-a-fairly-long-name.cls" % i))
        store = crtest.Store(os.path.join(d, "store"))
        r = crtest.cleanroom("record", "--quiet", "--data", data, "--", PY, "-c",
                             "open(%r, 'rb').read()" % big, store=store.path, timeout=600)
        self.assertEqual(r.rc, 0, r)
        ev = next(e["event"] for e in store.events() if e["event"]["type"] == "input")
        self.assertEqual(ev["sha256"], crtest.file_sha256(big))
        self.assertNotIn("shard", ev)
        self.assertRegex(ev["shard_sha256"], "^[0-9a-f]{64}$")
        self.assertIn("70000 entries", ev["shard_error"])


if __name__ == "__main__":
    unittest.main()
