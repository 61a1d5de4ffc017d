#!/usr/bin/python3
"""cleanroom keygen and seal end to end, checked the way an auditor would.

The seal's body is compared with `cleanroom status --json`; its key id is
recomputed with hashlib; its Ed25519 signature is checked with the openssl
CLI (`openssl pkeyutl -verify -rawin`) over the exact signed bytes, exactly
as docs/formats/seal.md tells auditors to do by hand.

Run standalone: /usr/bin/python3 tests/integration/test_seal.py
(CLEANROOM=path/to/cleanroom to test another binary).
"""
import base64
import hashlib
import os
import re
import stat
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402
from crtest import EXIT_ENV, EXIT_OK, EXIT_USAGE, cleanroom, make_files, run  # noqa: E402

DASH = "\u2014 "  # em dash and space: how every signature line starts
# DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the raw key follows.
SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def pem_body(path):
    with open(path) as f:
        lines = f.read().strip().splitlines()
    return base64.b64decode("".join(lines[1:-1]))


def key_id(name, pub):
    return hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4]


def split_note(note):
    """(signed text, [(name, key id bytes, signature bytes)]) of a signed note."""
    assert note.endswith(b"\n"), note
    i = note.rindex(b"\n\n")
    text, sigs = note[:i + 1], note[i + 2:]
    out = []
    for line in sigs[:-1].split(b"\n"):
        line = line.decode()
        assert line.startswith(DASH), line
        name, b64 = line[len(DASH):].split(" ")
        blob = base64.b64decode(b64, validate=True)
        out.append((name, blob[:4], blob[4:]))
    return text, out


class SealTest(crtest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        os.umask(0o022)  # the modes below assume it; the CLI inherits it

    def setUp(self):
        super().setUp()
        self.s = self.new_store()
        self.key = os.path.join(self.s.path, "cleanroom.key")
        self.pub = os.path.join(self.s.path, "cleanroom.pub")
        self.vkey = os.path.join(self.s.path, "cleanroom.vkey")

    def keygen(self, *args, rc=EXIT_OK):
        r = cleanroom("keygen", "--out", self.s.path, *args)
        self.assertEqual(r.rc, rc, r)
        return r

    def add(self, n, tag):
        self.s.add(*make_files(os.path.join(self.tmp, "data-" + tag), n, tag=tag).keys())

    def seal(self, *args, rc=EXIT_OK):
        r = cleanroom("seal", "--store", self.s.path, *args)
        self.assertEqual(r.rc, rc, r)
        return r

    def openssl_verify(self, text, sig, pub=None):
        """The auditor's by-hand check; True when openssl says the signature verifies."""
        tf, sf = os.path.join(self.tmp, "text"), os.path.join(self.tmp, "sig")
        with open(tf, "wb") as f:
            f.write(text)
        with open(sf, "wb") as f:
            f.write(sig)
        r = run(["openssl", "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", pub or self.pub,
                 "-sigfile", sf, "-in", tf])
        ok = r.rc == 0 and "Signature Verified Successfully" in r.out
        if not ok:
            self.assertIn("Signature Verification Failure", r.out + r.err, r)
        return ok

    # ---------------------------------------------------------------- keygen --

    def test_keygen_files_and_modes(self):
        r = self.keygen("--json")
        j = r.json()
        self.assertEqual(mode(self.key), 0o600)
        self.assertEqual(mode(self.pub), 0o644)
        self.assertEqual(mode(self.vkey), 0o644)
        self.assertEqual(j["private_key"], self.key)
        self.assertEqual(j["public_key"], self.pub)
        self.assertEqual(j["vkey_path"], self.vkey)
        self.assertEqual(j["key_name"], "cleanroom")
        with open(self.key) as f:
            self.assertTrue(f.read().startswith("-----BEGIN PRIVATE KEY-----\n"))  # PKCS#8
        # The .vkey: name+id+base64(0x01 || key), the key being the .pub's.
        with open(self.vkey) as f:
            vkey = f.read()
        self.assertEqual(vkey, j["vkey"] + "\n")
        name, kid, b64 = vkey.strip().split("+", 2)
        raw = base64.b64decode(b64)
        spki = pem_body(self.pub)
        self.assertEqual((name, len(raw), raw[0]), ("cleanroom", 33, 1))
        self.assertEqual(spki, SPKI_ED25519 + raw[1:])
        self.assertEqual(kid, key_id(name, raw[1:]).hex())
        self.assertEqual(j["key_id"], kid)
        # openssl reads both PEM files as one Ed25519 key pair.
        a = run(["openssl", "pkey", "-in", self.key, "-pubout"])
        self.assertEqual(a.rc, 0, a)
        with open(self.pub) as f:
            self.assertEqual(a.out, f.read())

    def test_keygen_refuses_overwrite_and_force_replaces(self):
        self.keygen()
        with open(self.key, "rb") as f:
            old = f.read()
        r = self.keygen(rc=EXIT_ENV)
        self.assertIn(self.key, r.err)
        self.assertIn("--force", r.err)
        with open(self.key, "rb") as f:
            self.assertEqual(f.read(), old, "refused keygen touched the key")
        r = self.keygen("--force", "--name", "example.org/studio")
        with open(self.key, "rb") as f:
            self.assertNotEqual(f.read(), old)
        self.assertEqual((mode(self.key), mode(self.pub), mode(self.vkey)), (0o600, 0o644, 0o644))
        with open(self.vkey) as f:
            self.assertTrue(f.read().startswith("example.org/studio+"))

    def test_keygen_default_folder_and_bad_name(self):
        r = run([crtest.CLEANROOM, "keygen"], cwd=self.tmp)
        self.assertEqual(r.rc, EXIT_OK, r)
        d = os.path.join(self.tmp, ".cleanroom")
        self.assertEqual(mode(d), 0o700)
        self.assertEqual(mode(os.path.join(d, "cleanroom.key")), 0o600)
        for bad in ("two words", "a+b", ""):
            r = cleanroom("keygen", "--out", os.path.join(self.tmp, "k2"), "--name", bad)
            self.assertEqual(r.rc, EXIT_USAGE, r)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "k2")))

    # ------------------------------------------------------------------ seal --

    def test_seal_matches_status_and_verifies_with_openssl(self):
        self.keygen()
        self.add(5, "a")
        st = self.s.status()
        r = self.seal("--key", self.key)
        note = r.outb
        with open(os.path.join(self.s.path, "origin")) as f:
            origin = f.read()
        self.assertRegex(origin, r"^cleanroom\.local/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-"
                                 r"[89ab][0-9a-f]{3}-[0-9a-f]{12}\n$")
        text, sigs = split_note(note)
        self.assertEqual(text.decode().split("\n"),
                         [origin.strip(), str(st["tree_size"]),
                          base64.b64encode(bytes.fromhex(st["root"])).decode(), ""])
        self.assertEqual(len(sigs), 1)
        name, kid, sig = sigs[0]
        self.assertEqual(name, "cleanroom")
        self.assertEqual(kid, key_id(name, pem_body(self.pub)[len(SPKI_ED25519):]))
        self.assertEqual(len(sig), 64)
        self.assertTrue(self.openssl_verify(text, sig))
        # Any change to the text or the signature, and openssl says no.
        self.assertFalse(self.openssl_verify(text.replace(b"\n" + str(st["tree_size"]).encode(),
                                                          b"\n" + str(st["tree_size"] + 1).encode()),
                                             sig))
        self.assertFalse(self.openssl_verify(text, bytes([sig[0] ^ 1]) + sig[1:]))
        # Kept in the store, 0644, byte for byte what was printed.
        path = os.path.join(self.s.path, "seals", "%016d.note" % st["tree_size"])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), note)
        self.assertEqual(mode(path), 0o644)
        self.assertEqual(mode(os.path.join(self.s.path, "origin")), 0o644)
        # Sealing leaves the log as it was.
        rc, j, out = self.s.check()
        self.assertEqual(rc, EXIT_OK, out)

    def test_seal_again_after_more_events(self):
        self.keygen()
        self.add(3, "a")
        first = self.seal().outb
        size1 = self.s.status()["tree_size"]
        self.add(4, "b")
        st = self.s.status()
        self.assertGreater(st["tree_size"], size1)
        j = self.seal("--json").json()
        self.assertEqual(j["tree_size"], st["tree_size"])
        seals = sorted(os.listdir(os.path.join(self.s.path, "seals")))
        self.assertEqual(seals, ["%016d.note" % size1, "%016d.note" % st["tree_size"]])
        with open(os.path.join(self.s.path, "seals", seals[0]), "rb") as f:
            self.assertEqual(f.read(), first, "the earlier seal was changed")
        # Same origin both times.
        self.assertEqual(split_note(first)[0].split(b"\n")[0].decode(), j["origin"])
        # Sealing twice at one size gives the same bytes (Ed25519 is deterministic).
        self.assertEqual(self.seal().outb.decode(), j["note"])

    def test_seal_json(self):
        r = self.keygen("--json")
        vkey = r.json()["vkey"]
        self.add(2, "a")
        st = self.s.status()
        j = self.seal("--json", "--store", self.s.path, "--key", self.key).json()
        self.assertEqual(set(j), {"origin", "tree_size", "root", "key_name", "key_id", "vkey",
                                  "note", "path"})
        self.assertEqual(j["tree_size"], st["tree_size"])
        self.assertEqual(j["root"], st["root"])
        self.assertEqual((j["key_name"], j["vkey"]), ("cleanroom", vkey))
        self.assertEqual(j["key_id"], vkey.split("+")[1])
        self.assertEqual(j["path"], os.path.join(self.s.path, "seals", "%016d.note" % st["tree_size"]))
        with open(j["path"]) as f:
            self.assertEqual(f.read(), j["note"])
        text, sigs = split_note(j["note"].encode())
        self.assertEqual(text.decode(), "%s\n%d\n%s\n" % (
            j["origin"], j["tree_size"], base64.b64encode(bytes.fromhex(j["root"])).decode()))
        self.assertEqual(sigs[0][1].hex(), j["key_id"])
        self.assertTrue(self.openssl_verify(text, sigs[0][2]))

    def test_key_name_from_vkey_or_option(self):
        self.keygen("--name", "example.org/studio")
        self.add(2, "a")
        first = self.seal().outb
        _, sigs = split_note(first)
        self.assertEqual(sigs[0][0], "example.org/studio")
        # One seal per tree size: another name at the same size is refused, the first stands.
        r = self.seal("--name", "other.example/x", rc=EXIT_ENV)
        path = os.path.join(self.s.path, "seals", "%016d.note" % self.s.status()["tree_size"])
        self.assertIn(path, r.err)
        self.assertEqual(r.out, "")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), first)
        self.add(1, "b")
        _, sigs = split_note(self.seal("--name", "other.example/x").outb)
        self.assertEqual(sigs[0][0], "other.example/x")
        pub = pem_body(self.pub)[len(SPKI_ED25519):]
        self.assertEqual(sigs[0][1], key_id("other.example/x", pub))
        # No .vkey beside the key and no --name: say so.
        os.rename(self.vkey, self.vkey + ".away")
        r = self.seal(rc=EXIT_ENV)
        self.assertIn(self.vkey, r.err)
        self.assertIn("--name", r.err)
        self.assertEqual(r.out, "")
        # A .vkey of another key is not silently used.
        with open(self.vkey, "w") as f:
            f.write("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n")
        r = self.seal(rc=EXIT_ENV)
        self.assertIn("another key", r.err)
        self.seal("--name", "bad name", rc=EXIT_USAGE)

    def test_readable_key_refused(self):
        self.keygen()
        self.add(2, "a")
        for m in (0o644, 0o640, 0o604):
            os.chmod(self.key, m)
            r = self.seal("--store", self.s.path, "--key", self.key, rc=EXIT_ENV)
            self.assertIn(self.key, r.err)
            self.assertIn("chmod 600", r.err)
            self.assertEqual(r.out, "")
        self.assertFalse(os.path.exists(os.path.join(self.s.path, "seals")))
        os.chmod(self.key, 0o600)
        self.seal()

    def test_bad_key_paths(self):
        self.add(2, "a")
        missing = os.path.join(self.tmp, "nope.key")
        r = self.seal("--key", missing, rc=EXIT_ENV)
        self.assertIn(missing, r.err)
        # Default key: the store's cleanroom.key, named when missing.
        r = self.seal(rc=EXIT_ENV)
        self.assertIn(self.key, r.err)
        # Not a key at all, and a public key given as the private one.
        junk = os.path.join(self.tmp, "junk.key")
        with open(os.open(junk, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("hello\n")
        r = self.seal("--key", junk, rc=EXIT_ENV)
        self.assertIn(junk, r.err)
        self.keygen()
        pub_as_key = os.path.join(self.tmp, "pub.key")
        with open(self.pub) as src, open(os.open(pub_as_key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(src.read())
        r = self.seal("--key", pub_as_key, rc=EXIT_ENV)
        self.assertIn(pub_as_key, r.err)
        self.seal("--key", "", rc=EXIT_USAGE)

    def test_empty_store(self):
        self.keygen()
        r = self.seal(rc=EXIT_ENV)
        self.assertIn("empty", r.err)
        self.assertIn(self.s.path, r.err)
        self.assertEqual(r.out, "")
        self.assertFalse(os.path.exists(os.path.join(self.s.path, "origin")))
        self.assertFalse(os.path.exists(os.path.join(self.s.path, "seals")))

    def test_no_store(self):
        self.keygen()
        r = cleanroom("seal", "--store", os.path.join(self.tmp, "nostore"), "--key", self.key)
        self.assertEqual(r.rc, EXIT_ENV, r)

    def test_help(self):
        for cmd in ("keygen", "seal"):
            r = cleanroom(cmd, "--help")
            self.assertEqual(r.rc, EXIT_OK, r)
            self.assertIn("usage: cleanroom " + cmd, r.out)
            self.assertTrue(re.search(r"Exit status", r.out), r.out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
