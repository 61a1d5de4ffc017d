#!/usr/bin/python3
"""The cleanroom CLI end to end: init, add, status, log, prove, index rebuild.

Run standalone: /usr/bin/python3 tests/integration/test_cli.py
(CLEANROOM=path/to/cleanroom to test another binary).
"""
import base64
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402
from crtest import (EXIT_ENV, EXIT_OK, EXIT_USAGE, EXIT_VERIFY, all_roots, canonical,  # noqa: E402
                    cleanroom, consistency_proof, event_path, file_sha256, inclusion_path,
                    leaf_hash, make_files, mth, verify_consistency, verify_inclusion)

H = bytes.fromhex


class InitTest(crtest.TestCase):
    def test_init_creates_store(self):
        s = self.new_store(init=False)
        r = s.cr("init", "--json")
        self.assertEqual(r.json(), {"store": s.path, "created": True})
        self.assertTrue(os.path.isdir(s.git_dir))
        self.assertTrue(os.path.isfile(s.index_path))
        self.assertEqual(s.git("rev-parse", "--is-bare-repository").out.strip(), "true")
        self.assertIsNone(s.head(), "a new store has no branch yet")
        st = s.status()
        self.assertEqual(st["tree_size"], 0)
        self.assertEqual(st["root"], crtest.EMPTY_ROOT.hex())
        self.assertIsNone(st["head"])
        rc, j, text = s.check()
        self.assertEqual(rc, EXIT_OK, text)
        self.assertEqual((j["ok"], j["commits"], j["tree_size"], j["problems"]), (True, 0, 0, []))

    def test_init_twice_fails_clearly(self):
        s = self.new_store()
        before = s.dump_derived()
        r = s.cr("init", rc=None)
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn("already holds a store", r.err)
        self.assertIn(s.path, r.err)
        self.assertEqual(r.out, "")
        self.assertEqual(s.dump_derived(), before)

    def test_json_output_with_non_utf8_store_path(self):
        path = os.path.join(self.tmp.encode(), b"st\xffore")
        r = crtest.run([crtest.CLEANROOM, "init", "--json", "--store", path])
        self.assertEqual(r.rc, EXIT_OK, r)
        self.assertTrue(os.path.isdir(os.path.join(path, b"log.git")))
        self.assertTrue(r.out.strip(), "init --json printed nothing")
        r = crtest.run([crtest.CLEANROOM, "status", "--json", "--store", path])
        self.assertEqual(r.rc, EXIT_OK, r)
        self.assertTrue(r.out.strip(), "status --json printed nothing")
        self.assertEqual(r.json()["tree_size"], 0)

    def test_default_store_from_env(self):
        path = os.path.join(self.tmp, "envstore")
        r = crtest.run([crtest.CLEANROOM, "init"], env={"CLEANROOM_STORE": path})
        self.assertEqual(r.rc, 0, r)
        self.assertTrue(os.path.isdir(os.path.join(path, "log.git")))
        # ... and ./.cleanroom without either.
        r = crtest.run([crtest.CLEANROOM, "init"], cwd=self.tmp)
        self.assertEqual(r.rc, 0, r)
        self.assertTrue(os.path.isdir(os.path.join(self.tmp, ".cleanroom", "log.git")))


class AddTest(crtest.TestCase):
    def setUp(self):
        super().setUp()
        self.s = self.new_store()
        self.data = os.path.join(self.tmp, "data")
        self.files = make_files(self.data, 6, tag="a")
        self.files.update(make_files(os.path.join(self.data, "sub", "deeper"), 3, tag="b"))
        # A file name that is not UTF-8: recorded losslessly as path_b64.
        self.bad = os.path.join(self.data.encode(), b"caf\xe9-\xff.bin")
        with open(self.bad, "wb") as f:
            f.write(b"latin-1 name\n")
        # Symbolic links inside folders are skipped and listed.
        self.link_file = os.path.join(self.data, "link-to-file")
        self.link_dir = os.path.join(self.data, "link-to-dir")
        os.symlink(os.path.join(self.data, "a000000.bin"), self.link_file)
        os.symlink(os.path.join(self.data, "sub"), self.link_dir)
        self.n = len(self.files) + 1
        crtest.settle()

    def all_paths(self):
        return sorted([p.encode() for p in self.files] + [self.bad])

    def test_add_folder(self):
        j = self.s.add(self.data)
        self.assertEqual(j["files"], self.n)
        self.assertEqual(j["recorded"], self.n)
        self.assertEqual(j["hashed_files"], self.n)
        self.assertEqual(j["cached_files"], 0)
        self.assertEqual(j["unchanged"], 0)
        self.assertEqual(j["failed"], 0)
        self.assertEqual(j["skipped"], 2)
        self.assertEqual(j["tree_size"], self.n)
        self.assertEqual(j["bytes"], sum(len(v) for v in self.files.values()) + len(b"latin-1 name\n"))
        skipped = sorted(p["path"] for p in j["problems"])
        self.assertEqual(skipped, sorted([self.link_dir, self.link_file]))
        for p in j["problems"]:
            self.assertIn("symbolic link", p["problem"])

        events = self.s.events()
        self.assertEqual([e["index"] for e in events], list(range(self.n)))
        # Sorted path order, absolute paths, every byte of the odd name kept.
        self.assertEqual([event_path(e["event"]) for e in events], self.all_paths())
        for e in events:
            ev = e["event"]
            path = event_path(ev)
            self.assertEqual(ev["v"], 1)
            self.assertEqual(ev["type"], "input")
            self.assertEqual(ev["via"], "add")
            self.assertEqual(ev["sha256"], file_sha256(path))
            self.assertEqual(ev["size"], os.path.getsize(path))
            if path == self.bad:
                self.assertNotIn("path", ev)
                self.assertEqual(base64.b64decode(ev["path_b64"]), self.bad)
            else:
                self.assertNotIn("path_b64", ev)
        st = self.s.status()
        self.assertEqual(st["files"], self.n)
        self.assertEqual(st["events_by_type"], {"input": self.n})

    def test_add_json_lists_every_skipped_path(self):
        # A skipped entry whose name is not UTF-8 is still listed in --json
        # "problems" (skipped == number of problems listed).
        os.symlink(b"a000000.bin", os.path.join(self.data.encode(), b"link-\xff"))
        os.mkfifo(os.path.join(self.data, "fifo"))
        j = self.s.add(self.data)
        self.assertEqual(j["skipped"], 4)
        self.assertEqual(j["recorded"], self.n)
        self.assertEqual(len(j["problems"]), j["skipped"], j["problems"])

    def test_add_files_and_folders_together(self):
        one = os.path.join(self.data, "sub", "deeper", "b000001.bin")
        other = os.path.join(self.tmp, "single.txt")
        with open(other, "wb") as f:
            f.write(b"single\n")
        # A file named twice (directly and inside a named folder) is added once.
        j = self.s.add(one, os.path.join(self.data, "sub"), other)
        self.assertEqual(j["recorded"], 4)
        self.assertEqual(j["files"], 4)
        paths = [event_path(e["event"]) for e in self.s.events()]
        self.assertEqual(paths, sorted(paths))
        self.assertEqual(len(paths), 4)
        self.assertIn(other.encode(), paths)
        # A relative path is recorded absolute.
        r = crtest.run([crtest.CLEANROOM, "add", "--store", self.s.path, "--json",
                        os.path.relpath(self.bad, self.tmp.encode())], cwd=self.tmp)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.json()["recorded"], 1)
        self.assertEqual(event_path(self.s.events()[-1]["event"]), self.bad)

    def test_add_missing_path(self):
        missing = os.path.join(self.tmp, "no-such-file")
        r = self.s.cr("add", self.data, missing, rc=None)
        self.assertEqual(r.rc, EXIT_ENV, r)
        self.assertIn(missing, r.err)
        self.assertIn("No such file", r.err)
        # Nothing at all was recorded for the good path either.
        self.assertEqual(self.s.status()["tree_size"], 0)
        self.assertIsNone(self.s.head())

    def test_add_without_paths_is_usage_error(self):
        r = self.s.cr("add", rc=None)
        self.assertEqual(r.rc, EXIT_USAGE, r)
        self.assertIn("name at least one file or folder", r.err)
        for bad in (["--jobs", "0", self.data], ["--jobs", "x", self.data], ["--nope", self.data],
                    ["--nice", "20", self.data], ["--nice", "-1", self.data]):
            r = self.s.cr("add", *bad, rc=None)
            self.assertEqual(r.rc, EXIT_USAGE, (bad, r))
        self.assertEqual(self.s.status()["tree_size"], 0)

    def test_add_nice_changes_nothing_recorded(self):
        """--nice only orders the threads' turns: the same events but for their time."""
        other = crtest.Store(os.path.join(self.tmp, "other"))
        other.init()
        a = self.s.cr("add", "--json", "--nice", "0", self.data)
        b = other.cr("add", "--json", "--nice", "19", "--jobs", "2", self.data)
        ja, jb = json.loads(a.out), json.loads(b.out)
        self.assertEqual(ja["recorded"], jb["recorded"])
        self.assertGreater(ja["recorded"], 0)

        def files(store):
            return [json.dumps({k: v for k, v in e["event"].items() if k != "time"}, sort_keys=True)
                    for e in store.events()]
        self.assertEqual(files(self.s), files(other))

    def test_readd_unchanged_hashes_nothing(self):
        first = self.s.add(self.data)
        again = self.s.add(self.data)
        self.assertEqual(again["hashed_files"], 0)
        self.assertEqual(again["hashed_bytes"], 0)
        self.assertEqual(again["cached_files"], self.n)
        self.assertEqual(again["recorded"], 0)
        self.assertEqual(again["unchanged"], self.n)
        self.assertEqual((again["tree_size"], again["root"]), (first["tree_size"], first["root"]))
        self.assertEqual(len(self.s.commits()), 1, "an add that records nothing makes no commit")

    def test_change_one_file_records_only_it(self):
        first = self.s.add(self.data)
        changed = os.path.join(self.data, "sub", "deeper", "b000002.bin")
        with open(changed, "wb") as f:
            f.write(b"new content, new size\n")
        crtest.settle()
        j = self.s.add(self.data)
        self.assertEqual(j["recorded"], 1)
        self.assertEqual(j["hashed_files"], 1)
        self.assertEqual(j["cached_files"], self.n - 1)
        self.assertEqual(j["unchanged"], self.n - 1)
        self.assertEqual(j["tree_size"], first["tree_size"] + 1)
        last = self.s.events()[-1]
        self.assertEqual(last["index"], self.n)
        self.assertEqual(last["event"]["path"], changed)
        self.assertEqual(last["event"]["sha256"], file_sha256(changed))
        # Changing it back records the old content again at the same path:
        # it is already recorded (path + sha256), so it is unchanged.
        with open(changed, "wb") as f:
            f.write(self.files[changed])
        j = self.s.add(self.data)
        self.assertEqual((j["recorded"], j["hashed_files"], j["unchanged"]), (0, 1, self.n))

    def test_status_and_log(self):
        self.s.add(self.data)
        self.s.add(os.path.join(self.tmp, "data", "a000000.bin"))  # unchanged: no commit
        extra = make_files(os.path.join(self.tmp, "more"), 4, tag="m")
        self.s.add(os.path.join(self.tmp, "more"))
        n = self.n + 4

        leaves = self.s.leaves()
        hashes = [leaf_hash(x) for x in leaves]
        st = self.s.status()
        self.assertEqual(st["tree_size"], n)
        self.assertEqual(len(leaves), n)
        self.assertEqual(st["root"], mth(hashes).hex())
        self.assertEqual(st["events"], n)
        self.assertEqual(st["segments"], 2)
        self.assertEqual(st["head"], self.s.head())
        self.assertEqual(st["store"], self.s.path)
        self.assertEqual(st["file_bytes"], sum(len(v) for v in self.files.values()) +
                         len(b"latin-1 name\n") + sum(len(v) for v in extra.values()))
        # The head commit's message records the same size and root.
        t = self.s.trailers(self.s.head())
        self.assertEqual((int(t["Tree-Size"]), t["Root"]), (n, st["root"]))

        events = self.s.events()
        self.assertEqual(len(events), n)
        for i, (e, leaf) in enumerate(zip(events, leaves)):
            self.assertEqual(e["index"], i)
            self.assertEqual(e["leaf_hash"], leaf_hash(leaf).hex())
            self.assertEqual(e["event"], json.loads(leaf))
            self.assertEqual(canonical(e["event"]), leaf, "leaves are canonical JSON")
            self.assertIn("v", e["event"])
            self.assertIn("type", e["event"])
            self.assertEqual(e["event"]["sha256"], file_sha256(event_path(e["event"])))

        # --from / --limit select a window.
        win = self.s.cr("log", "--json", "--from", "3", "--limit", "4").json_lines()
        self.assertEqual([e["index"] for e in win], [3, 4, 5, 6])
        self.assertEqual(win, events[3:7])
        self.assertEqual(self.s.cr("log", "--json", "--from", str(n)).out, "")
        # Plain text: one line per event with index, type, path and sha256 prefix.
        lines = self.s.cr("log").out.splitlines()
        self.assertEqual(len(lines), n)
        for e, line in zip(events, lines):
            f = line.split()
            self.assertEqual((int(f[0]), f[1]), (e["index"], "input"))
            self.assertIn("sha256:" + e["event"]["sha256"][:16], line)
            if "path" in e["event"]:
                self.assertIn(e["event"]["path"], line)
        # --export-leaves to a file holds the same bytes as to stdout.
        out = os.path.join(self.tmp, "leaves.jsonl")
        self.s.cr("log", "--export-leaves", out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"".join(x + b"\n" for x in leaves))
        r = self.s.cr("log", "--export-leaves", out, "--json", rc=None)
        self.assertEqual(r.rc, EXIT_USAGE, r)
        # The segments in git hold exactly the exported leaves.
        data = b""
        for c in self.s.commits():
            t = self.s.trailers(c)
            data += self.s.blob(self.s.files_at(c)[t["Segment"]][1])
        self.assertEqual(data, b"".join(x + b"\n" for x in leaves))


class ProveTest(crtest.TestCase):
    """Proofs of a ~40-event store, all verified here in Python."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = os.path.realpath(tempfile.mkdtemp(prefix="cr-it-prove-"))
        cls.s = crtest.Store(os.path.join(cls.root, "store"))
        try:
            cls.s.init()
            sizes = (9, 1, 17, 13)  # several segments, sizes not powers of two
            for i, n in enumerate(sizes):
                d = os.path.join(cls.root, "d%d" % i)
                make_files(d, n, tag="p%d" % i)
                cls.s.add(d)
            cls.hashes = cls.s.leaf_hashes()
            cls.roots = all_roots(cls.hashes)
        except BaseException:
            shutil.rmtree(cls.root, True)
            raise
        cls.addClassCleanup(shutil.rmtree, cls.root, True)

    def prove(self, *args):
        return self.s.cr("prove", "--json", *args).json()

    def check_inclusion(self, index, size, proof):
        hashes = self.hashes
        self.assertEqual(proof["index"], index)
        self.assertEqual(proof["tree_size"], size)
        self.assertEqual(proof["leaf_hash"], hashes[index].hex())
        self.assertEqual(proof["root"], self.roots[size].hex())
        path = [H(x) for x in proof["audit_path"]]
        self.assertTrue(verify_inclusion(hashes[index], index, size, path, self.roots[size]),
                        "inclusion proof of %d in %d does not verify" % (index, size))
        # It is exactly RFC 9162's PATH(m, D[n]).
        self.assertEqual(path, inclusion_path(hashes[:size], index))
        # A proof for another leaf or size must not verify (the check can fail).
        if size > 1:
            other = (index + 1) % size
            self.assertFalse(verify_inclusion(hashes[other], index, size, path, self.roots[size]))

    def test_store_shape(self):
        self.assertEqual(len(self.hashes), 40)
        self.assertEqual(self.s.status()["root"], self.roots[40].hex())
        self.assertEqual(len(self.s.commits()), 4)

    def test_inclusion_every_index(self):
        for i in range(40):
            self.check_inclusion(i, 40, self.prove(str(i)))

    def test_inclusion_with_size(self):
        for size in (1, 2, 3, 7, 8, 9, 10, 16, 17, 26, 27, 31, 32, 33, 39, 40):
            for i in range(size):
                self.check_inclusion(i, size, self.prove("--size", str(size), str(i)))

    def test_inclusion_text_output(self):
        out = self.s.cr("prove", "5").out
        j = self.prove("5")
        self.assertIn("index       5", out)
        self.assertIn("tree size   40", out)
        self.assertIn("root        " + j["root"], out)
        for h in j["audit_path"]:
            self.assertIn(h, out)

    def test_consistency_all_pairs(self):
        for new in range(1, 41):
            for old in range(1, new + 1):
                j = self.prove("--consistency", str(old), str(new))
                self.assertEqual((j["old_size"], j["new_size"]), (old, new))
                self.assertEqual(j["old_root"], self.roots[old].hex())
                self.assertEqual(j["new_root"], self.roots[new].hex())
                proof = [H(x) for x in j["proof"]]
                self.assertTrue(verify_consistency(old, new, self.roots[old], self.roots[new], proof),
                                "consistency %d -> %d does not verify" % (old, new))
                self.assertEqual(proof, consistency_proof(self.hashes, old, new))
                if old < new:
                    self.assertFalse(verify_consistency(old, new, self.roots[old - 1] if old > 1 else
                                                        self.roots[new], self.roots[new], proof))

    def test_consistency_default_new_size(self):
        for old in (1, 9, 10, 27, 40):
            j = self.prove("--consistency", str(old))
            self.assertEqual(j["new_size"], 40)
            self.assertTrue(verify_consistency(old, 40, self.roots[old], self.roots[40],
                                               [H(x) for x in j["proof"]]))

    def test_bad_arguments(self):
        cases = [
            ["-1"],                          # negative index
            ["--", "-1"],
            ["40"],                          # == size
            ["1000"],
            ["18446744073709551616"],        # beyond uint64
            ["abc"],
            ["3x"],
            [],                              # no index
            ["1", "2"],
            ["--size", "0", "1"],
            ["--size", "41", "0"],           # beyond the log
            ["--size", "5", "5"],            # index not in that tree
            ["--size", "-3", "1"],
            ["--bogus", "1"],
            ["--consistency"],
            ["--consistency", "41"],
            ["--consistency", "5", "3"],
            ["--consistency", "5", "41"],
            ["--consistency", "1", "2", "3"],
            ["--consistency", "--size", "3", "1"],
            ["--consistency", "-1"],
        ]
        for args in cases:
            r = self.s.cr("prove", *args, rc=None)
            self.assertEqual(r.rc, EXIT_USAGE, (args, r))
            self.assertEqual(r.out, "", args)
            self.assertTrue(r.err.strip(), args)

    def test_consistency_from_zero_is_usage_error(self):
        # OLD_SIZE 0 is a bad argument (the empty tree needs no proof); it
        # must not be reported as a failed verification (exit 1).
        r = self.s.cr("prove", "--consistency", "0", "5", rc=None)
        self.assertEqual(r.rc, EXIT_USAGE, r)

    def test_empty_store_proofs(self):
        e = self.new_store("empty")
        r = e.cr("prove", "0", rc=None)
        self.assertEqual(r.rc, EXIT_USAGE, r)
        self.assertIn("not in a tree of size 0", r.err)


class UsageTest(crtest.TestCase):
    COMMANDS = ["init", "add", "log", "status", "prove", "check", "index"]

    def listed_commands(self):
        out = cleanroom("--help").out
        block = out.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
        return [line.split()[0] for line in block.splitlines() if line.strip()]

    def test_help(self):
        listed = self.listed_commands()
        for cmd in self.COMMANDS:
            self.assertIn(cmd, listed)
        for cmd in listed:
            for flag in ("--help", "-h"):
                r = cleanroom(cmd, flag)
                self.assertEqual(r.rc, EXIT_OK, r)
                self.assertTrue(r.out.startswith("usage: cleanroom " + cmd), (cmd, r.out))
                self.assertEqual(r.err, "")
        # --help wins even on a store that does not exist.
        r = cleanroom("status", "--help", store=os.path.join(self.tmp, "nothing"))
        self.assertEqual(r.rc, EXIT_OK, r)
        r = cleanroom("--help")
        self.assertEqual(r.rc, EXIT_OK, r)
        self.assertTrue(r.out.startswith("usage: cleanroom <command>"))
        for cmd in self.COMMANDS:
            self.assertIn("\n  %s " % cmd, r.out)
        r = cleanroom("--version")
        self.assertEqual(r.rc, EXIT_OK, r)
        self.assertTrue(r.out.startswith("cleanroom "))

    def test_bad_usage(self):
        s = self.new_store()
        cases = [
            [],
            ["nosuchcommand"],
            ["init", "--nope"],
            ["init", "extra"],
            ["status", "--nope"],
            ["status", "extra"],
            ["log", "--nope"],
            ["log", "extra"],
            ["log", "--from", "-1"],
            ["log", "--limit", "x"],
            ["log", "--export-leaves", "-", "--from", "2"],
            ["check", "--nope"],
            ["check", "extra"],
            ["index"],
            ["index", "rebuld"],
            ["index", "rebuild", "extra"],
            ["index", "--nope", "rebuild"],
            ["add"],
            ["add", "--nope", self.tmp],
        ]
        for args in cases:
            r = crtest.run([crtest.CLEANROOM] + args[:1] + (["--store", s.path] if args else []) + args[1:])
            self.assertEqual(r.rc, EXIT_USAGE, (args, r))
            self.assertTrue(r.err.strip(), args)
        self.assertEqual(s.status()["tree_size"], 0)

    def test_no_store(self):
        missing = os.path.join(self.tmp, "nothing")
        for cmd in (["status"], ["log"], ["check"], ["prove", "0"], ["add", self.tmp],
                    ["index", "rebuild"]):
            r = cleanroom(*cmd[:1], *cmd[1:], store=missing)
            self.assertEqual(r.rc, EXIT_ENV, (cmd, r))
            self.assertIn("no store at", r.err)
        self.assertFalse(os.path.exists(missing))


class IndexRebuildTest(crtest.TestCase):
    def setUp(self):
        super().setUp()
        self.s = self.new_store()
        # > 300 events in several segments: interior nodes at level >= 8 exist.
        self.sizes = (100, 57, 3, 150, 1)
        for i, n in enumerate(self.sizes):
            make_files(os.path.join(self.tmp, "d%d" % i), n, tag="r%d" % i, per_dir=40)
        crtest.settle()  # so that every file's hash is cached
        for i in range(len(self.sizes)):
            self.s.add(os.path.join(self.tmp, "d%d" % i))
        self.n = sum(self.sizes)

    def test_rebuild_gives_identical_tables(self):
        before = self.s.dump_derived()
        st = self.s.status()
        con = self.s.db()
        witness = con.execute("SELECT * FROM witness ORDER BY size").fetchall()
        cache = con.execute("SELECT count(*) FROM hash_cache").fetchone()[0]
        con.close()
        self.assertEqual(len(before["events"]), self.n)
        self.assertEqual(len(before["segments"]), len(self.sizes))
        self.assertEqual(len(before["files"]), self.n)
        self.assertEqual([w[0] for w in witness], [sum(self.sizes[:i + 1]) for i in range(len(self.sizes))])
        self.assertEqual(cache, self.n)
        self.assertTrue(any(level >= 8 for level, _, _ in before["nodes"]), before["nodes"])

        r = self.s.cr("index", "rebuild", "--json").json()
        self.assertEqual(r, {"rebuilt": True, "tree_size": self.n, "root": st["root"]})
        self.assertEqual(self.s.dump_derived(), before)
        con = self.s.db()
        self.assertEqual(con.execute("SELECT * FROM witness ORDER BY size").fetchall(), witness)
        self.assertEqual(con.execute("SELECT count(*) FROM hash_cache").fetchone()[0], cache)
        con.close()
        self.assertEqual(self.s.status(), st)
        rc, j, text = self.s.check()
        self.assertEqual(rc, EXIT_OK, text)

    def test_deleted_index_is_recreated(self):
        before = self.s.dump_derived()
        st = self.s.status()
        # check does not touch the index (it opens the store raw). An index
        # merely behind the log (here: empty) is what a crash between the git
        # commit and the index update leaves; it catches up on the next open,
        # so check replays the log and passes.
        os.remove(self.s.index_path)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.s.index_path + suffix):
                os.remove(self.s.index_path + suffix)
        rc, j, text = self.s.check()
        self.assertEqual(rc, EXIT_OK, text)
        self.assertEqual(j["problems"], [])
        self.assertEqual((j["tree_size"], j["root"]), (self.n, st["root"]))
        for cmd in (["status", "--json"], ["log", "--json"], ["prove", "--json", "7"],
                    ["add", "--json", os.path.join(self.tmp, "d2")]):
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.s.index_path + suffix):
                    os.remove(self.s.index_path + suffix)
            r = self.s.cr(*cmd)
            self.assertTrue(os.path.isfile(self.s.index_path), cmd)
            self.assertEqual(self.s.dump_derived(), before, cmd)
            self.assertEqual(self.s.status(), dict(st, hash_cache_entries=self.s.status()["hash_cache_entries"]))
            rc, j, text = self.s.check()
            self.assertEqual(rc, EXIT_OK, (cmd, text))
        # The add above found every file already recorded (the index was rebuilt
        # from the log before it looked).
        self.assertEqual(r.json()["recorded"], 0)
        self.assertEqual(r.json()["unchanged"], 3)

    def test_nodes_are_the_right_subtrees(self):
        hashes = self.s.leaf_hashes()
        nodes = self.s.dump_derived()["nodes"]
        self.assertEqual(sorted((lv, pos) for lv, pos, _ in nodes), [(8, 0)],
                         "361 leaves hold one perfect 256-leaf subtree")
        for level, pos, h in nodes:
            self.assertEqual(h, mth(hashes, pos << level, (pos + 1) << level))

    def test_proofs_above_level_8(self):
        hashes = self.s.leaf_hashes()
        roots = all_roots(hashes)
        n = self.n
        self.assertEqual(self.s.status()["root"], roots[n].hex())
        indices = sorted(set(list(range(0, n, 13)) + [0, 1, 127, 128, 254, 255, 256, 257, 300, n - 2, n - 1]))
        for size in (256, 257, 300, 310, n):
            for i in [i for i in indices if i < size]:
                j = self.s.cr("prove", "--json", "--size", str(size), str(i)).json()
                self.assertEqual(j["root"], roots[size].hex())
                self.assertEqual(j["leaf_hash"], hashes[i].hex())
                path = [H(x) for x in j["audit_path"]]
                self.assertTrue(verify_inclusion(hashes[i], i, size, path, roots[size]), (i, size))
                self.assertEqual(path, inclusion_path(hashes[:size], i))
        for old, new in ((1, n), (100, n), (157, 160), (255, 256), (256, 257), (256, n), (257, n),
                         (300, 310), (160, 310), (n - 1, n), (n, n), (128, 300)):
            j = self.s.cr("prove", "--json", "--consistency", str(old), str(new)).json()
            proof = [H(x) for x in j["proof"]]
            self.assertEqual((j["old_root"], j["new_root"]), (roots[old].hex(), roots[new].hex()))
            self.assertTrue(verify_consistency(old, new, roots[old], roots[new], proof), (old, new))
            self.assertEqual(proof, consistency_proof(hashes, old, new))


# Schema version 1 as the build before it wrote the index: event types by
# name, files keyed by leaf index with an index on the full SHA-256. The rows
# are copied from the current tables, so it is a complete, up-to-date index.
TO_VERSION_1 = """
BEGIN;
CREATE TABLE events1(idx INTEGER PRIMARY KEY, type TEXT NOT NULL, leaf BLOB NOT NULL);
INSERT INTO events1 SELECT e.idx, t.name, e.leaf FROM events e JOIN types t ON t.code = e.type;
CREATE TABLE files1(idx INTEGER PRIMARY KEY, path TEXT NOT NULL, sha256 BLOB NOT NULL, size INTEGER);
INSERT INTO files1 SELECT idx, path, sha256, size FROM files;
DROP TABLE events; DROP TABLE files; DROP TABLE types;
ALTER TABLE events1 RENAME TO events; ALTER TABLE files1 RENAME TO files;
CREATE INDEX files_by_sha256 ON files(sha256);
PRAGMA user_version=1;
COMMIT;
"""


class IndexSchemaTest(crtest.TestCase):
    """An index of an older schema is rebuilt from the log on open, once."""

    def setUp(self):
        super().setUp()
        self.s = self.new_store()
        for i, n in enumerate((300, 40)):
            make_files(os.path.join(self.tmp, "d%d" % i), n, tag="s%d" % i, per_dir=50)
        crtest.settle()
        for i in range(2):
            self.s.add(os.path.join(self.tmp, "d%d" % i))
        self.n = 340

    def user_version(self):
        con = self.s.db()
        try:
            return con.execute("PRAGMA user_version").fetchone()[0]
        finally:
            con.close()

    def kept(self):
        """The tables a rebuild must not touch, and the type names."""
        con = self.s.db()
        try:
            return (con.execute("SELECT * FROM witness ORDER BY size").fetchall(),
                    con.execute("SELECT * FROM hash_cache ORDER BY dev, ino").fetchall(),
                    con.execute("SELECT * FROM types ORDER BY code").fetchall())
        finally:
            con.close()

    def downgrade(self):
        con = self.s.db()
        try:
            con.executescript(TO_VERSION_1)
        finally:
            con.close()
        self.assertEqual(self.user_version(), 1)

    def test_old_index_rebuilt_once(self):
        current = self.user_version()
        self.assertGreater(current, 1)
        before, st, kept = self.s.dump_derived(), self.s.status(), self.kept()
        self.assertEqual(len(kept[1]), self.n)
        for cmd in (["status", "--json"], ["log", "--json"], ["prove", "--json", "7"],
                    ["check", "--json"], ["add", "--json", os.path.join(self.tmp, "d1")]):
            with self.subTest(cmd=cmd[0]):
                self.downgrade()
                r = self.s.cr(*cmd)
                # Told once, on stderr; stdout is the command's own.
                self.assertEqual(r.err.count("schema version 1"), 1, r.err)
                self.assertIn("rebuilt it from the log", r.err)
                self.assertIn("%d events" % self.n, r.err)
                if cmd[0] == "log":
                    self.assertEqual(len(r.json_lines()), self.n)
                else:
                    r.json()
                self.assertEqual(self.user_version(), current)
                self.assertEqual(self.s.dump_derived(), before)
                self.assertEqual(self.kept(), kept)
                again = self.s.cr("status", "--json")
                self.assertNotIn("schema", again.err)
                self.assertEqual(again.json(), st)
                rc, j, text = self.s.check()
                self.assertEqual(rc, EXIT_OK, text)
        # The add found every file recorded (it looked in the rebuilt index).
        self.assertEqual((r.json()["recorded"], r.json()["unchanged"]), (0, 40))

    def test_old_index_with_writer_busy(self):
        # A reader cannot rebuild while another process writes the store:
        # it says so and leaves the index alone.
        import fcntl
        self.downgrade()
        with open(os.path.join(self.s.path, "lock"), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            r = self.s.cr("status", "--json", rc=EXIT_ENV)
            self.assertIn("older schema", r.err)
            self.assertEqual(self.user_version(), 1)
        self.assertEqual(self.s.status()["tree_size"], self.n)

    def test_newer_index_refused(self):
        con = self.s.db()
        con.execute("PRAGMA user_version=%d" % (self.user_version() + 1))
        con.commit()
        con.close()
        before = self.s.dump_derived()
        for cmd in (["status"], ["add", os.path.join(self.tmp, "d1")], ["index", "rebuild"]):
            r = self.s.cr(*cmd, rc=EXIT_ENV)
            self.assertIn("newer", r.err)
        self.assertEqual(self.s.dump_derived(), before)


class AddOrderTest(crtest.TestCase):
    def test_names_sorting_around_the_slash(self):
        # Listed folder by folder, "a" comes before "a-b" and "a.txt"; as
        # paths, "a/x" comes after them ('-' and '.' sort below '/') and
        # before "a0". Events are in path order all the same.
        s = self.new_store()
        data = os.path.join(self.tmp, "data")
        names = ["a/x", "a/y/z", "a-b", "a.txt", "a0", "b", "a/x.d/q", "a/x-1"]
        for n in names:
            p = os.path.join(data, n)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(n.encode())
        crtest.settle()
        j = s.add(data)
        self.assertEqual(j["recorded"], len(names))
        paths = [e["event"]["path"] for e in s.events()]
        self.assertEqual(paths, sorted(os.path.join(data, n) for n in names))
        self.assertEqual(paths, sorted(paths, key=lambda p: p.encode()))
        for e in s.events():
            self.assertEqual(e["event"]["sha256"], file_sha256(e["event"]["path"]))

    def test_batches_and_the_window(self):
        # More files than a batch (4096), added in two goes: every file once,
        # in order, with the segments cut at batch boundaries.
        s = self.new_store()
        data = os.path.join(self.tmp, "many")
        made = make_files(data, 9000, tag="m", per_dir=700)
        crtest.settle()
        j = s.add(os.path.join(data, "d0000"), os.path.join(data, "d0001"))
        self.assertEqual((j["recorded"], j["hashed_files"]), (1400, 1400))
        j = s.add(data)
        self.assertEqual((j["files"], j["recorded"], j["unchanged"]), (9000, 7600, 1400))
        self.assertEqual((j["cached_files"], j["hashed_files"]), (1400, 7600))
        self.assertEqual([int(s.trailers(c)["Count"]) for c in s.commits()], [1400, 4096 - 1400, 4096, 808])
        events = s.events()
        self.assertEqual(sorted(e["event"]["path"] for e in events), sorted(made))
        self.assertEqual([e["event"]["path"] for e in events[1400:]],
                         sorted(p for p in made if "/d0000/" not in p and "/d0001/" not in p))
        for e in events[::613]:
            self.assertEqual(e["event"]["sha256"], file_sha256(e["event"]["path"]))
            self.assertEqual(e["event"]["size"], len(made[e["event"]["path"]]))
        rc, jc, text = s.check()
        self.assertEqual(rc, EXIT_OK, text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
