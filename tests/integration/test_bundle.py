#!/usr/bin/python3
"""cleanroom bundle and cleanroom verify, end to end (docs/formats/bundle.md).

One real store is built once: files added, a key made, a bundle written at
that size (the "old" bundle, whose seal the store keeps), a training run
recorded (`cleanroom record`: it reads data files and writes a checkpoint
x.pt), one more file added, and the bundle written again (zstd and gzip,
and with --prove-inputs). Then:

- the bundle verifies (exit 0, every check ok) and is byte-identical when
  written twice; its members, order, modes, owners and times are as
  documented, and everything in it is recomputed here (digests, root,
  proofs, anchor commitment);
- every member is tampered with (a byte flipped, truncated, deleted,
  duplicated), both naively and as a forger who also rewrites the unsigned
  manifest; events are dropped, reordered, inserted, edited and appended; a
  seal, a key.pub and an attestation of another key; inclusion proofs
  dropped, repeated, reordered, for the wrong event or tree; consistency
  proofs with a flipped hash, from a seal of another key or log, with a
  size or root that is not their seal's, out of order; anchor.json naming
  another seal; --previous with another log and with a rewritten one;
  --root and --data/--checkpoints with wrong values: each fails with exit 1
  and the right check and reason named in --json;
- anchor.json with its "published" block filled in still verifies (it is
  not in the manifest), --root against its root too;
- hostile archives (.., absolute names, links, devices, fifos, folders, over
  sized members, duplicates, unknown members, decompression bombs, too many
  members, truncated, random and empty files) are refused without a crash,
  with a clear message, writing nothing anywhere (traced with strace when it
  is installed).

Exit status (docs/formats/bundle.md, "Refusals and exit status"): 1 once
the first member's header of a gzip, zstd or plain tar could be read -- a
hostile or damaged archive is then a failed "archive" check, reported in
--json like any other; 3 when nothing can be checked: the bundle or
--previous is missing or not such an archive at all, --key is not an Ed25519
public key, --data or --checkpoints is not a folder; 2 for bad usage
(--root not 64 hex digits among them).

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
from crtest import (BUNDLE_ORDER, EXIT_ENV, EXIT_OK, EXIT_USAGE, EXIT_VERIFY, Store, bundle_dict,  # noqa: E402
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
        self.pi = os.path.join(root, "bundle-pi.tar.zst")
        self.bundle(self.zst)
        self.bundle(self.gz, "--gzip")
        self.bundle(self.pi, "--prove-inputs")
        self.members = [(m.name, d) for m, d in read_bundle(self.zst)]
        self.m = dict(self.members)
        self.pi_members = [(m.name, d) for m, d in read_bundle(self.pi)]
        with open(os.path.join(self.s.path, "seals", "%016d.note" % self.old_size), "rb") as f:
            self.old_seal = f.read()
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


def read_bundle_pairs(path):
    """[(name, bytes)] of a bundle, in archive order."""
    return [(m.name, d) for m, d in read_bundle(path)]


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
        self.assertIn(r.rc, (EXIT_OK, EXIT_VERIFY, EXIT_USAGE, EXIT_ENV), r)
        self.assertEqual(os.listdir(cwd), [], "verify wrote into its folder")
        if rc is not None:
            self.assertEqual(r.rc, rc, r)
        j = None
        if r.rc in (EXIT_OK, EXIT_VERIFY) and json_out:
            j = r.json()
            self.assertEqual(j["ok"], r.rc == EXIT_OK, r)
            self.assertEqual(j["failures"], sum(1 for c in j["checks"] if not c["ok"]), r)
            self.assertEqual(j["ok"], j["failures"] == 0, r)
        elif r.rc in (EXIT_ENV, EXIT_USAGE):
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
        self.assertRegex(r.out, r"VERIFIED: 7 checks, 0 failed; %d events, root %s\n$" %
                         (W.status["tree_size"], W.status["root"]))
        self.assertIn("ok   proofs       proofs/checkpoints.jsonl: 1 inclusion proofs verify against the "
                      "sealed root, one for every checkpoint event\n", r.out)
        self.assertIn("ok   proofs       proofs/consistency.jsonl: 1 earlier seals (sizes %d to %d), signed "
                      "by cleanroom, are prefixes of the sealed tree\n" % (W.old_size, W.old_size), r.out)
        # With --prove-inputs: a proof for every input too.
        r, j = self.verify(W.pi, rc=EXIT_OK)
        n_inputs = [json.loads(x)["type"] for x in lines_of(W.m["events.jsonl"])].count("input")
        self.assertIn("proofs/inputs.jsonl: %d inclusion proofs verify against the sealed root, one for every "
                      "input event" % n_inputs, [c["detail"] for c in j["checks"]])
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
                                 "proofs/consistency.jsonl", "events.jsonl"])
        self.assertEqual([n for n, _ in W.pi_members], BUNDLE_ORDER)
        for m in infos:
            self.assertTrue(m.isreg(), m.name)
            self.assertEqual((m.mode, m.uid, m.gid, m.uname, m.gname, m.mtime),
                             (0o644, 0, 0, "root", "root", 0), m.name)
        # ustar magic on every header (pax restricted: no pax headers needed for these names).
        self.assertEqual(tar[257:263], b"ustar\0")
        m = W.m
        self.assertEqual(m["VERSION"], b"cleanroom-bundle 1\n")
        # The manifest: canonical, every member but itself, the attestation and
        # anchor.json, in order.
        man = json.loads(m["manifest.json"])
        self.assertEqual(canonical(man), m["manifest.json"])
        self.assertEqual(man["format"], "cleanroom-bundle")
        self.assertEqual(man["version"], 1)
        self.assertEqual([e["name"] for e in man["members"]],
                         [n for n in names if n not in ("manifest.json", "attestation.dsse.json",
                                                        "anchor.json")])
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
        # One consistency proof from the earlier seal, which the line carries as the store keeps it.
        cons = [json.loads(x) for x in lines_of(m["proofs/consistency.jsonl"])]
        self.assertEqual(len(cons), 1)
        c = cons[0]
        self.assertEqual(canonical(c), lines_of(m["proofs/consistency.jsonl"])[0])
        self.assertEqual(sorted(c), ["new_size", "old_root", "old_size", "proof", "seal"])
        self.assertEqual(c["seal"].encode(), W.old_seal)
        self.assertEqual((c["old_size"], c["new_size"]), (W.old_size, len(leaves)))
        self.assertEqual(c["old_root"], mth(hashes[:W.old_size]).hex())
        self.assertEqual(c["proof"], [h.hex() for h in crtest.consistency_proof(hashes, W.old_size, len(leaves))])
        self.assertTrue(crtest.verify_consistency(W.old_size, len(leaves), mth(hashes[:W.old_size]), root,
                                                  [bytes.fromhex(h) for h in c["proof"]]))
        self.assertEqual(c["seal"].split("\n")[:3],
                         [W.origin, str(W.old_size), base64.b64encode(mth(hashes[:W.old_size])).decode()])
        # The attestation: a DSSE envelope of an in-toto statement naming the checkpoint.
        env = json.loads(m["attestation.dsse.json"])
        self.assertEqual(env["payloadType"], "application/vnd.in-toto+json")
        stmt = json.loads(base64.b64decode(env["payload"]))
        ck = [e for e in events if e["type"] == "checkpoint"]
        self.assertEqual(stmt["subject"], [{"name": "x.pt", "digest": {"sha256": ck[0]["sha256"]}}])
        with open(os.path.join(W.ckpt, "x.pt"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), ck[0]["sha256"])

    # ------------------------------------------------------- tampering --

    # Each member of the bundle with every member (--prove-inputs), its byte
    # flipped, truncated, deleted: (checks that must fail, a reason one of
    # their details must match). The manifest is left alone in NAIVE and
    # rewritten to match in FORGED (what a forger would do: it is not signed),
    # where the signed and recomputed checks must catch it on their own.
    # anchor.json is not in the manifest: its fields are rebuilt from the seal.
    NOT_LISTED = r"^%s: size or SHA-256 differs from the manifest$"
    GONE = r"^%s: listed in the manifest, missing from the bundle$"
    REQUIRED = r"^%s: missing \(every bundle holds it\)$"
    SEAL_BAD = r"^seal\.note: "
    NAIVE = {
        "VERSION": (({"manifest"}, r'^VERSION is missing or not "cleanroom-bundle 1"$'),
                    ({"manifest"}, NOT_LISTED), ({"manifest"}, GONE)),
        "manifest.json": (({"manifest"}, r"^manifest\.json is missing or malformed$"),
                          ({"manifest"}, r"^manifest\.json is missing or malformed$"),
                          ({"manifest"}, r"^manifest\.json is missing or malformed$")),
        "seal.note": (({"seal", "manifest", "events"}, SEAL_BAD), ({"seal", "manifest"}, SEAL_BAD),
                      ({"seal", "manifest"}, r"^seal\.note is missing$")),
        "key.pub": (({"seal", "manifest"}, r"^key\.pub is not the key "),
                    ({"seal", "manifest"}, r"^key\.pub is not the key "), ({"manifest"}, GONE)),
        "key.vkey": (({"seal", "manifest"}, r"^key\.vkey: "), ({"seal", "manifest"}, r"^key\.vkey: "),
                     ({"manifest"}, GONE)),
        "anchor.json": (({"anchor"}, r"^anchor\.json: "), ({"anchor"}, r"^anchor\.json is not JSON"),
                        ({"anchor", "manifest"}, r"^anchor\.json is missing$")),
        "attestation.dsse.json": (({"attestation"}, r"^attestation\.dsse\.json: DSSE envelope: .* does not verify"),
                                  ({"attestation"}, r"^attestation\.dsse\.json: DSSE envelope is not JSON"),
                                  ({"attestation", "manifest"}, r"^attestation\.dsse\.json is missing$")),
        "proofs/checkpoints.jsonl": (({"proofs", "manifest"}, r"line 1: (malformed proof|the proof for event \d+ "
                                                              r"does not verify)"),
                                     ({"proofs", "manifest"}, r"^proofs/checkpoints\.jsonl: checkpoint event \d+ "
                                                              r"has no inclusion proof$"),
                                     ({"manifest"}, GONE)),
        "proofs/inputs.jsonl": (({"proofs", "manifest"}, r"line \d+: (malformed proof|the proof for event \d+ does "
                                                         r"not verify)"),
                                ({"proofs", "manifest"}, r"^proofs/inputs\.jsonl: input event \d+ has no inclusion "
                                                         r"proof$"),
                                ({"manifest"}, GONE)),
        # The flipped byte is a hex digit of the proof: one that stays a hex
        # digit makes a proof that does not verify, 'a' or 'f' a malformed one.
        "proofs/consistency.jsonl": (({"proofs", "manifest"}, r"line 1: (malformed consistency proof|the proof "
                                                              r"from the seal at size \d+ does not verify "
                                                              r"against the sealed root)$"),
                                     ({"proofs", "manifest"}, r"line 1: malformed consistency proof$"),
                                     ({"manifest"}, GONE)),
        "events.jsonl": (({"events", "manifest"}, r"^the \d+ events give root [0-9a-f]{64}, the seal says "),
                         ({"events", "manifest"}, r"^events\.jsonl does not end with a newline \(truncated\?\)$"),
                         ({"events", "manifest"}, r"^events\.jsonl is missing$")),
    }

    def test_every_member_flipped_truncated_deleted_duplicated(self):
        self.assertEqual(sorted(self.NAIVE), sorted(BUNDLE_ORDER))
        self.assertEqual(sorted(self.NAIVE), sorted(n for n, _ in W.pi_members))
        for name, cases in self.NAIVE.items():
            for how, change, (checks, detail) in zip(("flip", "truncate", "delete"), (flip, truncate, None), cases):
                with self.subTest(member=name, how=how):
                    members = [(n, change(d) if change else d) if n == name else (n, d)
                               for n, d in W.pi_members if change or n != name]
                    if "%s" in detail:
                        detail = detail % re.escape(name)
                    j = self.assertFails(self.write("t.tar.zst", members), checks, detail=detail)
                    if "manifest" not in checks:
                        self.assertNotIn("manifest", self.failed(j), j)
                    elif name != "manifest.json":
                        # ... and the manifest names the member.
                        why = self.NOT_LISTED if how != "delete" else self.GONE if name not in (
                            "anchor.json", "attestation.dsse.json") else self.REQUIRED
                        self.assertTrue(any(re.search(why % re.escape(name), d) for d in self.details(j, "manifest")),
                                        j)
            with self.subTest(member=name, how="duplicate"):
                members = list(W.pi_members)
                i = [n for n, _ in members].index(name)
                members.insert(i + 1, members[i])
                self.assertFails(self.write("t.tar.zst", members), {"archive"},
                                 detail=r"^%s: appears twice$" % re.escape(name))

    FORGED = {
        "VERSION": (({"manifest"}, r'^VERSION is missing or not "cleanroom-bundle 1"$'),
                    ({"manifest"}, r'^VERSION is missing or not "cleanroom-bundle 1"$'), ({"manifest"}, REQUIRED)),
        "seal.note": (({"seal"}, SEAL_BAD), ({"seal"}, SEAL_BAD), ({"seal"}, r"^seal\.note is missing$")),
        "key.pub": (({"seal"}, r"^key\.pub is not the key "), ({"seal"}, r"^key\.pub is not the key "),
                    ({"manifest"}, REQUIRED)),
        "key.vkey": (({"seal"}, r"^key\.vkey: "), ({"seal"}, r"^key\.vkey: "), ({"manifest"}, REQUIRED)),
        "anchor.json": (({"anchor"}, r"^anchor\.json: "), ({"anchor"}, r"^anchor\.json is not JSON"),
                        ({"anchor", "manifest"}, r"^anchor\.json is missing$")),
        "attestation.dsse.json": (({"attestation"}, r"^attestation\.dsse\.json: DSSE envelope: .* does not verify"),
                                  ({"attestation"}, r"^attestation\.dsse\.json: DSSE envelope is not JSON"),
                                  ({"attestation", "manifest"}, r"^attestation\.dsse\.json is missing$")),
        "proofs/checkpoints.jsonl": (({"proofs"}, r"line 1: (malformed proof|the proof for event \d+ does not "
                                                  r"verify)"),
                                     ({"proofs"}, r"^proofs/checkpoints\.jsonl: checkpoint event \d+ has no "
                                                  r"inclusion proof$"),
                                     ({"manifest"}, REQUIRED)),
        "proofs/inputs.jsonl": (({"proofs"}, r"line \d+: (malformed proof|the proof for event \d+ does not verify)"),
                                ({"proofs"}, r"^proofs/inputs\.jsonl: input event \d+ has no inclusion proof$"),
                                (set(), None)),
        "proofs/consistency.jsonl": (({"proofs"}, r"line 1: (malformed consistency proof|the proof from the seal "
                                                  r"at size \d+ does not verify)"),
                                     ({"proofs"}, r"line 1: malformed consistency proof$"),
                                     ({"manifest"}, REQUIRED)),
        "events.jsonl": (({"events", "attestation"}, r"^the \d+ events give root [0-9a-f]{64}, the seal says "),
                         ({"events", "attestation"}, r"^events\.jsonl does not end with a newline \(truncated\?\)$"),
                         ({"events", "attestation", "manifest"}, r"^events\.jsonl is missing$")),
    }

    def test_every_member_forged_with_manifest(self):
        self.assertEqual(sorted(self.FORGED), sorted(set(BUNDLE_ORDER) - {"manifest.json"}))
        pm = dict(W.pi_members)
        for name, cases in self.FORGED.items():
            for how, data, (checks, detail) in zip(("flip", "truncate", "delete"),
                                                  (flip(pm[name]), truncate(pm[name]), None), cases):
                with self.subTest(member=name, how=how):
                    bundle = self.write("f.tar.zst", forged(W.pi_members, name, data))
                    if not checks:
                        # proofs/inputs.jsonl is optional (--prove-inputs): without it the
                        # bundle is the one written without the option, and verifies.
                        self.verify(bundle, rc=EXIT_OK)
                        continue
                    if "%s" in detail:
                        detail = detail % re.escape(name)
                    j = self.assertFails(bundle, checks, detail=detail)
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

    def test_manifest_seal_and_event_reasons(self):
        man = json.loads(W.m["manifest.json"])

        def with_manifest(m, members=W.members):
            return [(n, canonical(m) if n == "manifest.json" else d) for n, d in members]

        bad = dict(man, members=man["members"] + [{"name": 7}])
        self.assertFails(self.write("m.tar.zst", with_manifest(bad)), {"manifest"},
                         detail=r"^manifest entry %d is malformed$" % len(man["members"]))
        fewer = dict(man, members=[e for e in man["members"] if e["name"] != "key.vkey"])
        self.assertFails(self.write("m.tar.zst", with_manifest(fewer)), {"manifest"},
                         detail=r"^key\.vkey: in the bundle but not in the manifest$")
        self.assertFails(self.write("m.tar.zst", with_manifest({"members": 1})), {"manifest"},
                         detail=r"^manifest\.json is missing or malformed$")
        # The seal: without --key, key.pub missing or no PEM key; key.vkey of another key.
        nokey = self.write("k.tar.zst", forged(W.members, "key.pub", None))
        self.assertFails(nokey, {"seal", "events"}, key=False,
                         detail=r"^no --key given and key\.pub is missing from the bundle$")
        self.assertFails(nokey, {"events"}, key=False, detail=r"^no valid seal to compare the events with$")
        self.assertFails(self.write("k.tar.zst", forged(W.members, "key.pub", b"hello\n")), {"seal"}, key=False,
                         detail=r"^key\.pub: not a PEM public key \(SubjectPublicKeyInfo\)$")
        with open(os.path.join(W.k2dir, "cleanroom.vkey"), "rb") as f:
            vkey2 = f.read()
        self.assertFails(self.write("k.tar.zst", forged(W.members, "key.vkey", vkey2)), {"seal"},
                         detail=r"^key\.vkey holds another key than the one the seal is checked with$")
        # --previous with no valid seal here.
        self.assertFails(self.write("k.tar.zst", forged(W.members, "seal.note", flip(W.m["seal.note"]))),
                         {"seal", "previous"}, "--previous", W.old,
                         detail=r"^this bundle has no valid seal to compare the previous one with$")
        # An event that is not canonical, named by its line.
        lines = lines_of(W.m["events.jsonl"])
        self.assertFails(self.events_forged([lines[0], b" " + lines[1]] + lines[2:]), {"events"},
                         detail=r"^events\.jsonl line 2: ")
        # A member with an empty name.
        self.hostile("noname.tar.zst", [(self.info(""), b"x")] + W.members, detail=r"^a member has no name$")

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
        # The auditor's own --key unusable: nothing is checked (exit 3).
        r, _ = self.verify(W.zst, key=ecpubf, rc=EXIT_ENV)
        self.assertRegex(r.err, r"^cleanroom verify: --key: .*not Ed25519")
        r, _ = self.verify(W.zst, key=os.path.join(self.tmp, "nope.pub"), rc=EXIT_ENV)
        self.assertRegex(r.err, r"^cleanroom verify: --key: .*nope\.pub")

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
        # Signed with the right key, but no in-toto statement at all.
        with open(msg, "wb") as f:
            payload = canonical({"_type": "not a statement"})
            f.write(b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload))
        r = run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", W.key, "-in", msg, "-out", sig])
        self.assertEqual(r.rc, 0, r)
        with open(sig, "rb") as f:
            env["payload"] = base64.b64encode(payload).decode()
            env["signatures"][0]["sig"] = base64.b64encode(f.read()).decode()
        bad = self.write("att3.tar.zst", forged(W.members, "attestation.dsse.json", canonical(env)))
        self.assertFails(bad, {"attestation"}, detail=r"^attestation statement: ")

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
                         detail=r"^this log's first %d events give root [0-9a-f]{64}, not the previous "
                                r"bundle's [0-9a-f]{64}: the log was rewritten$" % W.old_size)
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
        # Not a bundle at all, or missing: nothing can be compared (exit 3, as for the bundle).
        junk = os.path.join(self.tmp, "junk")
        with open(junk, "wb") as f:
            f.write(b"not a bundle\n")
        r, _ = self.verify(W.zst, "--previous", junk, rc=EXIT_ENV)
        self.assertRegex(r.err, r"^cleanroom verify: --previous %s: " % re.escape(junk))
        self.verify(W.zst, "--previous", os.path.join(self.tmp, "nope.tar.zst"), rc=EXIT_ENV)
        # A damaged previous bundle (readable, but failing its own checks) is a failed check.
        old = [(m.name, d) for m, d in read_bundle(W.old)]
        broken = self.write("old-broken.tar.zst", old[:-1] + [("events.jsonl", flip(dict(old)["events.jsonl"]))])
        self.assertFails(W.zst, {"previous"}, "--previous", broken,
                         detail=r"^the previous bundle fails its own (manifest|events) check: ")

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
        j = self.assertFails(W.zst, {"root"}, "--root", "0x" + "cd" * 32)
        self.assertEqual(self.failed(j), {"root"})
        # Not a root at all: bad usage, nothing checked.
        for bad in ("xyz", W.status["root"][:-2], W.status["root"] + "00", "0x", ""):
            with self.subTest(root=bad):
                r, _ = self.verify(W.zst, "--root", bad, rc=EXIT_USAGE)
                self.assertIn("--root takes the 32-byte root as 64 hex digits", r.err)

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

    # ----------------------------------------------------------- proofs --

    def proofs_forged(self, members, name, lines):
        return self.write("p.tar.zst", forged(members, name, b"".join(x + b"\n" for x in lines)))

    def test_inclusion_proofs_tampered(self):
        pm = dict(W.pi_members)
        events = [json.loads(x) for x in lines_of(W.m["events.jsonl"])]
        n = len(events)
        ck = [i for i, e in enumerate(events) if e["type"] == "checkpoint"]
        inputs = [i for i, e in enumerate(events) if e["type"] == "input"]
        cp = lines_of(pm["proofs/checkpoints.jsonl"])
        ip = lines_of(pm["proofs/inputs.jsonl"])
        self.assertEqual(len(cp), 1)
        self.assertGreaterEqual(len(ip), 4)
        p0 = json.loads(cp[0])
        before = [json.loads(x) for x in ip if json.loads(x)["index"] < ck[0]]

        def changed(line, **kw):
            p = json.loads(line)
            p.update(kw)
            return canonical(p)

        flipped = json.loads(cp[0])
        flipped["audit_path"][0] = ("1" if flipped["audit_path"][0][0] != "1" else "2") + flipped["audit_path"][0][1:]
        cases = [
            # (what, member, new lines, detail of a "proofs" failure)
            ("a checkpoint proof dropped", "proofs/checkpoints.jsonl", [],
             r"^proofs/checkpoints\.jsonl: checkpoint event %d has no inclusion proof$" % ck[0]),
            ("an input proof dropped", "proofs/inputs.jsonl", ip[:1] + ip[2:],
             r"^proofs/inputs\.jsonl: input event %d has no inclusion proof$" % inputs[1]),
            ("a proof repeated", "proofs/checkpoints.jsonl", cp + cp,
             r"^proofs/checkpoints\.jsonl line 2: event %d comes after event %d \(one proof per event, "
             r"in event order\)$" % (ck[0], ck[0])),
            ("two proofs swapped", "proofs/inputs.jsonl", [ip[1], ip[0]] + ip[2:],
             r"^proofs/inputs\.jsonl line 2: event %d comes after event %d" % (inputs[0], inputs[1])),
            ("a proof of another type of event", "proofs/checkpoints.jsonl", [ip[0]] + cp,
             r"^proofs/checkpoints\.jsonl line 1: proves event %d, of type input: this member proves "
             r"checkpoint events only$" % inputs[0]),
            ("a proof for another tree size", "proofs/checkpoints.jsonl", [changed(cp[0], tree_size=n - 1)],
             r"^proofs/checkpoints\.jsonl line 1: the proof for event %d is for a tree of %d events, not the "
             r"sealed %d$" % (ck[0], n - 1, n)),
            ("a hash of the path flipped", "proofs/checkpoints.jsonl", [canonical(flipped)],
             r"^proofs/checkpoints\.jsonl line 1: the proof for event %d does not verify against the sealed "
             r"root$" % ck[0]),
            ("the index moved", "proofs/checkpoints.jsonl", [changed(cp[0], index=ck[0] - 1)],
             r"line 1: the proof for event %d does not verify" % (ck[0] - 1)),
            ("the leaf hash changed", "proofs/checkpoints.jsonl", [changed(cp[0], leaf_hash="ab" * 32)],
             r"line 1: the proof for event %d does not verify" % ck[0]),
            ("a line that is not JSON", "proofs/checkpoints.jsonl", [b"{"] + cp,
             r"^proofs/checkpoints\.jsonl line 1: malformed proof$"),
            ("a negative index", "proofs/checkpoints.jsonl", [changed(cp[0], index=-1)],
             r"line 1: malformed proof$"),
            ("a hash that is not hex", "proofs/checkpoints.jsonl", [changed(cp[0], leaf_hash="zz" * 32)],
             r"line 1: malformed proof$"),
            ("a path too long", "proofs/checkpoints.jsonl", [changed(cp[0], audit_path=["00" * 32] * 66)],
             r"line 1: malformed proof$"),
            ("a proof beyond the events", "proofs/inputs.jsonl",
             ip + [changed(ip[-1], index=n + 5)], r"line %d: the proof for event %d is for a tree|line %d: "
             r"the proof for event %d does not verify" % (len(ip) + 1, n + 5, len(ip) + 1, n + 5)),
        ]
        self.assertTrue(before, "an input before the checkpoint")
        for what, name, lines, detail in cases:
            with self.subTest(what):
                j = self.assertFails(self.proofs_forged(W.pi_members, name, lines), {"proofs"}, detail=detail)
                self.assertEqual(self.failed(j), {"proofs"}, j)
        # Events forged: a proof names a leaf its event no longer hashes to (the events fail too).
        lines = lines_of(W.m["events.jsonl"])
        edited = dict(events[ck[0]], size=events[ck[0]]["size"] + 1)
        new = lines[:ck[0]] + [canonical(edited)] + lines[ck[0] + 1:]
        j = self.assertFails(self.write("ev.tar.zst", forged(W.members, "events.jsonl",
                                                             b"".join(x + b"\n" for x in new))),
                             {"events", "proofs"},
                             detail=r"^proofs/checkpoints\.jsonl line 1: proves leaf hash %s for event %d, but "
                                    r"that event hashes to %s$" % (p0["leaf_hash"], ck[0],
                                                                  leaf_hash(canonical(edited)).hex()))
        # The last event dropped: its proof is beyond the events.
        self.assertEqual(inputs[-1], n - 1)
        j = self.assertFails(self.write("ev.tar.zst", forged(W.pi_members, "events.jsonl",
                                                             b"".join(x + b"\n" for x in lines[:-1]))),
                             {"events", "proofs"},
                             detail=r"^proofs/inputs\.jsonl line %d: proves event %d, beyond the %d events$"
                                    % (len(ip), n - 1, n - 1))
        # More than ten failures: the first ten, then a count.
        many = [b"{"] * 12 + [changed(x, tree_size=1) for x in ip]
        j = self.assertFails(self.proofs_forged(W.pi_members, "proofs/inputs.jsonl", many), {"proofs"},
                             detail=r"^proofs/inputs\.jsonl: %d failures in all$" % (12 + len(ip)))
        self.assertEqual(len(self.details(j, "proofs")), 11)

    def sign_note(self, text, key, name="cleanroom"):
        """A C2SP signed note of text (bytes, ending in a newline) signed with the private key file
        key (its public key beside it as .pub), computed with openssl alone."""
        msg, sig = os.path.join(self.tmp, "note-text"), os.path.join(self.tmp, "note-sig")
        with open(msg, "wb") as f:
            f.write(text)
        r = run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", msg, "-out", sig])
        self.assertEqual(r.rc, 0, r)
        der = run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"]).outb
        key_id = hashlib.sha256(name.encode() + b"\n\x01" + der[-32:]).digest()[:4]
        with open(sig, "rb") as f:
            blob = base64.b64encode(key_id + f.read())
        return text + b"\n\xe2\x80\x94 " + name.encode() + b" " + blob + b"\n"

    def test_consistency_proofs_tampered(self):
        line = lines_of(W.m["proofs/consistency.jsonl"])[0]
        c = json.loads(line)
        n, k = W.status["tree_size"], W.old_size
        text = W.old_seal.split(b"\n\n")[0] + b"\n"

        def changed(**kw):
            p = dict(c)
            p.update(kw)
            return canonical(p)

        def seal_of(body, key=W.key):
            return self.sign_note(body, key).decode()

        flipped = list(c["proof"])
        flipped[0] = ("1" if flipped[0][0] != "1" else "2") + flipped[0][1:]
        origin, size, root = text.decode().split("\n")[:3]
        wrong_root = base64.b64encode(b"\x07" * 32).decode()
        other_log = "%s\n%s\n%s\n" % ("cleanroom.local/another-log", size, root)
        rewritten = "%s\n%s\n%s\n" % (origin, size, wrong_root)
        P = r"^proofs/consistency\.jsonl line %d: "
        cases = [
            ("a hash of the proof flipped", [changed(proof=flipped)],
             P % 1 + r"the proof from the seal at size %d does not verify against the sealed root$" % k),
            ("a hash dropped from the proof", [changed(proof=c["proof"][1:])],
             P % 1 + r"the proof from the seal at size %d does not verify" % k),
            ("old_root not its seal's", [changed(old_root="ab" * 32)],
             P % 1 + r"old_size %d and old_root (ab){32} are not its seal's \(size %d, root %s\)$"
             % (k, k, c["old_root"])),
            ("old_size not its seal's", [changed(old_size=k - 1)],
             P % 1 + r"old_size %d and old_root [0-9a-f]{64} are not its seal's \(size %d, " % (k - 1, k)),
            ("a seal of another key", [changed(seal=seal_of(text, W.key2))],
             P % 1 + r"the seal at size %d is not signed by cleanroom with the key this bundle's seal "
                     r"verifies with: " % k),
            ("a seal of another key name", [changed(seal=self.sign_note(text, W.key, "other").decode())],
             P % 1 + r"the seal at size %d is not signed by cleanroom" % k),
            ("a seal that is not a note", [changed(seal="hello\n")],
             P % 1 + r"the seal at size %d is not signed by cleanroom" % k),
            ("a seal of another log", [changed(seal=seal_of(other_log.encode()))],
             P % 1 + r"the seal at size %d is of another log \(origin cleanroom\.local/another-log\)$" % k),
            ("a seal of a rewritten log", [changed(seal=seal_of(rewritten.encode()), old_root="07" * 32)],
             P % 1 + r"the proof from the seal at size %d does not verify against the sealed root$" % k),
            ("a line repeated", [line, line],
             P % 2 + r"the seal at size %d comes after size %d \(one line per earlier seal, by size\)$" % (k, k)),
            ("to another size", [changed(new_size=n + 1)],
             P % 1 + r"a proof from size %d to %d is not from an earlier size to the sealed %d$" % (k, n + 1, n)),
            ("from the sealed size", [changed(old_size=n)],
             P % 1 + r"a proof from size %d to %d is not from an earlier size" % (n, n)),
            ("from size 0", [changed(old_size=0)], P % 1 + r"the seal at size 0 comes after size 0"),
            ("the seal missing", [canonical({x: y for x, y in c.items() if x != "seal"})],
             P % 1 + r"malformed consistency proof$"),
            ("not JSON", [b"[]"], P % 1 + r"malformed consistency proof$"),
        ]
        for what, lines, detail in cases:
            with self.subTest(what):
                j = self.assertFails(self.proofs_forged(W.members, "proofs/consistency.jsonl", lines), {"proofs"},
                                     detail=detail)
                self.assertEqual(self.failed(j), {"proofs"}, j)
        # Dropped (the manifest left alone): the manifest says so. A forger who also
        # rewrites the manifest can leave earlier seals out (docs/formats/bundle.md):
        # what the verifier vouches for is that every seal present is genuine.
        j = self.assertFails(self.write("c.tar.zst", [(x, b"" if x == "proofs/consistency.jsonl" else d)
                                                      for x, d in W.members]), {"manifest"},
                             detail=r"^proofs/consistency\.jsonl: size or SHA-256 differs from the manifest$")
        self.assertEqual(self.failed(j), {"manifest"})
        # Lines are bounded: a seal over CR_BUNDLE_SEAL_MAX cannot make a line this long.
        huge = changed(seal="x" * (8192 + 2 * 4096))
        self.hostile("c.tar.zst", forged(W.members, "proofs/consistency.jsonl", huge + b"\n"), check="proofs",
                     detail=r"^proofs/consistency\.jsonl: a line is longer than %d bytes$" % (8192 + 2 * 4096))

    def test_earlier_seals_in_the_store(self):
        copy = os.path.join(self.tmp, "store-seals")
        shutil.copytree(W.s.path, copy)
        seals = os.path.join(copy, "seals")
        n = W.status["tree_size"]

        def add(name):
            f = os.path.join(self.tmp, name)
            with open(f, "wb") as fh:
                fh.write(name.encode() + b"\n")
            self.assertEqual(cleanroom("add", f, store=copy).rc, 0)

        def bundle(out):
            r = cleanroom("bundle", "-o", out, "--json", store=copy)
            self.assertEqual(r.rc, 0, r)
            lines = lines_of(bundle_dict(out)["proofs/consistency.jsonl"])
            return r, [json.loads(x)["old_size"] for x in lines]

        leaves = W.s.leaves()
        body2 = ("%s\n2\n%s\n" % (W.origin, base64.b64encode(mth([leaf_hash(x) for x in leaves[:2]])).decode())).encode()
        # Left out: a seal of another key (at n + 1), a file in seals/ that is no
        # seal, a fifo (never waited on), and one of ours over CR_BUNDLE_SEAL_MAX
        # bytes (many cosignatures).
        add("late1.txt")
        r = cleanroom("seal", "--store", copy, "--key", W.key2)
        self.assertEqual(r.rc, 0, r)
        add("late2.txt")
        with open(os.path.join(seals, "%016d.note" % 1), "wb") as fh:
            fh.write(b"not a seal\n")
        os.mkfifo(os.path.join(seals, "%016d.note" % 4))
        big = self.sign_note(body2, W.key) + b"".join(
            b"\xe2\x80\x94 other%d %s\n" % (i, base64.b64encode(b"\0" * 68)) for i in range(60))
        self.assertGreater(len(big), 4096)
        with open(os.path.join(seals, "%016d.note" % 2), "wb") as fh:
            fh.write(big)
        out = os.path.join(self.tmp, "seals.tar.zst")
        r, sizes = bundle(out)
        self.assertEqual((r.json()["earlier_seals"], r.json()["seals_skipped"]), (2, 4))
        self.assertEqual(sizes, [W.old_size, n])
        self.assertIn("cleanroom bundle: note: 4 earlier seals in %s/seals were left out" % copy, r.err)
        self.verify(out, rc=EXIT_OK)
        # Ours only: each gets its line, by size; the bundle is still reproducible.
        for size in (1, 2, 4, n + 1):
            os.remove(os.path.join(seals, "%016d.note" % size))
        with open(os.path.join(seals, "%016d.note" % 2), "wb") as fh:
            fh.write(self.sign_note(body2, W.key))
        add("late3.txt")
        r, sizes = bundle(out)
        self.assertEqual((r.json()["earlier_seals"], r.json()["seals_skipped"]), (4, 0))
        self.assertEqual(sizes, [2, W.old_size, n, n + 2])
        r, j = self.verify(out, rc=EXIT_OK)
        self.assertIn("proofs/consistency.jsonl: 4 earlier seals (sizes 2 to %d), signed by cleanroom, are "
                      "prefixes of the sealed tree" % (n + 2), [c["detail"] for c in j["checks"]])
        out2 = os.path.join(self.tmp, "seals2.tar.zst")
        bundle(out2)
        with open(out, "rb") as a, open(out2, "rb") as b:
            self.assertEqual(a.read(), b.read())
        # A seal of ours naming a root the log does not have at its size: the log
        # was rewritten after it was sealed. No bundle, and the reason.
        wrong = ("%s\n2\n%s\n" % (W.origin, base64.b64encode(b"\x07" * 32).decode())).encode()
        os.remove(os.path.join(seals, "%016d.note" % 2))
        with open(os.path.join(seals, "%016d.note" % 2), "wb") as fh:
            fh.write(self.sign_note(wrong, W.key))
        os.remove(out)
        r = cleanroom("bundle", "-o", out, store=copy)
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertRegex(r.err, r"seal %s/%016d\.note, signed by this key, says root (07){32} at size 2, "
                                r"but the log has [0-9a-f]{64} there: the log was rewritten after it was "
                                r"sealed" % (re.escape(seals), 2))
        self.assertFalse(os.path.exists(out))
        self.assertFalse(os.path.exists(out + ".tmp"))

    # ----------------------------------------------------------- anchor --

    PUBLISHED = {"chain": "base-sepolia", "chain_id": 84532, "call": "eas_timestamp",
                 "contract": "0x4200000000000000000000000000000000000021",
                 "transaction": "0x" + "5e" * 32, "block": 12345678, "timestamp": 1795000000}

    def test_anchor_published_still_verifies(self):
        anchor = json.loads(W.m["anchor.json"])
        self.assertEqual(set(anchor["published"].values()), {None})
        anchor["published"] = dict(self.PUBLISHED)
        # Filled in with any tool: key order and whitespace are free. The manifest is left alone.
        for what, data in (("canonical", canonical(anchor)),
                           ("pretty", json.dumps(anchor, indent=2).encode() + b"\n")):
            with self.subTest(what):
                out = self.write("pub.tar.zst", [(n, data if n == "anchor.json" else d) for n, d in W.members])
                r, j = self.verify(out, rc=EXIT_OK)
                self.assertIn("claims a publication that cannot be checked offline", self.ok_detail(j, "anchor"))
                self.assertIn("members match the manifest", self.ok_detail(j, "manifest"))
                # --root against the anchored root, as before.
                r, j = self.verify(out, "--root", anchor["root"], rc=EXIT_OK)
                self.assertIn("the sealed root equals the anchored root", self.ok_detail(j, "root"))
                self.assertFails(out, {"root"}, "--root", "ab" * 32, detail=r"differs from the sealed root")
                self.verify(out, "--previous", W.old, "--root", "0x" + anchor["root"], rc=EXIT_OK)

    def test_anchor_of_another_seal(self):
        anchor = json.loads(W.m["anchor.json"])
        old_anchor = json.loads(bundle_dict(W.old)["anchor.json"])

        def edit(**kw):
            a = json.loads(W.m["anchor.json"])
            for key, v in kw.items():
                if "." in key:
                    a["published"][key.split(".")[1]] = v
                else:
                    a[key] = v
            return canonical(a)

        cases = [
            ("commitment", edit(commitment="00" * 32), r'^anchor\.json: "commitment" is "0{64}", but the seal '
                                                       r'note gives "%s"$' % anchor["commitment"]),
            ("root", edit(root="11" * 32), r'^anchor\.json: "root" is "1{64}", but the seal note gives "%s"$'
             % anchor["root"]),
            ("tree_size", edit(tree_size=anchor["tree_size"] - 1),
             r'^anchor\.json: "tree_size" is %d, but the seal note gives %d$'
             % (anchor["tree_size"] - 1, anchor["tree_size"])),
            ("origin", edit(origin="cleanroom.local/x"), r'^anchor\.json: "origin" is "cleanroom\.local/x"'),
            ("call data", edit(calls=old_anchor["calls"]), r'^anchor\.json: "calls\.anchor_contract\.data" is '),
            ("the old bundle's anchor", canonical(old_anchor), r'^anchor\.json: "(commitment|root|tree_size)" is '),
            ("an unknown field", edit(note="hi"), r'^anchor\.json: unknown field "note"$'),
            ("a field missing", canonical({x: y for x, y in anchor.items() if x != "root"}),
             r'^anchor\.json: "root" is missing$'),
            ("a published field malformed", edit(**{"published.transaction": "0x12"}),
             r'^anchor\.json: "published\.transaction" is "0x12", which is not a valid transaction'),
            ("published missing a field",
             canonical(dict(anchor, published={x: None for x in list(self.PUBLISHED)[1:]})),
             r'^anchor\.json: "published\.chain" is missing$'),
            ("not JSON", b"{", r"^anchor\.json is not JSON: "),
        ]
        for what, data, detail in cases:
            with self.subTest(what):
                out = self.write("a.tar.zst", [(n, data if n == "anchor.json" else d) for n, d in W.members])
                j = self.assertFails(out, {"anchor"}, detail=detail)
                self.assertEqual(self.failed(j), {"anchor"}, j)

    def test_anchor_fill_in_recipe(self):
        """The shell recipe of docs/formats/anchor.md that fills in "published" and
        writes the bundle again, run as written: the new bundle verifies."""
        doc = os.path.join(os.environ.get("CR_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..")),
                           "docs", "formats", "anchor.md")
        with open(doc, encoding="utf-8") as f:
            blocks = re.findall(r"^```sh fill-in\n(.*?)^```\s*$", f.read(), re.M | re.S)
        self.assertEqual(len(blocks), 1)
        script = blocks[0]
        for var, value in (("bundle", W.zst), ("out", os.path.join(self.tmp, "published.tar.zst"))):
            script, k = re.subn(r"^%s=\S+" % var, "%s='%s'" % (var, value), script, count=1, flags=re.M)
            self.assertEqual(k, 1, var)
        cwd = tempfile.mkdtemp(dir=self.tmp)
        r = run(["/bin/sh", "-c", "set -eu\n" + script], cwd=cwd,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": "/nonexistent"})
        self.assertEqual(r.rc, 0, r)
        out = os.path.join(self.tmp, "published.tar.zst")
        r, j = self.verify(out, rc=EXIT_OK)
        self.assertIn("claims a publication", self.ok_detail(j, "anchor"))
        got = json.loads(bundle_dict(out)["anchor.json"])
        self.assertIsNotNone(got["published"]["transaction"])
        # Every other member is unchanged, in the same order.
        self.assertEqual([(n, d) for n, d in read_bundle_pairs(out) if n != "anchor.json"],
                         [(n, d) for n, d in W.members if n != "anchor.json"])
        self.assertEqual([n for n, _ in read_bundle_pairs(out)], [n for n, _ in W.members])

    # ------------------------------------------------------- exit codes --

    def test_exit_codes(self):
        """0 verified; 1 a check failed; 2 bad usage; 3 nothing could be checked
        (docs/formats/bundle.md, "Refusals and exit status"), text and --json alike."""
        not_a_file = os.path.join(self.tmp, "a-file")
        with open(not_a_file, "wb") as f:
            f.write(b"x")
        junk = os.path.join(self.tmp, "junk.tar.zst")
        with open(junk, "wb") as f:
            f.write(os.urandom(4096))
        flipped = self.write("e.tar.zst", [(n, flip(d) if n == "events.jsonl" else d) for n, d in W.members])
        cases = [
            ("verified", [W.zst], EXIT_OK, None),
            ("verified, every option", ["--data", W.data, "--checkpoints", W.ckpt, "--root", W.status["root"],
                                        "--previous", W.old, W.zst], EXIT_OK, None),
            ("a check failed", [flipped], EXIT_VERIFY, None),
            ("a hostile archive", [self.write("h.tar.zst", [("../x", b"x")] + W.members)], EXIT_VERIFY, None),
            ("no bundle", [], EXIT_USAGE, r"name one bundle"),
            ("two bundles", [W.zst, W.gz], EXIT_USAGE, r"name one bundle"),
            ("an unknown option", ["--frobnicate", W.zst], EXIT_USAGE, r""),
            ("--root not hex", ["--root", "nope", W.zst], EXIT_USAGE, r"--root takes"),
            ("the bundle missing", [os.path.join(self.tmp, "nope.tar.zst")], EXIT_ENV, r"nope\.tar\.zst"),
            ("the bundle a folder", [self.tmp], EXIT_ENV, r""),
            ("the bundle random bytes", [junk], EXIT_ENV, r"junk\.tar\.zst"),
            ("--key missing", ["--key", os.path.join(self.tmp, "nope.pub"), W.zst], EXIT_ENV, r"--key: "),
            ("--key not a key", ["--key", not_a_file, W.zst], EXIT_ENV, r"--key: "),
            ("--data missing", ["--data", os.path.join(self.tmp, "nope"), W.zst], EXIT_ENV, r"--data "),
            ("--data a file", ["--data", not_a_file, W.zst], EXIT_ENV, r"--data .*not a folder"),
            ("--checkpoints missing", ["--checkpoints", os.path.join(self.tmp, "nope"), W.zst], EXIT_ENV,
             r"--checkpoints "),
            ("--previous missing", ["--previous", os.path.join(self.tmp, "nope"), W.zst], EXIT_ENV,
             r"--previous "),
            ("--previous random bytes", ["--previous", junk, W.zst], EXIT_ENV, r"--previous "),
        ]
        for what, argv, rc, err in cases:
            for json_out in (True, False):
                with self.subTest(what, json=json_out):
                    r = run([crtest.CLEANROOM, "verify"] + (["--json"] if json_out else []) + argv,
                            cwd=tempfile.mkdtemp(dir=self.tmp))
                    self.assertNotRegex(r.err, SANITIZER, r)
                    self.assertEqual(r.rc, rc, r)
                    if rc in (EXIT_USAGE, EXIT_ENV):
                        self.assertEqual(r.out, "", r)
                        self.assertRegex(r.err, r"(^|\n)cleanroom verify: .*" + err, r)
                    elif json_out:
                        self.assertEqual(r.json()["ok"], rc == EXIT_OK)
                    else:
                        self.assertRegex(r.out, r": %s: \d+ checks" % ("VERIFIED" if rc == EXIT_OK else "FAILED"))
        # --help says the same.
        r = run([crtest.CLEANROOM, "verify", "--help"])
        self.assertEqual(r.rc, EXIT_OK)
        for code in ("0  every check passed", "1  a check failed", "2  bad usage", "3  nothing was checked"):
            self.assertIn(code, r.out)

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
            # (what, bytes, exit status): 3 when no member can be read at all,
            # 1 (a failed check) once the first member's header was read.
            ("empty file", b"", EXIT_ENV),
            ("random bytes", rnd, EXIT_ENV),
            ("text", b"hello, auditor\n" * 100, EXIT_ENV),
            ("zstd of random bytes", compress(rnd), EXIT_ENV),
            ("gzip of random bytes", compress(rnd, "gzip"), EXIT_ENV),
            ("gzip magic, then garbage", b"\x1f\x8b\x08\x00" + rnd, EXIT_ENV),
            ("zstd magic, then garbage", crtest.ZSTD_MAGIC + rnd, EXIT_ENV),
            ("the first 100 bytes of a zstd bundle", zst[:100], EXIT_ENV),
            ("a bad first header checksum", compress(tar[:148] + b"9" + tar[149:]), EXIT_ENV),
            # A cut compressed stream: 3 when the decompressor yields nothing
            # before the cut (a small bundle is one zstd block), else 1.
            ("zstd cut in half", zst[:len(zst) // 2], (EXIT_VERIFY, EXIT_ENV)),
            ("gzip cut in half", gz[:len(gz) // 2], (EXIT_VERIFY, EXIT_ENV)),
            ("zstd cut before its end", zst[:-8], (EXIT_VERIFY, EXIT_ENV)),
            ("tar cut inside events, compressed", compress(tar[:len(tar) - 3000]), EXIT_VERIFY),
            ("tar cut inside a header, compressed", compress(tar[:512 * 3 + 100]), EXIT_VERIFY),
            ("tar cut after the first header", compress(tar[:512 + 10]), EXIT_VERIFY),
            ("tar of no member", compress(b"\0" * 1024), EXIT_VERIFY),
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
        # events.jsonl is the last member: the events stream through every
        # check once, with the proofs read alongside. Anything after it is refused.
        moved = W.members[-1:] + W.members[:-1]
        self.hostile("moved.tar.zst", moved, detail=r"^VERSION: after events\.jsonl \(events\.jsonl is the "
                                                      r"last member\)$")
        for name in ("proofs/checkpoints.jsonl", "proofs/consistency.jsonl", "anchor.json"):
            with self.subTest(after=name):
                moved = [(n, d) for n, d in W.members if n != name] + [(name, W.m[name])]
                self.hostile("moved.tar.zst", moved, detail=r"^%s: after events\.jsonl" % re.escape(name))

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
