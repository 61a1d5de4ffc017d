#!/usr/bin/python3
"""cleanroom bundle and cleanroom verify, end to end (docs/formats/bundle.md).

One real store is built once: files added, a key made, a bundle written at
that size (the "old" bundle), a training run recorded (`cleanroom record`:
it reads data files and writes a checkpoint x.pt), one more file added, and
the bundle written again (zstd and gzip). Then:

- the bundle verifies (exit 0, every check ok) and is byte-identical when
  written twice; its members, order, modes, owners and times are as
  documented, and everything in it is recomputed here (digests, root,
  proofs, anchor commitment);
- every member is tampered with (a byte flipped, truncated, deleted,
  duplicated), both naively and as a forger who also rewrites the unsigned
  manifest; events are dropped, reordered, inserted, edited and appended; a
  seal, a key.pub and an attestation of another key; --previous with another
  log and with a rewritten one; --root and --data/--checkpoints with wrong
  values: each fails with exit 1 and the right check named in --json;
- hostile archives (.., absolute names, links, devices, fifos, folders, over
  sized members, duplicates, unknown members, decompression bombs, too many
  members, truncated, random and empty files) are refused without a crash,
  with a clear message, writing nothing anywhere (traced with strace when it
  is installed).

Exit status for a bad bundle: 1 whenever the file is a gzip or zstd tar
(or plain tar) that libarchive can start reading -- a hostile or damaged
archive is a failed "archive" check, reported in --json like any other; 3
only when it cannot be read at all: missing, empty, random bytes, or
truncated/corrupt before the first member can be read.

Run standalone: /usr/bin/python3 tests/integration/test_bundle.py
(CLEANROOM=path/to/cleanroom to test another binary).
"""
import base64
import hashlib
import io
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402
from crtest import (BUNDLE_ORDER, EXIT_ENV, EXIT_OK, EXIT_VERIFY, Store, bundle_dict,  # noqa: E402
                    bundle_tar_bytes, canonical, cleanroom, compress, fix_manifest, leaf_hash,
                    mth, read_bundle, run, tar_bytes, verify_inclusion, write_bundle)

SANITIZER = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:")
EVENT_MAX = 16 * 1024 * 1024        # CR_EVENT_MAX_SIZE
SMALL_MAX = 16 * 1024 * 1024        # CR_VERIFY_SMALL_MAX
PROOF_LINE_MAX = 8192               # audit/verify.c
MEMBERS_MAX = 4096                  # CR_VERIFY_MEMBERS_MAX
STRACE = shutil.which("strace")

RUN_CODE = r"""
import sys
data = b""
for p in sys.argv[1:]:
    with open(p, "rb") as f:
        data += f.read()
with open("x.pt", "wb") as f:
    f.write(b"weights:" + data)
"""

W = None  # the shared world, built by setUpModule


class World:
    def __init__(self, root):
        self.root = root
        self.data = os.path.join(root, "data")
        self.ckpt = os.path.join(root, "ckpt")
        os.makedirs(os.path.join(self.data, "sub"))
        os.makedirs(self.ckpt)
        for rel, body in (("a.txt", b"alpha\n"), ("b.txt", b"beta\n"), ("sub/c.txt", b"gamma\n")):
            with open(os.path.join(self.data, rel), "wb") as f:
                f.write(body)
        self.s = Store(os.path.join(root, "store"))
        self.s.init()
        self.s.add(self.data)
        r = cleanroom("keygen", "--out", self.s.path)
        assert r.rc == 0, r
        self.pub = os.path.join(self.s.path, "cleanroom.pub")
        self.key = os.path.join(self.s.path, "cleanroom.key")
        self.old = os.path.join(root, "old.tar.zst")
        self.bundle(self.old)
        self.old_size = self.s.status()["tree_size"]
        r = self.s.cr("record", "--data", self.data, "--", "/usr/bin/python3", "-c", RUN_CODE,
                      os.path.join(self.data, "a.txt"), os.path.join(self.data, "sub/c.txt"),
                      cwd=self.ckpt)
        crtest.settle()
        with open(os.path.join(self.data, "e.txt"), "wb") as f:
            f.write(b"epsilon\n")
        self.s.add(os.path.join(self.data, "e.txt"))
        self.status = self.s.status()
        self.zst = os.path.join(root, "bundle.tar.zst")
        self.gz = os.path.join(root, "bundle.tar.gz")
        self.bundle(self.zst)
        self.bundle(self.gz, "--gzip")
        self.members = [(m.name, d) for m, d in read_bundle(self.zst)]
        self.m = dict(self.members)
        with open(os.path.join(self.s.path, "origin")) as f:
            self.origin = f.read().strip()
        # A second key, in a folder of its own.
        self.k2dir = os.path.join(root, "key2")
        r = cleanroom("keygen", "--out", self.k2dir)
        assert r.rc == 0, r
        self.pub2 = os.path.join(self.k2dir, "cleanroom.pub")
        self.key2 = os.path.join(self.k2dir, "cleanroom.key")

    def bundle(self, out, *args, store=None, key=None):
        argv = ["bundle", "-o", out, "--json"] + list(args)
        if key:
            argv += ["--key", key]
        r = cleanroom(*argv, store=store or self.s.path)
        assert r.rc == 0, r
        return r.json()


def setUpModule():
    global W
    crtest.CLEANROOM = os.path.abspath(crtest.CLEANROOM)  # the tests change folders
    if not os.access(crtest.CLEANROOM, os.X_OK):
        raise RuntimeError("no cleanroom binary at %s (build it, or set CLEANROOM)" % crtest.CLEANROOM)
    root = os.path.realpath(tempfile.mkdtemp(prefix="cr-it-bundle-"))
    try:
        W = World(root)
    except BaseException:
        shutil.rmtree(root, True)
        raise


def tearDownModule():
    if W is not None:
        shutil.rmtree(W.root, True)


# ------------------------------------------------------------------ helpers --

def flip(data):
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


def truncate(data):
    return data[:len(data) // 2]


def lines_of(events):
    assert events.endswith(b"\n")
    return events[:-1].split(b"\n")


def forged(members, name, data):
    """members with name's content replaced (None: removed), manifest rewritten to match."""
    out = [(n, data if n == name else d) for n, d in members if not (n == name and data is None)]
    out = fix_manifest(out)
    if data is None:  # a forger drops the entry too
        m = json.loads(dict(out)["manifest.json"])
        m["members"] = [e for e in m["members"] if e["name"] != name]
        out = [(n, canonical(m) if n == "manifest.json" else d) for n, d in out]
    return out


class Zeros(io.RawIOBase):
    """n bytes of one value, for tarfile, without holding them."""

    def __init__(self, n, byte=b"\0"):
        self.left, self.byte = n, byte

    def readable(self):
        return True

    def readinto(self, b):
        k = min(len(b), self.left)
        b[:k] = self.byte * k
        self.left -= k
        return k


def stream_bundle(path, members, big_name, big_size, big_byte=b"\0"):
    """A zstd bundle with members [(name, bytes)] and, last, a member big_name of big_size
    repeated bytes, streamed through zstd (never held in memory)."""
    with open(path, "wb") as out:
        p = subprocess.Popen(["zstd", "-q", "-c"], stdin=subprocess.PIPE, stdout=out)
        with tarfile.open(fileobj=p.stdin, mode="w|", format=tarfile.PAX_FORMAT) as t:
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode = len(data), 0o644
                t.addfile(ti, io.BytesIO(data))
            ti = tarfile.TarInfo(big_name)
            ti.size, ti.mode = big_size, 0o644
            t.addfile(ti, io.BufferedReader(Zeros(big_size, big_byte), 1 << 20))
        p.stdin.close()
        assert p.wait() == 0


class BundleTest(crtest.TestCase):

    def verify(self, bundle, *args, key=True, rc=None, json_out=True):
        """Run `cleanroom verify` in a fresh empty folder; check nothing crashed and
        nothing was left there. Returns (Result, parsed --json output or None)."""
        argv = [crtest.CLEANROOM, "verify"]
        if json_out:
            argv.append("--json")
        if key is True:
            argv += ["--key", W.pub]
        elif key:
            argv += ["--key", key]
        argv += list(args) + [bundle]
        cwd = tempfile.mkdtemp(dir=self.tmp, prefix="cwd-")
        r = run(argv, cwd=cwd, timeout=300)
        self.assertNotRegex(r.err, SANITIZER, r)
        self.assertIn(r.rc, (EXIT_OK, EXIT_VERIFY, EXIT_ENV), r)
        self.assertEqual(os.listdir(cwd), [], "verify wrote into its folder")
        if rc is not None:
            self.assertEqual(r.rc, rc, r)
        j = None
        if r.rc in (EXIT_OK, EXIT_VERIFY) and json_out:
            j = r.json()
            self.assertEqual(j["ok"], r.rc == EXIT_OK, r)
            self.assertEqual(j["failures"], sum(1 for c in j["checks"] if not c["ok"]), r)
            self.assertEqual(j["ok"], j["failures"] == 0, r)
        elif r.rc == EXIT_ENV:
            self.assertEqual(r.out, "", r)
            self.assertTrue(r.err.startswith("cleanroom verify: ") and len(r.err) > 20, r)
        return r, j

    def failed(self, j):
        return {c["check"] for c in j["checks"] if not c["ok"]}

    def details(self, j, check):
        return [c["detail"] for c in j["checks"] if c["check"] == check and not c["ok"]]

    def assertFails(self, bundle, checks, *args, key=True, detail=None):
        """Exit 1, and each of checks failed (detail: a regex some failing detail matches)."""
        r, j = self.verify(bundle, *args, key=key, rc=EXIT_VERIFY)
        failed = self.failed(j)
        for c in checks:
            self.assertIn(c, failed, "expected check %r to fail:\n%s" % (c, json.dumps(j, indent=1)))
        if detail:
            every = [c["detail"] for c in j["checks"] if not c["ok"]]
            self.assertTrue(any(re.search(detail, d) for d in every),
                            "no failing detail matches %r: %s" % (detail, every))
        return j

    def write(self, name, members, how="zstd"):
        path = os.path.join(self.tmp, name)
        write_bundle(path, members, how)
        return path

    # ------------------------------------------------------------- good --

    def test_verify_passes(self):
        for bundle in (W.zst, W.gz):
            r, j = self.verify(bundle, rc=EXIT_OK)
            self.assertTrue(j["ok"])
            self.assertTrue(all(c["ok"] for c in j["checks"]), j)
            self.assertEqual({c["check"] for c in j["checks"]},
                             {"seal", "manifest", "events", "proofs", "attestation", "anchor"})
            self.assertEqual(j["tree_size"], W.status["tree_size"])
            self.assertEqual(j["root"], W.status["root"])
            self.assertEqual(j["origin"], W.origin)
            self.assertFalse(j["key_from_bundle"])
        # Without --key: only self-consistency, and it says so.
        r, j = self.verify(W.zst, key=False, rc=EXIT_OK)
        self.assertTrue(j["key_from_bundle"])
        self.assertIn("not independently trusted", self.ok_detail(j, "seal"))
        # Text output: one line per check and a summary.
        r, _ = self.verify(W.zst, json_out=False, rc=EXIT_OK)
        self.assertRegex(r.out, r"VERIFIED: 6 checks, 0 failed; %d events, root %s\n$" %
                         (W.status["tree_size"], W.status["root"]))
        # Every option at once, all right.
        r, j = self.verify(W.zst, "--data", W.data, "--checkpoints", W.ckpt, "--root",
                           W.status["root"], "--previous", W.old, rc=EXIT_OK)
        for check in ("data", "checkpoints", "root", "previous"):
            self.assertIn(check, {c["check"] for c in j["checks"]})
        self.assertRegex(self.ok_detail(j, "data"), r": \d+ files match, 0 missing, 0 changed, 0 extra")
        self.assertRegex(self.ok_detail(j, "previous"), r"\(%d -> %d events\)" %
                         (W.old_size, W.status["tree_size"]))
        r, j = self.verify(W.zst, "--root", "0x" + W.status["root"].upper(), rc=EXIT_OK)
        # The old bundle verifies on its own, and a bundle is its own previous.
        self.verify(W.old, rc=EXIT_OK)
        self.verify(W.zst, "--previous", W.zst, rc=EXIT_OK)

    def ok_detail(self, j, check):
        return [c["detail"] for c in j["checks"] if c["check"] == check and c["ok"]][0]

    def test_bundle_is_reproducible(self):
        for name, args, first in (("again.tar.zst", (), W.zst), ("again.tar.gz", ("--gzip",), W.gz)):
            out = os.path.join(self.tmp, name)
            W.bundle(out, *args)
            with open(out, "rb") as a, open(first, "rb") as b:
                self.assertEqual(a.read(), b.read(), name)
        # The name picks gzip too; and the same tar is inside either compression.
        out = os.path.join(self.tmp, "named.tgz")
        W.bundle(out)
        with open(out, "rb") as a, open(W.gz, "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.assertEqual(bundle_tar_bytes(W.zst), bundle_tar_bytes(W.gz))
        with open(W.zst, "rb") as f:
            self.assertEqual(f.read(4), crtest.ZSTD_MAGIC)
        # Bundling seals: the seal kept in the store is the bundle's, and not replaced.
        seals = sorted(os.listdir(os.path.join(W.s.path, "seals")))
        self.assertEqual(seals, ["%016d.note" % W.old_size, "%016d.note" % W.status["tree_size"]])
        with open(os.path.join(W.s.path, "seals", seals[-1]), "rb") as f:
            self.assertEqual(f.read(), W.m["seal.note"])

    def test_archive_layout_and_contents(self):
        tar = bundle_tar_bytes(W.zst)
        self.assertEqual(len(tar) % 512, 0)
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            infos = t.getmembers()
        names = [m.name for m in infos]
        expected = [n for n in BUNDLE_ORDER if n in names]
        self.assertEqual(names, expected)
        self.assertEqual(names, ["VERSION", "manifest.json", "seal.note", "key.pub", "key.vkey",
                                 "anchor.json", "attestation.dsse.json", "proofs/checkpoints.jsonl",
                                 "events.jsonl"])
        for m in infos:
            self.assertTrue(m.isreg(), m.name)
            self.assertEqual((m.mode, m.uid, m.gid, m.uname, m.gname, m.mtime),
                             (0o644, 0, 0, "root", "root", 0), m.name)
        # ustar magic on every header (pax restricted: no pax headers needed for these names).
        self.assertEqual(tar[257:263], b"ustar\0")
        m = W.m
        self.assertEqual(m["VERSION"], b"cleanroom-bundle 1\n")
        # The manifest: canonical, every member but itself and the attestation, in order.
        man = json.loads(m["manifest.json"])
        self.assertEqual(canonical(man), m["manifest.json"])
        self.assertEqual(man["format"], "cleanroom-bundle")
        self.assertEqual(man["version"], 1)
        self.assertEqual([e["name"] for e in man["members"]],
                         [n for n in names if n not in ("manifest.json", "attestation.dsse.json")])
        for e in man["members"]:
            self.assertEqual(e["size"], len(m[e["name"]]), e)
            self.assertEqual(e["sha256"], hashlib.sha256(m[e["name"]]).hexdigest(), e)
        self.assertEqual(man["log"], {"origin": W.origin, "root": W.status["root"],
                                      "tree_size": W.status["tree_size"]})
        events = [json.loads(x) for x in lines_of(m["events.jsonl"])]
        types = [e["type"] for e in events]
        self.assertEqual(man["counts"], {"events": len(events), "checkpoints": types.count("checkpoint"),
                                         "inputs": types.count("input"), "runs": types.count("run_start")})
        self.assertEqual(types.count("checkpoint"), 1)
        # events.jsonl: the store's leaves, exactly; their root is the sealed one.
        leaves = W.s.leaves()
        self.assertEqual(m["events.jsonl"], b"".join(x + b"\n" for x in leaves))
        hashes = [leaf_hash(x) for x in leaves]
        root = mth(hashes)
        self.assertEqual(root.hex(), W.status["root"])
        # The seal: origin, size, base64 root; the same bytes the store keeps.
        text = m["seal.note"].split(b"\n\n")[0].decode().split("\n")
        self.assertEqual(text, [W.origin, str(len(leaves)), base64.b64encode(root).decode()])
        # Keys: the public ones only.
        with open(W.pub, "rb") as f:
            self.assertEqual(m["key.pub"], f.read())
        with open(os.path.join(W.s.path, "cleanroom.vkey"), "rb") as f:
            self.assertEqual(m["key.vkey"].strip(), f.read().strip())
        with open(W.key, "rb") as f:
            secret = f.read()
        for name, data in W.members:
            self.assertNotIn(b"PRIVATE KEY", data, name)
            self.assertNotIn(secret, data, name)
        # The anchor commits to the seal.
        anchor = json.loads(m["anchor.json"])
        self.assertEqual(anchor["commitment"], hashlib.sha256(m["seal.note"]).hexdigest())
        self.assertEqual((anchor["root"], anchor["tree_size"], anchor["origin"]),
                         (W.status["root"], len(leaves), W.origin))
        # One inclusion proof per checkpoint, canonical, verifying against the root.
        proofs = [json.loads(x) for x in lines_of(m["proofs/checkpoints.jsonl"])]
        self.assertEqual([p["index"] for p in proofs],
                         [i for i, e in enumerate(events) if e["type"] == "checkpoint"])
        for line, p in zip(lines_of(m["proofs/checkpoints.jsonl"]), proofs):
            self.assertEqual(canonical(p), line)
            self.assertEqual(p["tree_size"], len(leaves))
            self.assertEqual(p["leaf_hash"], hashes[p["index"]].hex())
            self.assertTrue(verify_inclusion(hashes[p["index"]], p["index"], len(leaves),
                                             [bytes.fromhex(h) for h in p["audit_path"]], root))
        # The attestation: a DSSE envelope of an in-toto statement naming the checkpoint.
        env = json.loads(m["attestation.dsse.json"])
        self.assertEqual(env["payloadType"], "application/vnd.in-toto+json")
        stmt = json.loads(base64.b64decode(env["payload"]))
        ck = [e for e in events if e["type"] == "checkpoint"]
        self.assertEqual(stmt["subject"], [{"name": "x.pt", "digest": {"sha256": ck[0]["sha256"]}}])
        with open(os.path.join(W.ckpt, "x.pt"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), ck[0]["sha256"])

    # ------------------------------------------------------- tampering --

    # Members tampered naively (the manifest left alone): what must fail.
    NAIVE = {
        "VERSION": ({"manifest"}, {"manifest"}, {"manifest"}),
        "manifest.json": ({"manifest"}, {"manifest"}, {"manifest"}),
        "seal.note": ({"seal", "manifest"}, {"seal", "manifest"}, {"seal", "manifest"}),
        "key.pub": ({"seal", "manifest"}, {"seal", "manifest"}, {"manifest"}),
        "key.vkey": ({"seal", "manifest"}, {"seal", "manifest"}, {"manifest"}),
        "anchor.json": ({"anchor", "manifest"}, {"anchor", "manifest"}, {"anchor", "manifest"}),
        "attestation.dsse.json": ({"attestation"}, {"attestation"}, {"attestation", "manifest"}),
        "proofs/checkpoints.jsonl": ({"proofs", "manifest"}, {"proofs", "manifest"}, {"manifest"}),
        "events.jsonl": ({"events", "manifest"}, {"events", "manifest"}, {"events", "manifest"}),
    }

    def test_every_member_flipped_truncated_deleted_duplicated(self):
        self.assertEqual(sorted(self.NAIVE), sorted(W.m))
        for name, (on_flip, on_trunc, on_delete) in self.NAIVE.items():
            for how, change, checks in (("flip", flip, on_flip), ("truncate", truncate, on_trunc),
                                        ("delete", None, on_delete)):
                with self.subTest(member=name, how=how):
                    members = [(n, change(d) if change else d) if n == name else (n, d)
                               for n, d in W.members if change or n != name]
                    self.assertFails(self.write("t.tar.zst", members), checks)
            with self.subTest(member=name, how="duplicate"):
                members = list(W.members)
                i = [n for n, _ in members].index(name)
                members.insert(i + 1, members[i])
                self.assertFails(self.write("t.tar.zst", members), {"archive"},
                                 detail=r"^%s: appears twice$" % re.escape(name))

    # The same as a forger who rewrites the (unsigned) manifest to match: the
    # signed or recomputed checks must catch it on their own.
    FORGED = {
        "VERSION": ({"manifest"}, {"manifest"}, {"manifest"}),
        "seal.note": ({"seal"}, {"seal"}, {"seal"}),
        "key.pub": ({"seal"}, {"seal"}, {"manifest"}),
        "key.vkey": ({"seal"}, {"seal"}, {"manifest"}),
        "anchor.json": ({"anchor"}, {"anchor"}, {"anchor"}),
        "attestation.dsse.json": ({"attestation"}, {"attestation"}, {"attestation"}),
        "proofs/checkpoints.jsonl": ({"proofs"}, {"proofs"}, {"manifest"}),
        "events.jsonl": ({"events"}, {"events"}, {"events"}),
    }

    def test_every_member_forged_with_manifest(self):
        for name, (on_flip, on_trunc, on_delete) in self.FORGED.items():
            for how, data, checks in (("flip", flip(W.m[name]), on_flip),
                                      ("truncate", truncate(W.m[name]), on_trunc),
                                      ("delete", None, on_delete)):
                with self.subTest(member=name, how=how):
                    j = self.assertFails(self.write("f.tar.zst", forged(W.members, name, data)), checks)
                    if how != "delete" and name != "VERSION":
                        self.assertNotIn("manifest", self.failed(j), j)

    def events_forged(self, lines):
        return self.write("ev.tar.zst", forged(W.members, "events.jsonl",
                                               b"".join(x + b"\n" for x in lines)))

    def test_events_dropped_reordered_inserted_edited(self):
        lines = lines_of(W.m["events.jsonl"])
        n = len(lines)
        inp = [i for i, x in enumerate(lines) if json.loads(x)["type"] == "input"][1]
        edited = json.loads(lines[inp])
        edited["size"] += 1
        new_input = dict(json.loads(lines[0]), path=os.path.join(W.data, "zz.txt"), sha256="00" * 32)
        cases = {
            "drop the first": lines[1:],
            "drop one in the middle": lines[:n // 2] + lines[n // 2 + 1:],
            "drop the last": lines[:-1],
            "swap two": [lines[1], lines[0]] + lines[2:],
            "reverse": lines[::-1],
            "insert a copy": lines[:2] + [lines[0]] + lines[2:],
            "insert a new input": lines[:2] + [canonical(new_input)] + lines[2:],
            "edit an input's size": lines[:inp] + [canonical(edited)] + lines[inp + 1:],
            "append one": lines + [canonical(new_input)],
            "not canonical": [b" " + lines[0]] + lines[1:],
        }
        for what, new in cases.items():
            with self.subTest(what):
                j = self.assertFails(self.events_forged(new), {"events"})
                self.assertNotIn("manifest", self.failed(j))
        j = self.assertFails(self.events_forged(lines + [canonical(new_input)]), {"events"},
                             detail=r"holds 1 events more than the %d the seal covers" % n)

    def test_seal_of_another_key(self):
        # The same log signed by another key: a copy of the store, its seals removed.
        copy = os.path.join(self.tmp, "store-copy")
        shutil.copytree(W.s.path, copy)
        shutil.rmtree(os.path.join(copy, "seals"))
        other = os.path.join(self.tmp, "other-key.tar.zst")
        W.bundle(other, store=copy, key=W.key2)
        j = self.assertFails(other, {"seal"}, detail=r"^seal\.note: ")
        # The bundle is self-consistent: without --key it passes, saying so.
        r, j = self.verify(other, key=False, rc=EXIT_OK)
        self.assertTrue(j["key_from_bundle"])
        # With the right key it passes; with the first key's bundle, the other fails.
        self.verify(other, key=W.pub2, rc=EXIT_OK)
        self.assertFails(W.zst, {"seal"}, key=W.pub2)
        # A key.pub swapped for the other key's (manifest fixed): caught with --key...
        with open(W.pub2, "rb") as f:
            pub2 = f.read()
        swapped = self.write("swapped.tar.zst", forged(W.members, "key.pub", pub2))
        self.assertFails(swapped, {"seal"}, detail=r"^key\.pub is not the key ")
        # ... and without (the seal does not verify with the shipped key).
        self.assertFails(swapped, {"seal"}, key=False)
        # key.pub of another type (EC P-256).
        ec = os.path.join(self.tmp, "ec.pem")
        self.assertEqual(run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                              "ec_paramgen_curve:P-256", "-out", ec]).rc, 0)
        ecpub = run(["openssl", "pkey", "-in", ec, "-pubout"]).outb
        self.assertIn(b"BEGIN PUBLIC KEY", ecpub)
        bad = self.write("ec.tar.zst", forged(W.members, "key.pub", ecpub))
        self.assertFails(bad, {"seal"}, key=False, detail=r"not Ed25519")
        # --key naming an EC key, or no key file at all.
        ecpubf = os.path.join(self.tmp, "ec.pub")
        with open(ecpubf, "wb") as f:
            f.write(ecpub)
        self.assertFails(W.zst, {"seal"}, key=ecpubf, detail=r"not Ed25519")
        self.assertFails(W.zst, {"seal"}, key=os.path.join(self.tmp, "nope.pub"))

    def test_attestation_resigned_by_another_key(self):
        env = json.loads(W.m["attestation.dsse.json"])
        stmt = json.loads(base64.b64decode(env["payload"]))
        stmt["subject"][0]["digest"]["sha256"] = "11" * 32
        payload = canonical(stmt)
        ptype = env["payloadType"].encode()
        pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
        msg, sig = os.path.join(self.tmp, "pae"), os.path.join(self.tmp, "sig")
        with open(msg, "wb") as f:
            f.write(pae)
        r = run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", W.key2, "-in", msg, "-out", sig])
        self.assertEqual(r.rc, 0, r)
        with open(sig, "rb") as f:
            env["payload"] = base64.b64encode(payload).decode()
            env["signatures"][0]["sig"] = base64.b64encode(f.read()).decode()
        bad = self.write("att.tar.zst", forged(W.members, "attestation.dsse.json", canonical(env)))
        self.assertFails(bad, {"attestation"}, detail=r"^attestation\.dsse\.json: ")
        # Re-signed with the right key, the statement itself disagrees with the events.
        r = run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", W.key, "-in", msg, "-out", sig])
        with open(sig, "rb") as f:
            env["signatures"][0]["sig"] = base64.b64encode(f.read()).decode()
        bad = self.write("att2.tar.zst", forged(W.members, "attestation.dsse.json", canonical(env)))
        self.assertFails(bad, {"attestation"}, detail=r'subject "x\.pt" has the wrong digest')

    def test_previous(self):
        # Another store (another origin), same key: another log.
        o = Store(os.path.join(self.tmp, "other"))
        o.init()
        o.add(*crtest.make_files(os.path.join(self.tmp, "odata"), 2, tag="o").keys())
        shutil.copy(W.pub, o.path)
        shutil.copy(os.path.join(W.s.path, "cleanroom.vkey"), o.path)
        other = os.path.join(self.tmp, "other.tar.zst")
        W.bundle(other, store=o.path, key=W.key)
        self.verify(other, rc=EXIT_OK)
        self.assertFails(W.zst, {"previous"}, "--previous", other, detail=r"is of another log")
        # A rewritten log: a new store given this store's origin, with another
        # history at least as long as the old bundle's; same key.
        rw = Store(os.path.join(self.tmp, "rewritten"))
        rw.init()
        shutil.copy(os.path.join(W.s.path, "origin"), rw.path)
        rw.add(*crtest.make_files(os.path.join(self.tmp, "rwdata"), W.old_size + 2, tag="r").keys())
        rewritten = os.path.join(self.tmp, "rewritten.tar.zst")
        W.bundle(rewritten, store=rw.path, key=W.key)
        r, j = self.verify(rewritten, rc=EXIT_OK)
        self.assertEqual(j["origin"], W.origin)
        self.assertFails(rewritten, {"previous"}, "--previous", W.old,
                         detail=r"do not give the previous bundle's root: the log was rewritten")
        # The same with the old bundle's events tampered (and re-listed): the old bundle fails.
        old = [(m.name, d) for m, d in read_bundle(W.old)]
        ev = lines_of(dict(old)["events.jsonl"])
        tampered = self.write("old-tampered.tar.zst",
                              forged(old, "events.jsonl", b"".join(x + b"\n" for x in ev[::-1])))
        self.assertFails(W.zst, {"previous"}, "--previous", tampered,
                         detail=r"the previous bundle fails its own events check")
        # Newer as previous: it cannot be a prefix.
        self.assertFails(W.old, {"previous"}, "--previous", W.zst, detail=r"seals \d+ events; this one holds")
        # The previous signed by another key, without --key (each its own key.pub).
        copy = os.path.join(self.tmp, "store-copy")
        shutil.copytree(W.s.path, copy)
        shutil.rmtree(os.path.join(copy, "seals"))
        other_key = os.path.join(self.tmp, "k2.tar.zst")
        W.bundle(other_key, store=copy, key=W.key2)
        self.assertFails(W.zst, {"previous"}, "--previous", other_key, key=False,
                         detail=r"signed with another key")
        self.assertFails(W.zst, {"previous"}, "--previous", other_key,
                         detail=r"fails its own seal check")
        # Not a bundle at all.
        junk = os.path.join(self.tmp, "junk")
        with open(junk, "wb") as f:
            f.write(b"not a bundle\n")
        self.assertFails(W.zst, {"previous"}, "--previous", junk)

    def test_longest_key_name(self):
        # A 255-byte key name: the longest verifier key (cmd_bundle once wrote
        # its newline one byte past the buffer; ASan builds catch that).
        name = "n" * 255
        s = self.new_store()
        s.add(*crtest.make_files(os.path.join(self.tmp, "d"), 2).keys())
        r = cleanroom("keygen", "--out", s.path, "--name", name)
        self.assertEqual(r.rc, 0, r)
        out = os.path.join(self.tmp, "long-name.tar.zst")
        W.bundle(out, store=s.path)
        with open(os.path.join(s.path, "cleanroom.vkey"), "rb") as f:
            vkey = f.read()
        self.assertEqual(bundle_dict(out)["key.vkey"], vkey.rstrip(b"\n") + b"\n")
        self.assertEqual(len(vkey.rstrip(b"\n")), 255 + 1 + 8 + 1 + 44)
        r, j = self.verify(out, key=os.path.join(s.path, "cleanroom.pub"), rc=EXIT_OK)
        self.assertIn("signed by " + name, self.ok_detail(j, "seal"))

    def test_root_option(self):
        self.assertFails(W.zst, {"root"}, "--root", "ab" * 32, detail=r"differs from the sealed root")
        self.assertFails(W.zst, {"root"}, "--root", "xyz", detail=r"not 64 hex digits")
        self.assertFails(W.zst, {"root"}, "--root", W.status["root"][:-2])

    def test_data_and_checkpoints_folders(self):
        d = os.path.join(self.tmp, "data")
        shutil.copytree(W.data, d)
        r, j = self.verify(W.zst, "--data", d, rc=EXIT_OK)
        os.remove(os.path.join(d, "b.txt"))
        with open(os.path.join(d, "sub", "c.txt"), "ab") as f:
            f.write(b"changed\n")
        with open(os.path.join(d, "sub", "new.txt"), "wb") as f:
            f.write(b"new\n")
        j = self.assertFails(W.zst, {"data"}, "--data", d)
        got = self.details(j, "data")
        self.assertIn("missing: %s/b.txt (recorded as %s/b.txt)" % (d, W.data), got)
        self.assertTrue(any(x.startswith("changed: %s/sub/c.txt has SHA-256 " % d) for x in got), got)
        self.assertIn("extra: %s/sub/new.txt is not recorded" % d, got)
        self.assertTrue(any(re.match(r"^%s: \d+ files match, 1 missing, 1 changed, 1 extra$" % re.escape(d), x)
                            for x in got), got)
        # Each one alone.
        for what, fix in (("missing", lambda: os.remove(os.path.join(d2, "a.txt"))),
                          ("extra", lambda: open(os.path.join(d2, "more.bin"), "wb").close()),
                          ("changed", lambda: open(os.path.join(d2, "e.txt"), "wb").close())):
            with self.subTest(what):
                d2 = os.path.join(self.tmp, "data-" + what)
                shutil.copytree(W.data, d2)
                fix()
                j = self.assertFails(W.zst, {"data"}, "--data", d2, detail=r"^%s: " % what)
                self.assertEqual(self.failed(j), {"data"})
        # Checkpoints.
        c = os.path.join(self.tmp, "ckpt")
        shutil.copytree(W.ckpt, c)
        self.verify(W.zst, "--checkpoints", c, rc=EXIT_OK)
        with open(os.path.join(c, "x.pt"), "ab") as f:
            f.write(b"!")
        self.assertFails(W.zst, {"checkpoints"}, "--checkpoints", c, detail=r"^changed: %s/x\.pt " % c)
        os.remove(os.path.join(c, "x.pt"))
        self.assertFails(W.zst, {"checkpoints"}, "--checkpoints", c, detail=r"^missing: %s/x\.pt " % c)

    # ---------------------------------------------------------- hostile --

    def hostile(self, name, members, how="zstd", rc=EXIT_VERIFY, detail=None, check="archive"):
        path = self.write(name, members, how) if not isinstance(members, bytes) else None
        if path is None:
            path = os.path.join(self.tmp, name)
            with open(path, "wb") as f:
                f.write(members)
        return self.refused(path, rc, detail, check)

    def refused(self, path, rc=EXIT_VERIFY, detail=None, check="archive"):
        r, j = self.verify(path)
        if isinstance(rc, int):
            self.assertEqual(r.rc, rc, r)
        else:
            self.assertIn(r.rc, rc, r)
        if r.rc == EXIT_VERIFY:
            self.assertFalse(j["ok"])
            if check:
                self.assertIn(check, self.failed(j), j)
            if detail:
                every = [c["detail"] for c in j["checks"] if not c["ok"]]
                self.assertTrue(any(re.search(detail, x) for x in every), (detail, every))
        else:
            self.assertEqual(r.rc, EXIT_ENV, r)
        # The text form says it too, with a FAILED summary or an error line.
        t, _ = self.verify(path, json_out=False)
        self.assertEqual(t.rc, r.rc, t)
        if t.rc == EXIT_VERIFY:
            self.assertRegex(t.out, r"\nFAIL|^FAIL")
            self.assertIn(": FAILED: ", t.out)
            self.assertNotRegex(t.out, r"[\x00-\x08\x0b-\x1f\x7f]", "control characters printed")
        return r, j

    @staticmethod
    def info(name, type_=tarfile.REGTYPE, **kw):
        ti = tarfile.TarInfo(name)
        ti.type = type_
        ti.mode = 0o644
        for k, v in kw.items():
            setattr(ti, k, v)
        return ti

    def test_hostile_entries(self):
        I = self.info
        cases = [
            ("dotdot", (I("../evil"), b"x"), r"^\.\./evil: unsafe member name$"),
            ("dotdot inside", (I("proofs/../VERSION"), b"x"), r"unsafe member name"),
            ("absolute", (I("/tmp/cleanroom-evil"), b"x"), r"^/tmp/cleanroom-evil: unsafe member name$"),
            ("backslash", (I("proofs\\evil"), b"x"), r"unsafe member name"),
            ("symlink", (I("evil", tarfile.SYMTYPE, linkname="/etc/passwd"), b""), r"not a regular file"),
            ("symlink as a member", (I("key.pub", tarfile.SYMTYPE, linkname="/etc/passwd"), b""),
             r"^key\.pub: not a regular file"),
            ("hard link", (I("key.vkey", tarfile.LNKTYPE, linkname="VERSION"), b""), r"not a regular file"),
            ("char device", (I("null", tarfile.CHRTYPE, devmajor=1, devminor=3), b""), r"not a regular file"),
            ("block device", (I("sda", tarfile.BLKTYPE, devmajor=8, devminor=0), b""), r"not a regular file"),
            ("fifo", (I("fifo", tarfile.FIFOTYPE), b""), r"not a regular file"),
            ("directory", (I("proofs", tarfile.DIRTYPE, mode=0o755), b""), r"not a regular file"),
            ("unknown member", (I("evil.txt"), b"x"), r"^evil\.txt: not a member a bundle holds$"),
            ("unknown folder", (I("extra/VERSION"), b"x"), r"not a member a bundle holds"),
            ("dot slash", (I("./VERSION"), b"x"), r"not a member a bundle holds"),
            ("duplicate", (I("VERSION"), b"cleanroom-bundle 1\n"), r"^VERSION: appears twice$"),
            ("control characters", (I("evil\x1b[2J\x07.txt"), b"x"), r"^evil\?\[2J\?\.txt: not a member"),
            ("oversized small member", (I("anchor.json"), b"{" + b" " * SMALL_MAX + b"}"),
             r"^anchor\.json: %d bytes is over the limit" % (SMALL_MAX + 2)),
            ("oversized tensor manifest", (I("tensors/%s.json" % ("0" * 64)), b"0" * (SMALL_MAX + 1)),
             r"over the limit"),
        ]
        for what, entry, detail in cases:
            for where in ("first", "before the events"):
                with self.subTest(what, where=where):
                    members = [(I(n), d) for n, d in W.members if not (n == entry[0].name and
                                                                     what.startswith("oversized"))]
                    if where == "first" and what != "duplicate":
                        members.insert(0, entry)
                    else:
                        members.insert(len(members) - 1, entry)
                    self.hostile("h.tar.zst", members, detail=detail)

    def test_non_utf8_name(self):
        bio = io.BytesIO()
        with tarfile.open(fileobj=bio, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                          errors="surrogateescape") as t:
            ti = tarfile.TarInfo("evil-\udcff\udcfe.txt")
            ti.size = 1
            t.addfile(ti, io.BytesIO(b"x"))
        path = os.path.join(self.tmp, "nonutf8.tar.zst")
        with open(path, "wb") as f:
            f.write(compress(bio.getvalue()))
        r, j = self.refused(path, detail=r"^evil-\?\?\.txt: not a member a bundle holds$")

    def test_oversized_member_declared_without_data(self):
        # A header claiming a huge seal.note, the archive ending there.
        ti = self.info("seal.note")
        ti.size = 64 * 1024 ** 3
        raw = b""
        for n, d in W.members[:2]:
            m = self.info(n, size=len(d))
            raw += m.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + d + b"\0" * (-len(d) % 512)
        raw += ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        path = os.path.join(self.tmp, "huge.tar.zst")
        with open(path, "wb") as f:
            f.write(compress(raw))
        self.refused(path, detail=r"^seal\.note: %d bytes is over the limit" % ti.size)

    def test_too_many_members(self):
        extra = [("tensors/%064x.json" % i, b"{}") for i in range(MEMBERS_MAX + 10)]
        self.hostile("many.tar.zst", W.members[:-1] + extra + W.members[-1:],
                     detail=r"more than %d members" % MEMBERS_MAX)

    def rss_verify(self, path):
        """(exit status, peak RSS in MiB) of a verify run, measured in a child of its own."""
        code = ("import resource, subprocess, sys\n"
                "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
                "sys.stderr.buffer.write(p.stderr)\n"
                "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
        r = run([sys.executable, "-c", code, crtest.CLEANROOM, "verify", "--key", W.pub, path],
                cwd=tempfile.mkdtemp(dir=self.tmp))
        self.assertNotRegex(r.err, SANITIZER, r)
        rc, kib = r.out.split()
        return int(rc), int(kib) / 1024

    def test_decompression_bombs(self):
        n = W.status["tree_size"]
        small = W.members[:-1]
        base_rc, base_rss = self.rss_verify(W.zst)
        self.assertEqual(base_rc, 0)
        # Zeros: over what the sealed tree size allows events.jsonl (n lines of at
        # most CR_EVENT_MAX_SIZE bytes and their newlines), refused from the header
        # alone: the ~%d MB are never decompressed.
        cap = n * (EVENT_MAX + 1)
        bomb = os.path.join(self.tmp, "zeros.tar.zst")
        stream_bundle(bomb, small, "events.jsonl", cap + 1)
        self.assertLess(os.path.getsize(bomb), cap // 100)
        self.refused(bomb, detail=r"^events\.jsonl: %d bytes is over the limit of %d bytes for the sealed "
                                  r"tree size$" % (cap + 1, cap))
        # Newlines within that limit: without a bound the verifier would keep 32
        # bytes per line (2 GiB here); it stops after a few malformed events.
        bomb = os.path.join(self.tmp, "newlines.tar.zst")
        stream_bundle(bomb, small, "events.jsonl", 64 * 1024 * 1024, b"\n")
        self.refused(bomb, check="events", detail=r"more than 10 malformed events")
        rc, rss = self.rss_verify(bomb)
        self.assertEqual(rc, EXIT_VERIFY)
        self.assertLess(rss, base_rss + 64, "verify held %.0f MiB (a good bundle: %.0f)" % (rss, base_rss))
        # Valid events repeated far beyond the sealed size: counted, not kept.
        line = min(lines_of(W.m["events.jsonl"]), key=len) + b"\n"
        reps = (48 * 1024 * 1024) // len(line)
        bomb = os.path.join(self.tmp, "repeat.tar.zst")
        with open(bomb, "wb") as f:
            f.write(compress(tar_bytes(small + [("events.jsonl", W.m["events.jsonl"] + line * reps)])))
        self.refused(bomb, check="events", detail=r"holds %d events more than the %d the seal covers" % (reps, n))
        rc, rss = self.rss_verify(bomb)
        self.assertLess(rss, base_rss + 64)
        # A proof member that is one endless line: refused before it fills the disk.
        bomb = os.path.join(self.tmp, "proofs.tar.zst")
        small_np = [(k, d) for k, d in small if k != "proofs/checkpoints.jsonl"]
        stream_bundle(bomb, small_np, "proofs/checkpoints.jsonl", min(n * PROOF_LINE_MAX, 4 << 20))
        self.refused(bomb, check="proofs", detail=r"a line is longer than %d bytes" % PROOF_LINE_MAX)
        # And beyond the proof size limit for the tree.
        bomb = os.path.join(self.tmp, "proofs2.tar.zst")
        stream_bundle(bomb, small_np, "proofs/checkpoints.jsonl", n * PROOF_LINE_MAX + 1, b"\n")
        self.refused(bomb, detail=r"^proofs/checkpoints\.jsonl: \d+ bytes is over the limit")
        # A single event line longer than any event may be.
        bomb = os.path.join(self.tmp, "longline.tar.zst")
        stream_bundle(bomb, small, "events.jsonl", EVENT_MAX + 2, b"{")
        self.refused(bomb, check="events", detail=r"line 1 exceeds %d bytes" % EVENT_MAX)

    def test_unreadable_files(self):
        tar = bundle_tar_bytes(W.zst)
        with open(W.zst, "rb") as f:
            zst = f.read()
        with open(W.gz, "rb") as f:
            gz = f.read()
        rnd = os.urandom(8192)
        cases = [
            # (what, bytes, allowed exit statuses, check when 1)
            ("empty file", b"", EXIT_ENV),
            ("random bytes", rnd, EXIT_ENV),
            ("text", b"hello, auditor\n" * 100, EXIT_ENV),
            ("zstd of random bytes", compress(rnd), (EXIT_VERIFY, EXIT_ENV)),
            ("gzip of random bytes", compress(rnd, "gzip"), (EXIT_VERIFY, EXIT_ENV)),
            ("gzip magic, then garbage", b"\x1f\x8b\x08\x00" + rnd, (EXIT_VERIFY, EXIT_ENV)),
            ("zstd magic, then garbage", crtest.ZSTD_MAGIC + rnd, (EXIT_VERIFY, EXIT_ENV)),
            ("zstd cut in half", zst[:len(zst) // 2], (EXIT_VERIFY, EXIT_ENV)),
            ("gzip cut in half", gz[:len(gz) // 2], (EXIT_VERIFY, EXIT_ENV)),
            ("zstd cut before its end", zst[:-8], (EXIT_VERIFY, EXIT_ENV)),
            ("tar cut inside events, compressed", compress(tar[:len(tar) - 3000]), EXIT_VERIFY),
            ("tar cut inside a header, compressed", compress(tar[:512 * 3 + 100]), EXIT_VERIFY),
            ("tar of no member", compress(b"\0" * 1024), EXIT_VERIFY),
            ("a bad header checksum", compress(tar[:148] + b"9" + tar[149:]), (EXIT_VERIFY, EXIT_ENV)),
        ]
        for what, data, rc in cases:
            with self.subTest(what):
                path = os.path.join(self.tmp, "u.bin")
                with open(path, "wb") as f:
                    f.write(data)
                self.refused(path, rc=rc, check=None)
        # Not there, or a folder.
        self.refused(os.path.join(self.tmp, "missing.tar.zst"), rc=EXIT_ENV)
        self.refused(self.tmp, rc=EXIT_ENV)

    def test_plain_tar_and_reordered_members(self):
        # An uncompressed tar of the same members is read as well (libarchive).
        self.verify(self.write("plain.tar", W.members, "none"), rc=EXIT_OK)
        # The small members after the events: the seal is judged before the
        # events are read, so it counts as missing.
        moved = W.members[-1:] + W.members[:-1]
        self.assertFails(self.write("moved.tar.zst", moved), {"seal", "events"})

    # ---------------------------------------------------- writes nothing --

    def test_verify_writes_nothing(self):
        """Traced with strace: no file created, opened for writing, renamed, linked or
        removed (anonymous O_TMPFILE files for spooled proofs are allowed)."""
        if not STRACE:
            self.skipTest("strace is not installed")
        swapped_key = self.write("w-swapped.tar.zst", forged(W.members, "key.pub", W.m["key.pub"]))
        hostile = self.write("w-hostile.tar.zst",
                             [(self.info("../../tmp/cleanroom-evil"), b"x")] + W.members)
        junk = os.path.join(self.tmp, "w-junk")
        with open(junk, "wb") as f:
            f.write(os.urandom(1000))
        cases = [
            ["--key", W.pub, W.zst],
            [W.zst],  # key.pub read from memory
            [W.gz],
            ["--key", W.pub, "--previous", W.old, "--data", W.data, "--checkpoints", W.ckpt,
             "--root", W.status["root"], W.zst],
            [swapped_key],
            [hostile],
            [junk],
        ]
        bad = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND")
        writes = re.compile(r"^\d+\s+(mkdir|mkdirat|rename|renameat2?|link|linkat|symlink|symlinkat|"
                            r"unlink|unlinkat|rmdir|mknod|mknodat|truncate|chmod|fchmodat|chown|"
                            r"lchown|fchownat|utimensat|utimes|creat)\(")
        for argv in cases:
            with self.subTest(argv=argv[-1]):
                log = os.path.join(self.tmp, "strace.log")
                cwd = tempfile.mkdtemp(dir=self.tmp)
                env = {"ASAN_OPTIONS": "detect_leaks=0"}  # LeakSanitizer does not run under ptrace
                r = run([STRACE, "-f", "-qq", "-o", log, "-e", "trace=%file",
                         crtest.CLEANROOM, "verify", "--json"] + argv, cwd=cwd, env=env)
                self.assertIn(r.rc, (EXIT_OK, EXIT_VERIFY, EXIT_ENV), r)
                self.assertNotRegex(r.err, SANITIZER)
                with open(log) as f:
                    trace = f.read().splitlines()
                self.assertTrue(any("execve(" in x for x in trace), trace[:5])
                offending = [x for x in trace
                             if writes.match(x) or (re.match(r"^\d+\s+(open|openat|openat2)\(", x)
                                                    and bad.search(x) and "O_TMPFILE" not in x)]
                self.assertEqual(offending, [], "\n".join(offending))
                self.assertEqual(os.listdir(cwd), [])
        self.assertFalse(os.path.exists("/tmp/cleanroom-evil"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
