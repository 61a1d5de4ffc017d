#!/usr/bin/python3
"""docs/verify-by-hand.md, run as written.

The steps are taken from the document itself: every fenced block whose info
string is `sh verify-by-hand` (shell commands) or `python verify-by-hand
FILE` (a script the reader saves as FILE), in order. The Python blocks
become here-documents writing FILE at their place in the sequence, the
shell blocks are run as they are, all as one POSIX sh script (the `set -eu`
the document starts with stops it at the first failing step) in a fresh
empty folder, with only the bundle's path, the public key's path and the
key name substituted in the first block. PATH is /usr/bin:/bin, so
`python3` is the system one (with python3-cryptography, from
scripts/setup.sh).

A fresh bundle (a store with added files, sealed, then a recorded run
writing three checkpoints, one path twice) must pass every step; tampered
bundles must be stopped at the step that is meant to catch them -- above
all, events rewritten by a forger who also fixes the manifest are caught by
the root comparison, after the seal's signature has verified, and earlier
seals signed by another key, or naming a root the events do not give, are
caught by seals.py.

Run standalone: /usr/bin/python3 tests/integration/test_verify_by_hand.py
(CLEANROOM=path/to/cleanroom to test another binary).
"""
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402
from crtest import EXIT_OK, Store, canonical, cleanroom, fix_manifest, read_bundle, write_bundle  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(os.environ.get("CR_SOURCE_DIR", os.path.join(HERE, "..", "..")),
                   "docs", "verify-by-hand.md")
BLOCK = re.compile(r"^```(sh|python) verify-by-hand(?: +(\S+))?\n(.*?)^```\s*$", re.M | re.S)
EOF_MARK = "CR_VERIFY_BY_HAND_EOF"
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": "/nonexistent"}

RUN_CODE = r"""
import os, sys, time
d = open(sys.argv[1], "rb").read()
os.makedirs("a", exist_ok=True)
os.makedirs("b", exist_ok=True)
open("a/x.pt", "wb").write(d + b"1")
open("b/y.pt", "wb").write(d + b"2")
time.sleep(0.2)
open("a/x.pt", "wb").write(d + b"3")
"""


def doc_blocks():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    return [(m.group(1), m.group(2), m.group(3)) for m in BLOCK.finditer(text)]


def doc_script(bundle, key, name):
    """The document's steps as one sh script, paths substituted."""
    out = []
    for n, (lang, fname, body) in enumerate(doc_blocks()):
        if n == 0:
            for var, value in (("bundle", bundle), ("key", key), ("name", name)):
                body, k = re.subn(r"^%s=\S+" % var, lambda _m: "%s='%s'" % (var, value), body,
                                  count=1, flags=re.M)
                assert k == 1, "the first block sets no %s=" % var
        if lang == "python":
            assert fname and EOF_MARK not in body
            out.append("cat > %s <<'%s'\n%s%s\n" % (fname, EOF_MARK, body, EOF_MARK))
        else:
            out.append(body)
    return "".join(out)


class VerifyByHandTest(crtest.TestCase):
    @classmethod
    def setUpClass(cls):
        crtest.CLEANROOM = os.path.abspath(crtest.CLEANROOM)
        super().setUpClass()
        r = subprocess.run(["/usr/bin/python3", "-c", "import cryptography"], capture_output=True)
        if r.returncode != 0:
            # Fail, not skip: the document needs it (scripts/setup.sh installs it).
            raise RuntimeError("python3-cryptography is missing: run scripts/setup.sh")
        cls.root = os.path.realpath(tempfile.mkdtemp(prefix="cr-it-byhand-"))
        try:
            cls.build()
        except BaseException:
            shutil.rmtree(cls.root, True)
            raise

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, True)

    @classmethod
    def build(cls):
        data = os.path.join(cls.root, "data")
        crtest.make_files(data, 5, tag="d")
        work = os.path.join(cls.root, "work")
        os.makedirs(work)
        s = Store(os.path.join(cls.root, "store"))
        assert s.init().rc == 0
        s.add(data)
        assert cleanroom("keygen", "--out", s.path).rc == 0
        # An earlier seal: the bundle carries it, with a consistency proof.
        r = cleanroom("seal", "--store", s.path, "--key", os.path.join(s.path, "cleanroom.key"))
        assert r.rc == 0, r
        cls.early_size = s.status()["tree_size"]
        s.cr("record", "--data", data, "--", "/usr/bin/python3", "-c", RUN_CODE,
             os.path.join(data, "d000000.bin"), cwd=work)
        cls.store, cls.data = s, data
        cls.pub = os.path.join(s.path, "cleanroom.pub")
        cls.zst = os.path.join(cls.root, "cleanroom-bundle.tar.zst")
        cls.gz = os.path.join(cls.root, "cleanroom-bundle.tar.gz")
        for out in (cls.zst, cls.gz):
            r = cleanroom("bundle", "--store", s.path, "-o", out)
            assert r.rc == 0, r
        cls.members = [(m.name, d) for m, d in read_bundle(cls.zst)]
        # A second key, for a seal by someone else.
        cls.k2 = os.path.join(cls.root, "k2")
        assert cleanroom("keygen", "--out", cls.k2).rc == 0

    def by_hand(self, bundle, key=None, name="cleanroom"):
        script = doc_script(bundle, key or self.pub, name)
        cwd = tempfile.mkdtemp(dir=self.tmp, prefix="audit-")
        p = subprocess.run(["/bin/sh", "-c", script], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=300)
        out = p.stdout.decode("utf-8", "replace")
        # Everything stays in the fresh folder.
        self.assertEqual(os.listdir(cwd), ["bundle-check"], out)
        return p.returncode, out

    def forged(self, name, data):
        return fix_manifest([(n, data if n == name else d) for n, d in self.members])

    def write(self, fname, members):
        path = os.path.join(self.tmp, fname)
        write_bundle(path, members)
        return path

    def sign_note(self, text, key_dir, name="cleanroom"):
        """A C2SP signed note of text, signed with the key in key_dir (openssl)."""
        msg, sig = os.path.join(self.tmp, "note-text"), os.path.join(self.tmp, "note-sig")
        with open(msg, "wb") as f:
            f.write(text)
        r = crtest.run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey",
                        os.path.join(key_dir, "cleanroom.key"), "-in", msg, "-out", sig])
        self.assertEqual(r.rc, 0, r)
        der = crtest.run(["openssl", "pkey", "-pubin", "-in", os.path.join(key_dir, "cleanroom.pub"),
                          "-outform", "DER"]).outb
        key_id = hashlib.sha256(name.encode() + b"\n\x01" + der[-32:]).digest()[:4]
        with open(sig, "rb") as f:
            blob = base64.b64encode(key_id + f.read())
        return text + b"\n\xe2\x80\x94 " + name.encode() + b" " + blob + b"\n"

    def consistency_forged(self, change):
        """The bundle with its one consistency line changed by change(dict), manifest fixed."""
        line = json.loads(dict(self.members)["proofs/consistency.jsonl"])
        change(line)
        return self.write("cons.tar.zst", self.forged("proofs/consistency.jsonl", canonical(line) + b"\n"))

    # -------------------------------------------------------------------------

    def test_document_has_the_steps(self):
        blocks = doc_blocks()
        self.assertGreaterEqual(len(blocks), 8)
        self.assertEqual(blocks[0][0], "sh")
        files = [f for lang, f, _ in blocks if lang == "python"]
        self.assertEqual(files, ["root.py", "seals.py", "attestation.py"])
        script = doc_script("/b", "/k", "n")
        for tool in ("tar -t", "sha256sum", "openssl pkeyutl -verify -pubin -inkey",
                     "-rawin -in text -sigfile sig", "python3 root.py", "python3 seals.py",
                     "python3 attestation.py"):
            self.assertIn(tool, script)
        # root.py: standard library only.
        root_py = [b for lang, f, b in blocks if f == "root.py"][0]
        self.assertEqual(sorted(re.findall(r"^import (\w+)", root_py, re.M)), ["base64", "hashlib", "sys"])
        self.assertNotIn("from ", root_py)
        self.assertLessEqual(len([x for x in root_py.splitlines() if x.strip()]), 45)

    def test_fresh_bundle_passes(self):
        for bundle in (self.zst, self.gz):
            with self.subTest(bundle=os.path.basename(bundle)):
                rc, out = self.by_hand(bundle)
                self.assertEqual(rc, 0, out)
                for line in ("Signature Verified Successfully",
                             "OK: the seal is signed by cleanroom, and the bundle carries that key",
                             "OK: the events give the sealed root",
                             "OK: 1 earlier seals, signed by cleanroom, seal prefixes of these events",
                             "OK: the DSSE signature verifies",
                             "OK: 3 subjects, exactly the checkpoint events",
                             "OK: anchor.json commits to this seal"):
                    self.assertIn(line, out)
                self.assertRegex(out, r"  a/x\.pt@\d+\n")
                with open(os.path.join(self.store.path, "seals", "%016d.note" % self.early_size), "rb") as f:
                    self.assertIn("  size %d  root " % self.early_size, out)
                    self.assertIn(" commitment %s\n" % hashlib.sha256(f.read()).hexdigest(), out)
                self.assertRegex(out, r": OK\n")  # sha256sum -c
        # The binary agrees.
        r = cleanroom("verify", "--key", self.pub, self.zst)
        self.assertEqual(r.rc, EXIT_OK, r)

    def test_forged_events_fail_the_root_comparison(self):
        events = dict(self.members)["events.jsonl"]
        lines = events[:-1].split(b"\n")
        ev = json.loads(lines[1])
        ev["size"] = ev["size"] + 1
        cases = {
            "edited": lines[:1] + [canonical(ev)] + lines[2:],
            "dropped": lines[:-1],
            "swapped": [lines[1], lines[0]] + lines[2:],
            "appended": lines + [lines[0]],
        }
        for what, new in cases.items():
            with self.subTest(what):
                bad = self.write("forged.tar.zst",
                                 self.forged("events.jsonl", b"".join(x + b"\n" for x in new)))
                rc, out = self.by_hand(bad)
                self.assertNotEqual(rc, 0, out)
                # Got past the manifest and the signature, stopped by the root.
                self.assertIn("Signature Verified Successfully", out)
                self.assertIn("MISMATCH: the events do not give the sealed root and size", out)
                self.assertNotIn("OK: the events give the sealed root", out)
                self.assertNotIn("OK: the DSSE signature verifies", out)
                self.assertEqual(cleanroom("verify", "--key", self.pub, bad).rc, crtest.EXIT_VERIFY)

    def test_other_tampering_is_caught_at_its_step(self):
        m = dict(self.members)
        # Naive: the manifest catches it.
        naive = [(n, d[:-2] + b"X\n" if n == "events.jsonl" else d) for n, d in self.members]
        rc, out = self.by_hand(self.write("naive.tar.zst", naive))
        self.assertNotEqual(rc, 0)
        self.assertIn("events.jsonl: FAILED", out)
        self.assertNotIn("Signature Verified", out)
        # A member that is not a regular file: stopped before extracting.
        import tarfile
        link = tarfile.TarInfo("evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        rc, out = self.by_hand(self.write("link.tar.zst", [(link, b"")] + self.members))
        self.assertNotEqual(rc, 0)
        self.assertIn("not a regular file: l", out)
        # An unknown member, and a duplicate.
        rc, out = self.by_hand(self.write("unknown.tar.zst", self.members + [("evil.sh", b"x")]))
        self.assertIn("unexpected member names", out)
        self.assertNotEqual(rc, 0)
        rc, out = self.by_hand(self.write("dup.tar.zst", self.members[:1] + self.members))
        self.assertIn("members that appear twice", out)
        self.assertNotEqual(rc, 0)
        # The seal checked with another key: openssl refuses it.
        rc, out = self.by_hand(self.zst, key=os.path.join(self.k2, "cleanroom.pub"))
        self.assertNotEqual(rc, 0)
        self.assertIn("Signature Verification Failure", out)
        # A forged seal text (size changed, manifest fixed): the signature fails.
        note = m["seal.note"].split(b"\n")
        note[1] = str(int(note[1]) - 1).encode()
        rc, out = self.by_hand(self.write("seal.tar.zst", self.forged("seal.note", b"\n".join(note))))
        self.assertNotEqual(rc, 0)
        self.assertIn("Signature Verification Failure", out)
        # The attestation's subject changed: its signature fails.
        env = json.loads(m["attestation.dsse.json"])
        stmt = json.loads(base64.b64decode(env["payload"]))
        stmt["subject"] = stmt["subject"][1:]
        env["payload"] = base64.b64encode(canonical(stmt)).decode()
        rc, out = self.by_hand(self.write("att.tar.zst", self.forged("attestation.dsse.json",
                                                                     canonical(env))))
        self.assertNotEqual(rc, 0)
        self.assertIn("OK: the events give the sealed root", out)
        self.assertIn("MISMATCH: the DSSE signature does not verify", out)
        # Earlier seals: signed by another key; naming another size or root than
        # the line's; signed by this key but with a root the events do not give.
        line = json.loads(m["proofs/consistency.jsonl"])
        text = line["seal"].encode().split(b"\n\n")[0] + b"\n"
        other = self.sign_note(text, self.k2)
        rc, out = self.by_hand(self.consistency_forged(lambda p: p.update(seal=other.decode())))
        self.assertNotEqual(rc, 0)
        self.assertIn("OK: the events give the sealed root", out)
        self.assertIn("MISMATCH: the seal at size %d is not signed by cleanroom" % self.early_size, out)
        rc, out = self.by_hand(self.consistency_forged(lambda p: p.update(old_root="00" * 32)))
        self.assertNotEqual(rc, 0)
        self.assertIn("names another log, size or root", out)
        origin, size, _ = text.decode().split("\n")[:3]
        wrong = "%s\n%s\n%s\n" % (origin, size, base64.b64encode(b"\x07" * 32).decode())
        rewritten = self.sign_note(wrong.encode(), os.path.dirname(self.pub))
        rc, out = self.by_hand(self.consistency_forged(
            lambda p: p.update(seal=rewritten.decode(), old_root="07" * 32)))
        self.assertNotEqual(rc, 0)
        self.assertIn("MISMATCH: the first %d events do not give the root sealed at that size"
                      % self.early_size, out)
        self.assertNotIn("OK: the DSSE signature verifies", out)
        # The binary catches each too.
        for bad in (self.consistency_forged(lambda p: p.update(seal=other.decode())),
                    self.consistency_forged(lambda p: p.update(seal=rewritten.decode(), old_root="07" * 32))):
            self.assertEqual(cleanroom("verify", "--key", self.pub, bad).rc, crtest.EXIT_VERIFY)
        # anchor.json of another seal.
        anchor = json.loads(m["anchor.json"])
        anchor["commitment"] = "00" * 32
        rc, out = self.by_hand(self.write("anchor.tar.zst", self.forged("anchor.json", canonical(anchor))))
        self.assertNotEqual(rc, 0)
        self.assertIn("OK: 3 subjects", out)
        self.assertNotIn("OK: anchor.json", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
