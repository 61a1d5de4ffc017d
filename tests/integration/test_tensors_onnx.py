"""ONNX tensor manifests from the real CLI on models written by real tools.

Models come from python3-onnx (raw_data initializers, every typed field,
external data) and from torch.onnx.export. For each, the per-tensor SHA-256
the CLI reports must equal hashlib.sha256(numpy_helper.to_array(t).tobytes())
computed here from onnx's own parse, with documented exceptions: BFLOAT16,
which numpy_helper widens to float32, is hashed as its own two bytes per
element, and typed COMPLEX64, which onnx 1.12's to_array cannot convert, is
its float_data pairs. Hostile files (truncated, bad varints, lengths past the end, deep
nesting) must give a clear error naming the file, never a crash.

The manifest is read with `cleanroom manifest --json FILE`; one test checks
that `cleanroom record` puts the same manifest in the checkpoint event of a
training script that writes an ONNX model (`cleanroom show --json`).
"""
import hashlib
import os
import sys
import unittest

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402

DTYPES = {
    TensorProto.FLOAT: "F32", TensorProto.UINT8: "U8", TensorProto.INT8: "I8",
    TensorProto.UINT16: "U16", TensorProto.INT16: "I16", TensorProto.INT32: "I32",
    TensorProto.INT64: "I64", TensorProto.BOOL: "BOOL", TensorProto.FLOAT16: "F16",
    TensorProto.DOUBLE: "F64", TensorProto.UINT32: "U32", TensorProto.UINT64: "U64",
    TensorProto.COMPLEX64: "C64", TensorProto.COMPLEX128: "C128", TensorProto.BFLOAT16: "BF16",
}


def expected_bytes(t, base_dir=""):
    """The bytes cleanroom hashes for initializer t, computed with onnx itself."""
    if 0 in t.dims:
        # onnx 1.12 reads a zero-length external tensor as the rest of its file.
        return b""
    if t.data_type == TensorProto.BFLOAT16:
        if t.data_location == TensorProto.EXTERNAL:
            t2 = TensorProto()
            t2.CopyFrom(t)
            load_external_data_for_tensor(t2, base_dir)
            return t2.raw_data
        if t.HasField("raw_data"):
            return t.raw_data
        return np.asarray(t.int32_data, dtype=np.int64).astype(np.uint16).tobytes()
    if t.data_type == TensorProto.COMPLEX64 and not t.HasField("raw_data"):
        # onnx 1.12's to_array cannot convert typed complex data (it casts complex
        # to float32): the elements are the float_data pairs themselves.
        return np.asarray(t.float_data, dtype=np.float32).tobytes()
    return numpy_helper.to_array(t, base_dir).tobytes()


def graph_with(initializers, name="g"):
    """A graph holding initializers: one Identity per tensor, so the model checks."""
    nodes, outputs = [], []
    for t in initializers:
        nodes.append(helper.make_node("Identity", [t.name], [t.name + ":out"]))
        outputs.append(helper.make_tensor_value_info(t.name + ":out", t.data_type, list(t.dims)))
    return helper.make_graph(nodes, name, [], outputs, initializer=initializers)


def make_model(initializers):
    m = helper.make_model(graph_with(initializers), producer_name="cleanroom-test")
    m.opset_import[0].version = 13
    return m


def raw_initializers():
    rng = np.random.default_rng(7)
    arrays = {
        "fc1.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "fc1.bias": rng.standard_normal(16).astype(np.float32),
        "half": rng.standard_normal((3, 5)).astype(np.float16),
        "steps": np.arange(-4, 5, dtype=np.int64),
        "bytes": rng.integers(0, 256, 33, dtype=np.uint8),
        "mask": rng.integers(0, 2, (2, 3)).astype(bool),
        "double": rng.standard_normal(7),
        "i8": rng.integers(-128, 128, 10, dtype=np.int8),
        "i32": rng.integers(-2 ** 31, 2 ** 31, 6, dtype=np.int32),
        "scalar": np.array(3.25, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    bf = np.frombuffer(rng.standard_normal(6).astype(np.float32).tobytes(), dtype=np.uint16)[1::2]
    inits.append(helper.make_tensor("bf16", TensorProto.BFLOAT16, [2, 3], bf.tobytes(), raw=True))
    return inits


def typed_initializers():
    rng = np.random.default_rng(11)
    return [
        helper.make_tensor("t.float", TensorProto.FLOAT, [2, 3], rng.standard_normal(6).tolist()),
        helper.make_tensor("t.int32", TensorProto.INT32, [4], [-(2 ** 31), -1, 0, 2 ** 31 - 1]),
        helper.make_tensor("t.int8", TensorProto.INT8, [5], [-128, -1, 0, 1, 127]),
        helper.make_tensor("t.uint8", TensorProto.UINT8, [3], [0, 128, 255]),
        helper.make_tensor("t.int16", TensorProto.INT16, [3], [-32768, 5, 32767]),
        helper.make_tensor("t.uint16", TensorProto.UINT16, [2], [0, 65535]),
        helper.make_tensor("t.bool", TensorProto.BOOL, [4], [True, False, True, True]),
        helper.make_tensor("t.float16", TensorProto.FLOAT16, [2, 2],
                           np.array([1.0, -2.5, 65504.0, 1e-7], dtype=np.float16)),
        helper.make_tensor("t.bfloat16", TensorProto.BFLOAT16, [3], [1.0, -3.0, 0.15625]),
        helper.make_tensor("t.int64", TensorProto.INT64, [3], [-(2 ** 63), 0, 2 ** 63 - 1]),
        helper.make_tensor("t.double", TensorProto.DOUBLE, [2], [1e300, -0.5]),
        helper.make_tensor("t.uint32", TensorProto.UINT32, [2], [0, 2 ** 32 - 1]),
        helper.make_tensor("t.uint64", TensorProto.UINT64, [2], [1, 2 ** 64 - 1]),
        helper.make_tensor("t.complex64", TensorProto.COMPLEX64, [2], [1 + 2j, -3.5 + 0j]),
    ]


class OnnxManifest(crtest.TestCase):

    # ------------------------------------------------------------ helpers --

    def manifest(self, path):
        """The tensor manifest JSON the CLI gives for path."""
        r = crtest.cleanroom("manifest", "--json", path)
        self.assertEqual(r.rc, 0, r)
        out = r.json()
        with open(path, "rb") as f:
            self.assertEqual(out["sha256"], hashlib.sha256(f.read()).hexdigest())
        # The digest is the SHA-256 of the manifest's canonical JSON.
        self.assertEqual(out["digest"], hashlib.sha256(crtest.canonical(out["manifest"])).hexdigest())
        return out["manifest"]

    def check_model(self, path, base_dir=None, unlisted=()):
        """Every initializer of the model at path but those named in unlisted is
        listed with onnx's own bytes."""
        model = onnx.load(path, load_external_data=False)
        m = self.manifest(path)
        self.assertEqual(m["format"], "onnx")
        got = {t["name"]: t for t in m["tensors"]}
        inits = [t for t in model.graph.initializer if t.name not in unlisted]
        self.assertEqual([t["name"] for t in m["tensors"]], [t.name for t in inits])
        for t in inits:
            e = got[t.name]
            data = expected_bytes(t, base_dir if base_dir is not None else os.path.dirname(path))
            self.assertEqual(e["dtype"], DTYPES[t.data_type], t.name)
            self.assertEqual(e["shape"], list(t.dims), t.name)
            self.assertEqual(e["length"], len(data), t.name)
            self.assertEqual(e["sha256"], hashlib.sha256(data).hexdigest(), t.name)
        return m

    # -------------------------------------------------------------- tests --

    def test_raw_data_initializers(self):
        path = os.path.join(self.tmp, "raw.onnx")
        model = make_model(raw_initializers())
        onnx.checker.check_model(model)
        onnx.save(model, path)
        m = self.check_model(path)
        with open(path, "rb") as f:
            data = f.read()
        for t in onnx.load(path).graph.initializer:
            e = next(x for x in m["tensors"] if x["name"] == t.name)
            # raw_data lies in the file itself, at the offset the manifest gives.
            self.assertNotIn("member", e)
            self.assertEqual(data[e["offset"]:e["offset"] + e["length"]], t.raw_data, t.name)
        self.assertNotIn("note", m)

    def test_typed_field_initializers(self):
        path = os.path.join(self.tmp, "typed.onnx")
        model = make_model(typed_initializers())
        onnx.save(model, path)
        m = self.check_model(path)
        for e in m["tensors"]:
            # Packed float_data/double_data are the tensor's own bytes in the file;
            # the others are converted.
            if e["name"] in ("t.float", "t.double", "t.complex64"):
                self.assertNotIn("member", e)
            else:
                self.assertEqual(e.get("member"), "onnx:typed", e["name"])

    def test_string_initializer_is_noted(self):
        path = os.path.join(self.tmp, "strings.onnx")
        inits = [helper.make_tensor("vocab", TensorProto.STRING, [2], [b"a", b"bc"]),
                 numpy_helper.from_array(np.ones(3, dtype=np.float32), "w")]
        onnx.save(make_model(inits), path)
        m = self.manifest(path)
        self.assertEqual([t["name"] for t in m["tensors"]], ["w"])
        self.assertIn("string initializers not listed: vocab", m["note"])

    def test_external_data(self):
        folder = os.path.join(self.tmp, "ext")
        os.makedirs(folder)
        path = os.path.join(folder, "model.onnx")
        model = make_model(raw_initializers())
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="weights.bin", size_threshold=0)
        loaded = onnx.load(path, load_external_data=False)
        self.assertTrue(any(t.data_location == TensorProto.EXTERNAL for t in loaded.graph.initializer))
        # External ranges under 32 bytes are not hashed (a hash of a few bytes
        # gives them away): those tensors are named in the note instead.
        short = set()
        for t in loaded.graph.initializer:
            info = {kv.key: kv.value for kv in t.external_data}
            if t.data_location == TensorProto.EXTERNAL and 0 < int(info.get("length", "0")) < 32:
                short.add(t.name)
        self.assertIn("mask", short)
        m = self.check_model(path, unlisted=short)
        for t in loaded.graph.initializer:
            if t.name in short:
                self.assertIn("%s in weights.bin (under 32 bytes: not hashed alone)" % t.name,
                              m["note"])
                continue
            e = next(x for x in m["tensors"] if x["name"] == t.name)
            if t.data_location == TensorProto.EXTERNAL:
                self.assertEqual(e["member"], "weights.bin")
                info = {kv.key: kv.value for kv in t.external_data}
                self.assertEqual(e["offset"], int(info.get("offset", "0")))

    def test_external_data_missing_is_noted(self):
        folder = os.path.join(self.tmp, "ext2")
        os.makedirs(folder)
        path = os.path.join(folder, "model.onnx")
        onnx.save_model(make_model(raw_initializers()[:2]), path, save_as_external_data=True,
                        all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
        os.unlink(os.path.join(folder, "w.bin"))
        m = self.manifest(path)
        self.assertEqual(m["tensors"], [])
        self.assertIn("external-data initializers not listed (data not followed)", m["note"])
        self.assertIn("w.bin (no such file)", m["note"])

    def external_model(self, folder, tensors):
        """model.onnx in folder with U8 initializers (name, location, offset, length)
        stored as external data; its path."""
        inits = []
        for name, location, offset, length in tensors:
            t = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[length])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
                kv = t.external_data.add()
                kv.key, kv.value = k, v
            inits.append(t)
        path = os.path.join(folder, "model.onnx")
        onnx.save(make_model(inits), path)
        return path

    def test_external_data_cannot_leak_a_secret(self):
        """Regression: a model naming the store's key beside it, one byte per
        initializer, gave the key away through the per-tensor hashes."""
        folder = os.path.join(self.tmp, "leak")
        os.makedirs(os.path.join(folder, ".cleanroom"))
        os.makedirs(os.path.join(folder, "keys"))
        secret = os.urandom(64)
        for name, mode in ((".cleanroom/cleanroom.key", 0o644), ("keys/cleanroom.key", 0o600),
                           ("plain.bin", 0o644)):
            p = os.path.join(folder, name)
            with open(p, "wb") as f:
                f.write(secret)
            os.chmod(p, mode)
        os.symlink(".cleanroom/cleanroom.key", os.path.join(folder, "alias.bin"))
        tensors = [("b%d" % i, ".cleanroom/cleanroom.key", i, 1) for i in range(32)]
        tensors += [("key", ".cleanroom/cleanroom.key", 0, 32), ("alias", "alias.bin", 0, 32),
                    ("private", "keys/cleanroom.key", 0, 32)]
        tensors += [("p%d" % i, "plain.bin", i, 1) for i in range(31)]
        tensors += [("w0", "plain.bin", 0, 32), ("w1", "plain.bin", 1, 32)]
        path = self.external_model(folder, tensors)
        m = self.manifest(path)
        self.assertEqual(m["tensors"], [])
        windows = {hashlib.sha256(secret[i:i + n]).hexdigest()
                   for n in (1, 32) for i in range(len(secret) - n + 1)}
        r = crtest.cleanroom("manifest", "--json", path)
        self.assertFalse(any(h in r.out for h in windows))
        self.assertIn("%d external-data initializers not listed" % len(tensors), m["note"])
        self.assertIn("b0 in .cleanroom/cleanroom.key (a step of the location starts with '.')",
                      m["note"])

    def test_external_ranges_shared_and_overlapping(self):
        """Regression: ranges were read in declaration order, so one inside another
        declared first failed inside the engine (exit 3). Equal ranges are now read
        once and shared; other overlaps are refused with a note; a bad range is
        exit 1 naming the file."""
        folder = os.path.join(self.tmp, "ranges")
        os.makedirs(folder)
        data = bytes(range(256))
        with open(os.path.join(folder, "w.bin"), "wb") as f:
            f.write(data)
        path = self.external_model(folder, [("C", "w.bin", 32, 32), ("A", "w.bin", 0, 64)])
        r = crtest.cleanroom("manifest", "--json", path)
        self.assertEqual(r.rc, 0, r)
        m = r.json()["manifest"]
        self.assertEqual(m["tensors"], [])
        self.assertIn("C in w.bin (ranges in the file overlap)", m["note"])

        path = self.external_model(folder, [("u", "w.bin", 128, 64), ("t1", "w.bin", 0, 128),
                                            ("t2", "w.bin", 0, 128), ("t3", "w.bin", 0, 128)])
        m = self.check_model(path)
        self.assertNotIn("note", m)
        self.assertEqual(m["tensors"][1]["sha256"], hashlib.sha256(data[:128]).hexdigest())

        path = self.external_model(folder, [("far", "w.bin", 250, 32)])
        m = self.manifest(path)
        self.assertIn("far in w.bin (file too short)", m["note"])
        with open(path, "rb") as f:
            good = f.read()
        bad = good.replace(b"250", b"-50")
        with open(path, "wb") as f:
            f.write(bad)
        r = crtest.cleanroom("manifest", "--json", path)
        self.assertEqual(r.rc, crtest.EXIT_VERIFY, r)
        self.assertIn(path, r.err)
        self.assertIn("external data offset", r.err)

    def test_torch_onnx_export(self):
        folder = os.path.join(self.tmp, "torch")
        os.makedirs(folder)
        path = os.path.join(folder, "mlp.onnx")
        script = r"""
import sys, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
model.eval()
torch.onnx.export(model, torch.randn(1, 12), sys.argv[1], input_names=["x"], output_names=["y"])
"""
        r = crtest.run(["/usr/bin/python3", "-c", script, path])
        if r.rc != 0:
            self.skipTest("torch.onnx.export is not available here: %s" % r.err[-500:])
        m = self.check_model(path)
        self.assertGreaterEqual(len(m["tensors"]), 4)
        # The weights are torch's own: compare with the state dict too.
        import torch
        torch.manual_seed(0)
        ref = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
        want = {hashlib.sha256(v.detach().numpy().tobytes()).hexdigest()
                for v in ref.state_dict().values()}
        self.assertTrue(want <= {t["sha256"] for t in m["tensors"]})

    def test_hostile_files(self):
        """Bad files give exit 1 and a message naming the file and the problem."""
        good = make_model(raw_initializers()).SerializeToString()
        cases = {
            "truncated.onnx": (good[:len(good) // 2], "not a valid ONNX model"),
            "varint.onnx": (b"\x08" + b"\xff" * 10 + b"\x01", "overflows 64 bits"),
            "length.onnx": (b"\x3a\xe8\x07\x2a\x00", "runs past the end"),
            "nested.onnx": (b"\x4b" * 500 + b"\x4c" * 500, "nested deeper"),
            "tag.onnx": (b"\x00\x01", "invalid field tag"),
        }
        for name, (data, what) in cases.items():
            path = os.path.join(self.tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            r = crtest.cleanroom("manifest", "--json", path)
            self.assertEqual(r.rc, crtest.EXIT_VERIFY, r)
            self.assertIn(path, r.err, r)
            self.assertIn(what, r.err, r)

    def test_recorded_checkpoint(self):
        """A training script writes an ONNX model under `cleanroom record`: its
        checkpoint event carries the same manifest as `cleanroom manifest`."""
        store = self.new_store()
        folder = os.path.join(self.tmp, "run")
        os.makedirs(folder)
        path = os.path.join(folder, "model.onnx")
        script = os.path.join(self.tmp, "train.py")
        with open(script, "w") as f:
            f.write("import sys, numpy as np, onnx\n"
                    "sys.path.insert(0, %r)\n"
                    "import test_tensors_onnx as t\n"
                    "onnx.save(t.make_model(t.raw_initializers() + t.typed_initializers()), sys.argv[1])\n"
                    % os.path.dirname(os.path.abspath(__file__)))
        store.cr("record", "--", "/usr/bin/python3", script, path)
        shown = store.cr("show", "--json", path).json()
        self.assertEqual(shown["tensors"], self.manifest(path))
        self.check_model(path)


if __name__ == "__main__":
    unittest.main()
