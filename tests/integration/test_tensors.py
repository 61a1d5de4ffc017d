#!/usr/bin/python3
"""`cleanroom manifest` on real checkpoint files: tensor manifests and deltas.

Every figure the CLI prints is recomputed here independently, from the
framework's own tensors: per-tensor SHA-256 from torch's bytes
(t.numpy().tobytes()) for safetensors written by the reference workload's
save_safetensors, from the generator's arrays for GGUF files written by
tests/fixtures/tensors/make_gguf.py (v2 and v3); delta norms from torch's
(new - old).norm() and .abs().max(); the manifest digest from the canonical
JSON. Hostile files must give exit status 1 with a message naming the file,
never a crash.

Run standalone: /usr/bin/python3 tests/integration/test_tensors.py
(CLEANROOM=path/to/cleanroom to test another binary).
"""
import hashlib
import json
import os
import struct
import sys
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import crtest  # noqa: E402
from crtest import EXIT_OK, EXIT_VERIFY, canonical, cleanroom, file_sha256  # noqa: E402

SRC = os.environ.get("CR_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))
sys.path.insert(0, os.path.join(SRC, "tests", "fixtures", "tensors"))
import make_gguf  # noqa: E402


def _workload():
    """The reference workload's train.py module ($CR_WORKLOAD, else ../shared/workload)."""
    for d in (os.environ.get("CR_WORKLOAD"), os.path.join(SRC, "..", "shared", "workload")):
        if d and os.path.exists(os.path.join(d, "train.py")):
            sys.path.insert(0, os.path.realpath(d))
            import train
            return train
    return None


TRAIN = _workload()
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}


def save_safetensors(tensors, path, metadata=None):
    """The workload's writer when it is there (it goes through numpy, so no BF16),
    else the same layout written here."""
    if TRAIN is not None and all(t.dtype != torch.bfloat16 for t in tensors.values()):
        return TRAIN.save_safetensors(tensors, path, metadata)
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        b = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make_model(seed):
    torch.manual_seed(seed)
    if TRAIN is not None:
        return TRAIN.make_model("small")
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 10))


def tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def sha(b):
    return hashlib.sha256(b).hexdigest()


class ManifestTest(crtest.TestCase):

    def manifest(self, path, *args, rc=EXIT_OK):
        r = cleanroom("manifest", "--json", *args, path)
        self.assertEqual(r.rc, rc, r)
        self.assertNotIn("Sanitizer", r.err)
        return r.json() if rc == EXIT_OK else r

    def check_envelope(self, path, j):
        """File hash, digest over the canonical manifest JSON, every tensor in the file."""
        self.assertEqual(j["sha256"], file_sha256(path))
        m = j["manifest"]
        self.assertEqual(j["digest"], sha(canonical(m)))
        self.assertEqual((m["type"], m["v"]), ("tensor_manifest", 1))
        self.assertEqual(m["size"], os.path.getsize(path))
        with open(path, "rb") as f:
            data = f.read()
        for t in m["tensors"]:
            self.assertLessEqual(t["offset"] + t["length"], len(data))
            self.assertEqual(t["sha256"], sha(data[t["offset"]:t["offset"] + t["length"]]))
        return m

    # ----------------------------------------------------------- safetensors --

    def test_workload_safetensors(self):
        model = make_model(0)
        sd = model.state_dict()
        sd["extra.half"] = torch.randn(7, 3).half()
        sd["extra.f64"] = torch.randn(2, 2).double()
        sd["extra.steps"] = torch.arange(4, dtype=torch.int64)
        p = os.path.join(self.tmp, "model.safetensors")
        save_safetensors(sd, p, {"format": "pt", "epochs": 1})
        j = self.manifest(p)
        m = self.check_envelope(p, j)
        self.assertEqual(m["format"], "safetensors")
        self.assertNotIn("note", m)
        got = {t["name"]: t for t in m["tensors"]}
        self.assertEqual(set(got), set(sd))
        for name, t in sd.items():
            self.assertEqual(got[name]["sha256"], sha(tensor_bytes(t)), name)
            self.assertEqual(got[name]["dtype"], DTYPES[t.dtype], name)
            self.assertEqual(got[name]["shape"], list(t.shape), name)
            self.assertEqual(got[name]["length"], t.numel() * t.element_size(), name)
        # data order: offsets increase
        offs = [t["offset"] for t in m["tensors"]]
        self.assertEqual(offs, sorted(offs))
        # the text form names every tensor and its hash
        r = cleanroom("manifest", p)
        self.assertEqual(r.rc, EXIT_OK, r)
        for name, t in sd.items():
            self.assertIn(sha(tensor_bytes(t)), r.out)
            self.assertIn(name, r.out)

    def test_large_safetensors_threaded_file_hash(self):
        # > 8 MiB: the file's SHA-256 runs on its own thread over the same buffers
        torch.manual_seed(1)
        sd = {"big": torch.randn(3_000_001), "small": torch.randn(3, 3), "h": torch.randn(999).half()}
        p = os.path.join(self.tmp, "big.safetensors")
        save_safetensors(sd, p)
        j = self.manifest(p)
        self.check_envelope(p, j)
        got = {t["name"]: t["sha256"] for t in j["manifest"]["tensors"]}
        for name, t in sd.items():
            self.assertEqual(got[name], sha(tensor_bytes(t)))

    def test_delta_matches_torch(self):
        torch.manual_seed(2)
        old = make_model(3).state_dict()
        new = {k: v.clone() for k, v in old.items()}
        names = sorted(old)
        # a realistic update on some tensors, none on one, a big one on another
        new[names[0]] += 1e-3 * torch.randn_like(new[names[0]])
        new[names[1]] += 0.5 * torch.randn_like(new[names[1]])
        new[names[-1]] -= 2e-5
        old["only.old"] = torch.randn(3)
        new["only.new"] = torch.randn(2)
        old["half"] = torch.randn(64).half()
        new["half"] = (old["half"].float() + 0.01).half()
        old["bf"] = torch.randn(33).bfloat16()
        new["bf"] = (old["bf"].float() * 1.5).bfloat16()
        old["d"] = torch.randn(10).double()
        new["d"] = old["d"] * 2
        old["ints"] = torch.arange(5)
        new["ints"] = torch.arange(5) + 1
        po, pn = os.path.join(self.tmp, "old.safetensors"), os.path.join(self.tmp, "new.safetensors")
        save_safetensors(old, po)
        save_safetensors(new, pn)
        j = self.manifest(pn, "--against", po)
        d = j["delta"]
        self.assertEqual(d["added"], ["only.new"])
        self.assertEqual(d["removed"], ["only.old"])
        changed = {c["name"]: c for c in d["changed"]}
        want_changed = {n for n in new if n in old and not torch.equal(new[n], old[n])}
        self.assertEqual(set(changed), want_changed)
        self.assertEqual(d["unchanged"], len([n for n in new if n in old]) - len(want_changed))
        sum_d2 = sum_o2 = 0.0
        for name, c in changed.items():
            self.assertEqual(c["old"], sha(tensor_bytes(old[name])))
            self.assertEqual(c["new"], sha(tensor_bytes(new[name])))
            if name == "ints":
                self.assertNotIn("l2", c)
                continue
            diff = new[name].double() - old[name].double()
            l2 = diff.norm().item()
            # torch's own figure in the tensor's dtype (float32 here) agrees within 1e-6
            l2_torch = (new[name] - old[name]).float().norm().item()
            mx = (new[name] - old[name]).abs().max().item()
            rel = l2 / old[name].double().norm().item()
            for key, want in (("l2", l2), ("max_abs", mx), ("rel", rel)):
                got = float(c[key])
                self.assertLessEqual(abs(got - want), 1e-6 * abs(want) + 1e-30, (name, key, got, want))
            if new[name].dtype == torch.float32:
                self.assertLessEqual(abs(float(c["l2"]) - l2_torch), 1e-6 * l2_torch, name)
            self.assertFalse(c.get("nonfinite", False))
        for name in new:
            if name in old and new[name].is_floating_point():
                sum_d2 += (new[name].double() - old[name].double()).pow(2).sum().item()
                sum_o2 += old[name].double().pow(2).sum().item()
        self.assertLessEqual(abs(float(d["l2"]) - sum_d2 ** 0.5), 1e-6 * sum_d2 ** 0.5)
        self.assertLessEqual(abs(float(d["rel"]) - (sum_d2 / sum_o2) ** 0.5), 1e-6 * (sum_d2 / sum_o2) ** 0.5)
        # reals are decimal strings, the rest integers: the delta fits in an event
        self.assertIsInstance(d["l2"], str)
        self.assertIsInstance(d["unchanged"], int)
        self.assertEqual(j["against_digest"], self.manifest(po)["digest"])

    def test_nonfinite_flagged(self):
        old = {"w": torch.tensor([1.0, 2.0, 3.0])}
        new = {"w": torch.tensor([1.0, float("nan"), 4.0])}
        po, pn = os.path.join(self.tmp, "o.safetensors"), os.path.join(self.tmp, "n.safetensors")
        save_safetensors(old, po)
        save_safetensors(new, pn)
        c = self.manifest(pn, "--against", po)["delta"]["changed"][0]
        self.assertTrue(c["nonfinite"])
        self.assertAlmostEqual(float(c["l2"]), 1.0, places=9)

    def flip_test(self, path, tensors):
        """Flip one byte inside each tensor in turn: exactly that tensor's hash changes."""
        base = {t["name"]: t["sha256"] for t in self.manifest(path)["manifest"]["tensors"]}
        with open(path, "rb") as f:
            data = bytearray(f.read())
        for t in tensors:
            if t["length"] == 0:
                continue
            at = t["offset"] + t["length"] // 2
            data[at] ^= 0x40
            p = os.path.join(self.tmp, "flipped")
            with open(p, "wb") as f:
                f.write(data)
            data[at] ^= 0x40
            got = {x["name"]: x["sha256"] for x in self.manifest(p)["manifest"]["tensors"]}
            differ = [n for n in base if got[n] != base[n]]
            self.assertEqual(differ, [t["name"]])

    def test_flipped_byte_safetensors(self):
        sd = make_model(4).state_dict()
        p = os.path.join(self.tmp, "m.safetensors")
        save_safetensors(sd, p)
        self.flip_test(p, self.manifest(p)["manifest"]["tensors"])

    # ------------------------------------------------------------------ GGUF --

    def gguf_tensors(self, rng):
        T = make_gguf.Tensor
        return [
            T("token_embd.weight", rng.standard_normal((10, 32), dtype=np.float32)),
            T("blk.0.attn_q.weight", make_gguf.q8_0(rng.standard_normal((4, 64)))),
            T("blk.0.ffn_up.weight", make_gguf.q4_0(rng.standard_normal((2, 32)))),
            T("blk.0.norm", rng.standard_normal(32).astype(np.float16)),
            T("blk.0.bf", np.array([0x3f80, 0x4000, 0xc040], np.uint16), "BF16"),
            T("rope.freqs", rng.standard_normal(3)),
            T("pos", np.arange(7, dtype=np.int32)),
        ]

    def test_gguf_v2_v3(self):
        rng = np.random.default_rng(5)
        for version in (2, 3):
            for alignment in (None, 64, 16):
                tensors = self.gguf_tensors(rng)
                p = os.path.join(self.tmp, "m%d-%s.gguf" % (version, alignment))
                info = make_gguf.write_gguf(p, tensors, make_gguf.sample_metadata(), version, alignment)
                j = self.manifest(p)
                m = self.check_envelope(p, j)
                self.assertEqual(m["format"], "gguf")
                self.assertEqual([t["name"] for t in m["tensors"]], [t.name for t in tensors])
                for t, g in zip(tensors, m["tensors"]):
                    want = info["tensors"][t.name]
                    self.assertEqual(g["sha256"], sha(t.data), t.name)
                    self.assertEqual(g["offset"], want["offset"], t.name)
                    self.assertEqual(g["offset"] % (alignment or 32), 0)
                    self.assertEqual(g["length"], len(t.data), t.name)
                    self.assertEqual(g["dtype"], t.ggml_type, t.name)
                    self.assertEqual(g["shape"], want["dims"], t.name)

    def test_gguf_delta_and_flip(self):
        rng = np.random.default_rng(6)
        a = rng.standard_normal((8, 32), dtype=np.float32)
        b = a.copy()
        b[3, 5] += 0.25
        b[7, 0] -= 1.5
        po, pn = os.path.join(self.tmp, "a.gguf"), os.path.join(self.tmp, "b.gguf")
        make_gguf.write_gguf(po, [make_gguf.Tensor("w", a), make_gguf.Tensor("q", make_gguf.q8_0(a))])
        make_gguf.write_gguf(pn, [make_gguf.Tensor("w", b), make_gguf.Tensor("q", make_gguf.q8_0(a))])
        d = self.manifest(pn, "--against", po)["delta"]
        self.assertEqual(d["unchanged"], 1)
        (c,) = d["changed"]
        diff = torch.from_numpy(b) - torch.from_numpy(a)
        self.assertLessEqual(abs(float(c["l2"]) - diff.norm().item()), 1e-6 * diff.norm().item())
        self.assertEqual(float(c["max_abs"]), diff.abs().max().item())
        self.flip_test(pn, self.manifest(pn)["manifest"]["tensors"])

    # ------------------------------------------------------------- fallback --

    def test_unknown_format_whole_file(self):
        p = os.path.join(self.tmp, "weights.bin")
        with open(p, "wb") as f:
            f.write(os.urandom(5000))
        j = self.manifest(p)
        m = j["manifest"]
        self.assertEqual(m["format"], "file")
        self.assertIn("whole file", m["note"])
        self.assertEqual(len(m["tensors"]), 1)
        self.assertEqual(m["tensors"][0]["sha256"], file_sha256(p))
        self.assertEqual(j["sha256"], file_sha256(p))
        self.assertEqual(j["digest"], sha(canonical(m)))
        r = cleanroom("manifest", p)
        self.assertIn("note", r.out)

    # ------------------------------------------------------------- hostile --

    def hostile(self, name, data, what):
        p = os.path.join(self.tmp, name)
        with open(p, "wb") as f:
            f.write(data)
        for args in ((), ("--json",)):
            r = cleanroom("manifest", *args, p)
            self.assertEqual(r.rc, EXIT_VERIFY, r)
            self.assertIn(p, r.err)
            self.assertIn(what, r.err, r)
            self.assertNotIn("Sanitizer", r.err)
            self.assertNotIn("runtime error", r.err)
            self.assertEqual(r.out, "")

    def test_hostile_safetensors(self):
        def st(header, data=b""):
            h = header.encode()
            return struct.pack("<Q", len(h)) + h + data

        ok = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
        self.hostile("trunc.safetensors", st(ok, b"\0" * 4), "beyond the data section")
        self.hostile("hlen.safetensors", struct.pack("<Q", 5000) + b"{" + b" " * 100, "exceeds the file")
        self.hostile("overlap.safetensors", st('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
                                               '"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}',
                                               b"\0" * 6), "overlap")
        self.hostile("range.safetensors", st('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
                                             '"b":{"dtype":"U8","shape":[4],"data_offsets":[99,103]}}',
                                             b"\0" * 8), "beyond the data section")
        self.hostile("dtype.safetensors", st('{"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}}',
                                             b"\0" * 8), "unknown dtype")
        self.hostile("dims.safetensors", st('{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],'
                                            '"data_offsets":[0,8]}}', b"\0" * 8), "absurd")
        self.hostile("len.safetensors", st('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}',
                                           b"\0" * 8), "needs 12")
        self.hostile("json.safetensors", st('{"a":{"dtype":"F32",', b"\0" * 8), "not valid JSON")

    def test_hostile_gguf(self):
        rng = np.random.default_rng(7)
        good, info = make_gguf.gguf_bytes(self.gguf_tensors(rng), {}, 3, 64)
        self.hostile("trunc.gguf", good[:-100], "beyond the end")
        self.hostile("short.gguf", good[:30], "tensor count 7 is absurd for a 30-byte file")
        self.hostile("short2.gguf", good[:good.index(b"blk.0.norm")], "truncated")
        bad = bytearray(good)
        bad[8:16] = struct.pack("<Q", 1 << 40)
        self.hostile("count.gguf", bytes(bad), "tensor count")
        at = good.index(b"general.alignment") + 17 + 4
        bad = bytearray(good)
        bad[at:at + 4] = struct.pack("<I", 48)
        self.hostile("align.gguf", bytes(bad), "alignment")
        # the first tensor info's type: after name (8 + 17), n_dims (4), dims (2 x 8)
        ti = good.index(b"token_embd.weight") + 17
        bad = bytearray(good)
        bad[ti + 4 + 16:ti + 4 + 16 + 4] = struct.pack("<I", 99)
        self.hostile("type.gguf", bytes(bad), "unknown ggml type")
        bad = bytearray(good)
        bad[ti:ti + 4] = struct.pack("<I", 1000)
        self.hostile("ndim.gguf", bytes(bad), "dimensions")
        bad = bytearray(good)
        bad[ti + 4 + 16 + 4:ti + 4 + 16 + 12] = struct.pack("<Q", 1 << 30)
        self.hostile("offset.gguf", bytes(bad), "beyond the end")

    def test_usage_and_missing(self):
        r = cleanroom("manifest")
        self.assertEqual(r.rc, crtest.EXIT_USAGE)
        r = cleanroom("manifest", "--format", "nope", "x")
        self.assertEqual(r.rc, crtest.EXIT_USAGE)
        p = os.path.join(self.tmp, "missing.safetensors")
        r = cleanroom("manifest", p)
        self.assertEqual(r.rc, crtest.EXIT_ENV, r)
        self.assertIn(p, r.err)
        r = cleanroom("manifest", "--help")
        self.assertEqual(r.rc, EXIT_OK)
        self.assertIn("--against", r.out)
        r = cleanroom("--help")
        self.assertIn("manifest", r.out)


if __name__ == "__main__":
    unittest.main()
