#!/usr/bin/python3
"""`cleanroom manifest` on real torch.save checkpoints (PyTorch zip format).

Checkpoints are written here by the framework itself (Debian's torch in
/usr/bin/python3): the reference workload's {"epoch", "model", "optim"} shape
after real Adam steps, a model with tied weights, every dtype torch.save
writes, pickle protocols 2, 4 and 5, a whole nn.Module, a tensor on its own.
Every figure the CLI prints is recomputed here independently:

  - each tensor's SHA-256 from torch's own tensor,
    hashlib.sha256(t.contiguous().numpy().tobytes()) (BF16 viewed as int16),
    under the dotted name of its place in the saved object;
  - delta norms between two epochs from torch's (new - old).norm() and
    .abs().max(), within 1e-6 relative;
  - flipping one byte inside one tensor's bytes changes exactly that
    tensor's hash (and its tied twin's, which shares the bytes).

Hostile and unusual files must give exit status 1 with a message naming the
file (never a crash, never executing the pickle), or, for the legacy
format, a whole-file manifest that says why.

Run standalone: /usr/bin/python3 tests/integration/test_tensors_pytorch.py
(CLEANROOM=path/to/cleanroom to test another binary).
"""
import hashlib
import io
import os
import pickle
import struct
import sys
import unittest
import warnings
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import crtest  # noqa: E402
from crtest import EXIT_OK, EXIT_VERIFY, canonical, cleanroom, file_sha256  # noqa: E402

SRC = os.environ.get("CR_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
          torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL", torch.complex64: "C64",
          torch.complex128: "C128"}


def _workload():
    """The reference workload's train.py module ($CR_WORKLOAD, else ../shared/workload)."""
    for d in (os.environ.get("CR_WORKLOAD"), os.path.join(SRC, "..", "shared", "workload")):
        if d and os.path.exists(os.path.join(d, "train.py")):
            sys.path.insert(0, os.path.realpath(d))
            import train
            return train
    return None


TRAIN = _workload()


def make_model(seed):
    torch.manual_seed(seed)
    if TRAIN is not None:
        return TRAIN.make_model("small")
    return torch.nn.Sequential(  # the workload's "small" model, when train.py is not there
        torch.nn.Conv2d(1, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10))


def train_steps(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    lossf = torch.nn.CrossEntropyLoss()
    for _ in range(steps):
        x = torch.rand(16, 1, 32, 32, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        lossf(model(x), y).backward()
        opt.step()


def tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def flatten(obj, prefix="", out=None):
    """{dotted name: tensor} of every tensor in obj: dict keys and list indices joined by dots."""
    if out is None:
        out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix or "(root)"] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, "%s.%s" % (prefix, k) if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flatten(v, "%s.%d" % (prefix, i) if prefix else str(i), out)
    return out


def member_data_offset(path, member):
    """Where member's bytes start in the zip file (after its local header)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        h = f.read(30)
    assert h[:4] == b"PK\x03\x04"
    nlen, xlen = struct.unpack("<HH", h[26:30])
    return info.header_offset + 30 + nlen + xlen


class PytorchManifest(crtest.TestCase):

    def manifest(self, path, *args, rc=EXIT_OK):
        r = cleanroom("manifest", "--json", *args, path)
        self.assertEqual(r.rc, rc, r)
        self.assertNotIn("Sanitizer", r.err)
        return r.json() if rc == EXIT_OK else r

    def check(self, path, obj):
        """The CLI's manifest of path against torch's tensors of obj: names, dtypes,
        shapes, hashes; the file hash and the digest. Returns the manifest."""
        j = self.manifest(path)
        m = j["manifest"]
        self.assertEqual(m["format"], "pytorch")
        self.assertEqual(j["sha256"], file_sha256(path))
        self.assertEqual(j["digest"], sha(canonical(m)))
        self.assertEqual(m["size"], os.path.getsize(path))
        want = flatten(obj)
        got = {t["name"]: t for t in m["tensors"]}
        self.assertEqual(sorted(got), sorted(want))
        with zipfile.ZipFile(path) as z:
            sizes = {i.filename: i.file_size for i in z.infolist()}
        for name, t in want.items():
            g = got[name]
            self.assertEqual(g["dtype"], DTYPES[t.dtype], name)
            self.assertEqual(g["shape"], list(t.shape), name)
            self.assertEqual(g["length"], t.numel() * t.element_size(), name)
            self.assertEqual(g["sha256"], sha(tensor_bytes(t)), name)
            self.assertIn(g["member"], sizes)
            self.assertLessEqual(g["offset"] + g["length"], sizes[g["member"]])
        return m

    # --------------------------------------------------------- the workload --

    def workload_checkpoints(self):
        """epoch-1.pt and epoch-2.pt as train.py writes them, after real Adam steps."""
        model = make_model(0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        saved = []
        for epoch in (1, 2):
            train_steps(model, opt, 3, epoch)
            p = os.path.join(self.tmp, "epoch-%d.pt" % epoch)
            obj = {"epoch": epoch, "model": model.state_dict(), "optim": opt.state_dict()}
            torch.save(obj, p)
            saved.append((p, torch.load(p)))
        return saved

    def test_workload_state_dicts(self):
        for p, obj in self.workload_checkpoints():
            m = self.check(p, obj)
            names = [t["name"] for t in m["tensors"]]
            # the saved object's own order; optimizer state under its integer keys
            self.assertEqual(names[0], "model.0.weight")
            self.assertIn("optim.state.0.exp_avg", names)
            self.assertIn("optim.state.7.exp_avg_sq", names)
            self.assertNotIn("epoch", names)
            self.assertFalse(any(n.startswith("optim.param_groups") for n in names))
            # the zip as torch writes it: data.pkl first, storages stored
            with zipfile.ZipFile(p) as z:
                infos = z.infolist()
            self.assertTrue(infos[0].filename.endswith("/data.pkl"))
            self.assertTrue(all(i.compress_type == zipfile.ZIP_STORED for i in infos))

    def test_workload_delta_matches_torch(self):
        (po, old), (pn, new) = self.workload_checkpoints()
        j = self.manifest(pn, "--against", po)
        d = j["delta"]
        self.assertEqual(d["added"], [])
        self.assertEqual(d["removed"], [])
        old_t, new_t = flatten(old), flatten(new)
        changed = {c["name"]: c for c in d["changed"]}
        self.assertEqual(set(changed), {n for n in new_t if not torch.equal(new_t[n], old_t[n])})
        self.assertGreater(len(changed), 10)
        sum_d2 = sum_o2 = 0.0
        for name, c in changed.items():
            o, n = old_t[name], new_t[name]
            self.assertEqual(c["old"], sha(tensor_bytes(o)))
            self.assertEqual(c["new"], sha(tensor_bytes(n)))
            # torch's (new - old).norm() in float64, and in the tensors' own float32:
            # that one rounds each difference and the sum to 24 bits, so it is only
            # held to 1e-5 (tiny Adam exp_avg_sq updates land near 1.1e-6)
            l2 = (n.double() - o.double()).norm().item()
            l2_f32 = (n - o).norm().item()
            mx = (n - o).abs().max().item()
            rel = l2 / o.double().norm().item()
            self.assertLessEqual(abs(float(c["l2"]) - l2_f32), 1e-5 * l2_f32, name)
            for key, want in (("l2", l2), ("max_abs", mx), ("rel", rel)):
                got = float(c[key])
                self.assertLessEqual(abs(got - want), 1e-6 * abs(want), (name, key, got, want))
            sum_d2 += (n.double() - o.double()).pow(2).sum().item()
            sum_o2 += o.double().pow(2).sum().item()
        self.assertLessEqual(abs(float(d["l2"]) - sum_d2 ** 0.5), 1e-6 * sum_d2 ** 0.5)
        self.assertEqual(j["against_digest"], self.manifest(po)["digest"])

    # ------------------------------------------------------- shapes of files --

    def test_tied_weights(self):
        class Tied(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(50, 16)
                self.mid = torch.nn.Linear(16, 16)
                self.head = torch.nn.Linear(16, 50, bias=False)
                self.head.weight = self.emb.weight

            def forward(self, x):
                return self.head(self.mid(self.emb(x)))

        torch.manual_seed(5)
        model = Tied()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.tensor([1, 2, 3])).sum().backward()
        opt.step()
        p = os.path.join(self.tmp, "tied.pt")
        obj = {"model": model.state_dict(), "optim": opt.state_dict()}
        torch.save(obj, p)
        m = self.check(p, obj)
        t = {x["name"]: x for x in m["tensors"]}
        a, b = t["model.emb.weight"], t["model.head.weight"]
        self.assertEqual((a["member"], a["offset"], a["length"], a["sha256"]),
                         (b["member"], b["offset"], b["length"], b["sha256"]))
        # one flipped byte in the shared storage changes both, and nothing else
        self.flip_test(p, m, "model.emb.weight", {"model.emb.weight", "model.head.weight"})
        self.flip_test(p, m, "model.mid.weight", {"model.mid.weight"})

    def flip_test(self, path, m, name, want_changed):
        t = {x["name"]: x for x in m["tensors"]}[name]
        at = member_data_offset(path, t["member"]) + t["offset"] + t["length"] // 2
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[at] ^= 0x10
        p = os.path.join(self.tmp, "flipped.pt")
        with open(p, "wb") as f:
            f.write(data)
        got = {x["name"]: x["sha256"] for x in self.manifest(p)["manifest"]["tensors"]}
        base = {x["name"]: x["sha256"] for x in m["tensors"]}
        self.assertEqual({n for n in base if got[n] != base[n]}, want_changed)

    def test_flipped_byte_each_tensor(self):
        (p, obj), _ = self.workload_checkpoints()
        m = self.manifest(p)["manifest"]
        for t in m["tensors"][:6] + m["tensors"][-3:]:
            self.flip_test(p, m, t["name"], {t["name"]})

    def test_dtypes_and_views(self):
        torch.manual_seed(9)
        base = torch.randn(4, 6)
        obj = {
            "f32": torch.randn(3, 5), "f64": torch.randn(7).double(), "f16": torch.randn(9).half(),
            "bf16": torch.randn(2, 3, 4).bfloat16(), "i64": torch.arange(-5, 5),
            "i32": torch.arange(6, dtype=torch.int32), "i16": torch.arange(3, dtype=torch.int16),
            "i8": torch.arange(-3, 3, dtype=torch.int8), "u8": torch.arange(200, 210).to(torch.uint8),
            "bool": torch.tensor([True, False, True]), "c64": torch.randn(3, dtype=torch.complex64),
            "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
            # views into one storage: a row and a narrow slice (contiguous, at offsets)
            "row": base[2], "slice": base.view(-1)[5:11], "base": base,
            "nested": [torch.ones(2), (torch.zeros(3, dtype=torch.int64),), {"deep": torch.eye(2)}],
        }
        p = os.path.join(self.tmp, "dtypes.pt")
        torch.save(obj, p)
        m = self.check(p, obj)
        t = {x["name"]: x for x in m["tensors"]}
        self.assertEqual(t["row"]["member"], t["base"]["member"])
        self.assertEqual(t["row"]["offset"], 2 * 6 * 4)
        self.assertIn("nested.1.0", t)
        self.assertIn("nested.2.deep", t)
        self.assertNotIn("note", m)

    def test_noncontiguous_view_is_its_storage_span(self):
        torch.manual_seed(3)
        a = torch.randn(3, 4)
        obj = {"a": a, "at": a.t()}
        p = os.path.join(self.tmp, "view.pt")
        torch.save(obj, p)
        m = self.manifest(p)["manifest"]
        t = {x["name"]: x for x in m["tensors"]}
        self.assertIn("non-contiguous", m["note"])
        self.assertIn("at", m["note"])
        # documented: a non-contiguous view is listed as the 1-D range of storage it spans
        self.assertEqual((t["at"]["shape"], t["at"]["length"]), ([12], 48))
        self.assertEqual(t["at"]["sha256"], sha(tensor_bytes(a)))
        self.assertEqual(t["a"]["sha256"], sha(tensor_bytes(a)))

    def test_pickle_protocols(self):
        torch.manual_seed(4)
        obj = {"model": make_model(1).state_dict(), "extra": [torch.randn(3).bfloat16()]}
        for proto in (2, 4, 5):
            p = os.path.join(self.tmp, "proto%d.pt" % proto)
            torch.save(obj, p, pickle_protocol=proto)
            self.check(p, obj)

    def test_whole_module_and_root_tensor(self):
        model = make_model(2)
        p = os.path.join(self.tmp, "module.pt")
        torch.save(model, p)
        m = self.manifest(p)["manifest"]
        got = {t["name"]: t["sha256"] for t in m["tensors"]}
        for name, t in model.state_dict().items():
            idx, kind = name.rsplit(".", 1)
            self.assertEqual(got["_modules.%s._parameters.%s" % (idx, kind)], sha(tensor_bytes(t)))
        p = os.path.join(self.tmp, "root.pt")
        t = torch.randn(5, 2)
        torch.save(t, p)
        self.check(p, t)

    def test_utf8_archive_name(self):
        """torch names the archive after the file: a non-ASCII name reads in the C locale."""
        obj = {"w": torch.randn(4), "b": [torch.ones(2, dtype=torch.int32)]}
        p = os.path.join(self.tmp, "modèle-été.pt")
        torch.save(obj, p)
        m = self.check(p, obj)  # crtest runs the CLI with LC_ALL=C
        self.assertEqual(m["tensors"][0]["member"], "modèle-été/data/0")

    def test_deflated_members(self):
        """A checkpoint re-zipped with deflate (torch loads it too) reads the same."""
        (p, obj), _ = self.workload_checkpoints()
        q = os.path.join(self.tmp, "deflated.pt")
        with zipfile.ZipFile(p) as src, zipfile.ZipFile(q, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info.filename))
        self.assertTrue(torch.equal(torch.load(q)["model"]["0.weight"], obj["model"]["0.weight"]))
        self.check(q, obj)

    def test_legacy_format_whole_file(self):
        p = os.path.join(self.tmp, "legacy.pt")
        torch.save({"w": torch.ones(3)}, p, _use_new_zipfile_serialization=False)
        j = self.manifest(p)
        self.assertEqual(j["manifest"]["format"], "file")
        self.assertIn("whole file", j["manifest"]["note"])
        self.assertEqual([t["sha256"] for t in j["manifest"]["tensors"]], [file_sha256(p)])
        # forced, the reader says what it is
        r = self.manifest(p, "--format", "pytorch", rc=EXIT_VERIFY)
        self.assertIn("legacy", r.err)
        self.assertIn(p, r.err)

    # ---------------------------------------------------------------- hostile --

    def hostile(self, name, data, what):
        p = os.path.join(self.tmp, name)
        with open(p, "wb") as f:
            f.write(data)
        r = self.manifest(p, "--format", "pytorch", rc=EXIT_VERIFY)
        self.assertIn(p, r.err)
        self.assertIn(what, r.err)
        return r

    def rezip(self, src, members, **kw):
        """The members (name, bytes) as a new zip, stored."""
        bio = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate names on purpose
            with zipfile.ZipFile(bio, "w", zipfile.ZIP_STORED, **kw) as z:
                for n, d in members:
                    z.writestr(n, d)
        return bio.getvalue()

    def test_hostile_files(self):
        (p, obj), _ = self.workload_checkpoints()
        with open(p, "rb") as f:
            good = f.read()
        with zipfile.ZipFile(p) as z:
            members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
        pkl = members[0]
        storage = next(m for m in members if "/data/" in m[0])

        for cut in (len(good) - 1, len(good) - 30, len(good) // 2, 100, 10):
            self.hostile("cut%d.pt" % cut, good[:cut], "")
        self.hostile("order.pt", self.rezip(p, [storage, pkl] + [m for m in members[1:]
                                                                if m != storage]),
                     "data.pkl is not the first member")
        self.hostile("dup.pt", self.rezip(p, members + [storage]), "duplicate member name")
        self.hostile("missing.pt", self.rezip(p, [m for m in members if m != storage]),
                     "names a storage the zip does not hold")
        short = [(n, d[:-4] if (n, d) == storage else d) for n, d in members]
        self.hostile("short.pt", self.rezip(p, short), "storage member holds")
        bad_op = pkl[1][:2] + b"\xff" + pkl[1][3:]
        self.hostile("opcode.pt", self.rezip(p, [(pkl[0], bad_op)] + members[1:]),
                     "unknown opcode 0xff")
        # a local header whose name differs from its central directory entry
        i = good.index(storage[0].encode(), 30)
        forged = good[:i] + storage[0].encode()[:-1] + b"9" + good[i + len(storage[0]):]
        self.hostile("cdname.pt", forged, "central directory")

    def write_zip(self, name, members, compression=zipfile.ZIP_STORED):
        p = os.path.join(self.tmp, name)
        with zipfile.ZipFile(p, "w", compression) as z:
            for n, d in members:
                z.writestr(n, d)
        return p

    @staticmethod
    def rebuild_v2(numel, offset=0, size=None):
        """_rebuild_tensor_v2 of storage '0' (FloatStorage of numel), as pickle opcodes."""
        def X(s):
            b = s.encode()
            return b"X" + struct.pack("<I", len(b)) + b

        def J(i):
            return b"J" + struct.pack("<i", i)
        size = numel - offset if size is None else size
        return (b"ctorch._utils\n_rebuild_tensor_v2\n(" +
                b"(" + X("storage") + b"ctorch\nFloatStorage\n" + X("0") + X("cpu") +
                J(numel) + b"tQ" + J(offset) + b"(" + J(size) + b"t(" + J(1) + b"t\x89NtR")

    def test_hostile_amplification(self):
        """Small files that would make the reader work or allocate without bound: each is
        refused at once naming the file, or read in time and memory in proportion to it."""
        # a list of 20000 references to one dict of 100000 keys (151 KB): 2e9 entries to walk
        pkl = (b"\x80\x02](}q\x00(" +
               b"".join(b"J" + struct.pack("<i", i) + b"N" for i in range(100000)) +
               b"u" + b"h\x00" * 19999 + b"e.")
        p = self.write_zip("shared.pt", [("archive/data.pkl", pkl)], zipfile.ZIP_DEFLATED)
        r = cleanroom("manifest", "--json", p, timeout=60)
        self.assertEqual(r.rc, EXIT_VERIFY, r)
        self.assertIn(p, r.err)
        self.assertIn("too many paths through shared objects", r.err)

        # a memo index of 16M - 1 in a 139-byte file: one memo entry, not 16M slots
        pkl = b"\x80\x02]K\x07r" + struct.pack("<I", (1 << 24) - 1) + b"a."
        j = self.manifest(self.write_zip("memo.pt", [("archive/data.pkl", pkl)]))
        self.assertEqual(j["manifest"]["tensors"], [])

        # 8M empty dicts popped, deflated to 16 KB: refused before a byte is inflated
        pkl = b"\x80\x02" + b"}0" * 8000000 + b"N."
        p = self.write_zip("nodes.pt", [("archive/data.pkl", pkl)], zipfile.ZIP_DEFLATED)
        r = self.manifest(p, rc=EXIT_VERIFY)
        self.assertIn(p, r.err)
        self.assertIn("deflated data.pkl would expand too much", r.err)

        # 20000 aliases of one 4 MiB storage: hashed once, not 80 GB
        numel = 1 << 20
        data = struct.pack("<f", 0.5) * numel
        pkl = b"\x80\x02](" + self.rebuild_v2(numel) + b"q\x00" + b"h\x00" * 19999 + b"e."
        p = self.write_zip("tied.pt", [("archive/data.pkl", pkl), ("archive/data/0", data)])
        r = cleanroom("manifest", "--json", p, timeout=120)
        self.assertEqual(r.rc, EXIT_OK, r)
        ts = r.json()["manifest"]["tensors"]
        self.assertEqual(len(ts), 20000)
        self.assertEqual({t["sha256"] for t in ts}, {sha(data)})

        # 3000 views over [i, end) of that storage: 12 GB to hash, refused
        pkl = (b"\x80\x02](" + b"".join(self.rebuild_v2(numel, i) for i in range(3000)) +
               b"e.")
        p = self.write_zip("views.pt", [("archive/data.pkl", pkl), ("archive/data/0", data)])
        r = cleanroom("manifest", "--json", p, timeout=60)
        self.assertEqual(r.rc, EXIT_VERIFY, r)
        self.assertIn(p, r.err)
        self.assertIn("too many overlapping tensors", r.err)

    def test_pickle_is_never_executed(self):
        """A data.pkl that would run a command when unpickled: read, not run."""
        marker = os.path.join(self.tmp, "pwned")

        class Evil:
            def __reduce__(self):
                return (os.system, ("touch " + marker,))

        (p, obj), _ = self.workload_checkpoints()
        with zipfile.ZipFile(p) as z:
            members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
        prefix = members[0][0].rsplit("/", 1)[0]
        evil = pickle.dumps({"x": Evil(), "y": [Evil()]}, protocol=2)
        q = os.path.join(self.tmp, "evil.pt")
        with zipfile.ZipFile(q, "w", zipfile.ZIP_STORED) as z:
            z.writestr(prefix + "/data.pkl", evil)
            z.writestr(prefix + "/version", "3\n")
        j = self.manifest(q)
        self.assertEqual(j["manifest"]["format"], "pytorch")
        self.assertEqual(j["manifest"]["tensors"], [])
        self.assertFalse(os.path.exists(marker))


if __name__ == "__main__":
    unittest.main()
