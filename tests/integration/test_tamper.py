#!/usr/bin/python3
"""Tampering with a store using plain git (and SQLite) and `cleanroom check`.

Every case forges something in log.git with git plumbing (hash-object,
mktree, commit-tree, update-ref, fetch) and asserts that `cleanroom check`
exits 1 and names the right commit, path and kind of problem, in its text
output and in --json.

Run standalone: /usr/bin/python3 tests/integration/test_tamper.py
"""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402
from crtest import (EXIT_OK, EXIT_VERIFY, all_roots, canonical, leaf_hash, make_files,  # noqa: E402
                    segment_message, segment_path)

SIZES = (4, 5, 6)          # three segments: leaves 0-3, 4-8, 9-14
SEG = [segment_path(0), segment_path(4), segment_path(9)]


def forged_event(i, **over):
    ev = {"path": "/forged/file-%d" % i, "sha256": "%064x" % (0xf00d + i), "size": i,
          "time": "2026-01-01T00:00:00.000000Z", "type": "input", "v": 1, "via": "add"}
    ev.update(over)
    return canonical(ev)


class TamperTest(crtest.TestCase):
    def setUp(self):
        super().setUp()
        self.s = self.new_store()
        for i, n in enumerate(SIZES):
            d = os.path.join(self.tmp, "data%d" % i)
            make_files(d, n, tag="t%d" % i)
            self.s.add(d)
        self.c = self.s.commits()
        self.assertEqual(len(self.c), 3)
        self.leaves = self.s.leaves()
        self.hashes = [leaf_hash(x) for x in self.leaves]
        self.n = len(self.leaves)
        self.assertEqual(self.n, 15)
        self.root = self.s.status()["root"]
        rc, j, text = self.s.check()
        self.assertEqual(rc, EXIT_OK, text)
        self.assertEqual(j["problems"], [])

    # ------------------------------------------------------------ helpers --

    def seg_blob(self, k):
        return self.s.blob(self.s.files_at(self.c[-1])[SEG[k]][1])

    def new_segment_commit(self, lines, first=None, parent=None, extra_files=None, message=None,
                           data=None, parents=None):
        """Commit on top of parent (default: head) adding a segment of `lines`,
        with a message whose trailers are right for those bytes."""
        parent = parent or self.s.head()
        first = self.n if first is None else first
        if data is None:
            data = b"".join(x + b"\n" for x in lines)
        files = dict(self.s.files_at(parent))
        path = segment_path(first)
        files[path] = ("100644", self.s.hash_object(data))
        files.update(extra_files or {})
        hashes = self.hashes + [leaf_hash(x) for x in data.rstrip(b"\n").split(b"\n")]
        if message is None:
            message = segment_message(first, len(lines), first + len(lines), crtest.mth(hashes).hex())
        commit = self.s.commit_tree(self.s.mktree(files), parents or [parent], message)
        self.s.set_branch(commit)
        return commit, path

    def rewrite_history(self, k, new_blob, recompute_roots):
        """Rewrite the history from commit k on, with segment k's bytes
        replaced; roots in later messages left as they were, or recomputed."""
        parent = self.c[k - 1] if k else None
        files = dict(self.s.files_at(parent)) if parent else {}
        blobs = [self.seg_blob(i) for i in range(len(SEG))]
        blobs[k] = new_blob
        leaves = b"".join(blobs).rstrip(b"\n").split(b"\n")
        roots = all_roots([leaf_hash(x) for x in leaves])
        new = list(self.c[:k])
        for i in range(k, len(self.c)):
            files[SEG[i]] = ("100644", self.s.hash_object(blobs[i]))
            msg = self.s.message(self.c[i])
            if recompute_roots:
                t = self.s.trailers(self.c[i])
                msg = segment_message(int(t["First"]), int(t["Count"]), int(t["Tree-Size"]),
                                      roots[int(t["Tree-Size"])].hex())
            commit = self.s.commit_tree(self.s.mktree(files), [parent] if parent else [], msg)
            new.append(commit)
            parent = commit
        self.s.set_branch(parent)
        return new

    def check_fails(self):
        """check exits 1; its text and --json list the same problems; return them."""
        rc, j, text = self.s.check()
        self.assertEqual(rc, EXIT_VERIFY, text)
        self.assertIsNotNone(j, "check --json printed no report: " + text)
        self.assertFalse(j["ok"])
        problems = j["problems"]
        self.assertTrue(problems)
        self.assertEqual(j["problem_count"], len(problems))
        lines = text.splitlines()
        self.assertEqual(lines[:-1], ["%s: %s" % (p["where"], p["what"]) for p in problems])
        self.assertTrue(lines[-1].startswith("FAILED: %d problem" % len(problems)), lines[-1])
        return problems

    def commit_problems(self, problems):
        return [p for p in problems if p["where"].startswith("commit ")]

    def where(self, commit):
        return "commit " + commit[:12]

    def witness(self, k):
        """The 'where' of the witness row for self.c[k]."""
        size = sum(SIZES[:k + 1])
        return "head %s (size %d)" % (self.c[k][:12], size)

    def assertRefusesNormalCommands(self, why=None, points_at_check=True):
        """status, log and add refuse the tampered store, say why (when given)
        and point at `cleanroom check`."""
        d = os.path.join(self.tmp, "after")
        if not os.path.isdir(d):
            make_files(d, 2, tag="after")
        head = self.s.head()
        for cmd in (["status", "--json"], ["log", "--json"], ["add", "--json", d]):
            r = self.s.cr(*cmd, rc=None)
            self.assertIn(r.rc, (1, 3), (cmd, r))
            self.assertEqual(r.out, "", cmd)
            if why:
                self.assertIn(why, r.err, (cmd, r))
            if points_at_check:
                self.assertIn("cleanroom check", r.err, (cmd, r))
        self.assertEqual(self.s.head(), head, "nothing was appended to a tampered log")

    def assertNoWitnessProblem(self, problems, k):
        self.assertFalse([p for p in problems if p["where"] == self.witness(k)], problems)

    # -------------------------------------------------------------- cases --

    def test_clean_store_checks(self):
        rc, j, text = self.s.check()
        self.assertEqual(rc, EXIT_OK)
        self.assertEqual(j, {"ok": True, "commits": 3, "tree_size": 15, "root": self.root,
                             "problem_count": 0, "problems": []})
        self.assertEqual(text, "OK: 3 commits, 15 events, append-only; root %s\n" % self.root)

    def test_a_amended_head(self):
        msg = self.s.message(self.c[2]).replace("Append events", "Amended: append events", 1)
        tree = self.s.git("rev-parse", self.c[2] + "^{tree}").out.strip()
        amended = self.s.commit_tree(tree, [self.c[1]], msg)
        self.s.set_branch(amended)
        problems = self.check_fails()
        # The amended commit itself is a well-formed segment commit ...
        self.assertEqual(self.commit_problems(problems), [])
        # ... but the head the store wrote is gone from the history.
        self.assertProblem(problems, self.witness(2), "no longer contains")
        self.assertNoWitnessProblem(problems, 0)
        self.assertNoWitnessProblem(problems, 1)
        self.assertProblem(problems, "index", "(head %s)" % amended[:12])
        self.assertRefusesNormalCommands()

    def test_b_commit_modifies_existing_segment(self):
        blob = self.seg_blob(0)
        lines = blob.split(b"\n")
        ev = json.loads(lines[1])
        ev["sha256"] = "0" * 64
        lines[1] = canonical(ev)
        files = dict(self.s.files_at(self.c[2]))
        files[SEG[0]] = ("100644", self.s.hash_object(b"\n".join(lines)))
        forged = self.s.commit_tree(self.s.mktree(files), [self.c[2]], self.s.message(self.c[2]))
        self.s.set_branch(forged)
        problems = self.check_fails()
        self.assertProblem(problems, self.where(forged), "modifies existing path " + SEG[0])
        self.assertProblem(problems, self.where(forged), "adds no segment")
        self.assertEqual({p["where"] for p in self.commit_problems(problems)}, {self.where(forged)})
        self.assertRefusesNormalCommands()

    def test_b2_modified_segment_hidden_behind_a_valid_new_one(self):
        # Edit segment 0 and add a next segment whose message carries the
        # root over the *original* leaves plus the new ones: what the index
        # expects. check must still see the modification.
        blob = self.seg_blob(0)
        lines = blob.split(b"\n")
        ev = json.loads(lines[1])
        ev["sha256"] = "0" * 64
        lines[1] = canonical(ev)
        forged, path = self.new_segment_commit(
            [forged_event(0)], extra_files={SEG[0]: ("100644", self.s.hash_object(b"\n".join(lines)))})
        problems = self.check_fails()
        self.assertProblem(problems, self.where(forged), "modifies existing path " + SEG[0])
        # (check replays each segment when it is added, so the new commit's
        # root is right: the modification itself is the problem.)
        self.assertEqual([p["what"] for p in self.commit_problems(problems)],
                         ["modifies existing path " + SEG[0]])
        # Normal commands must not carry on as if nothing happened: `log`
        # would otherwise print the forged sha256 while the index (and every
        # proof) still holds the original leaf.
        self.assertRefusesNormalCommands()

    def test_c_commit_removes_segment(self):
        files = dict(self.s.files_at(self.c[2]))
        del files[SEG[1]]
        forged = self.s.commit_tree(self.s.mktree(files), [self.c[2]], self.s.message(self.c[2]))
        self.s.set_branch(forged)
        problems = self.check_fails()
        p = self.assertProblem(problems, self.where(forged), "removes existing path " + SEG[1])
        self.assertEqual(p["what"], "removes existing path " + SEG[1])
        self.assertProblem(problems, self.where(forged), "adds no segment")
        self.assertEqual({p["where"] for p in self.commit_problems(problems)}, {self.where(forged)})
        self.assertRefusesNormalCommands()

    def swapped(self, k, i, j):
        lines = self.seg_blob(k).rstrip(b"\n").split(b"\n")
        self.assertNotEqual(lines[i], lines[j])
        lines[i], lines[j] = lines[j], lines[i]
        return b"".join(x + b"\n" for x in lines)

    def test_d_reordered_events_root_left_as_is(self):
        new = self.rewrite_history(1, self.swapped(1, 0, 2), recompute_roots=False)
        self.assertEqual(new[0], self.c[0])
        problems = self.check_fails()
        cps = self.commit_problems(problems)
        self.assertTrue(cps)
        # The first problem in the history is the root of the rewritten commit.
        self.assertEqual(cps[0]["where"], self.where(new[1]))
        self.assertIn("records root %s at size 9, its events give " % self.s.trailers(new[1])["Root"],
                      cps[0]["what"])
        self.assertProblem(problems, self.where(new[2]), "records root")
        self.assertFalse([p for p in cps if p["where"] == self.where(new[0])])
        self.assertProblem(problems, self.witness(1), "no longer contains")
        self.assertProblem(problems, self.witness(2), "no longer contains")
        self.assertNoWitnessProblem(problems, 0)
        # The swapped leaves 4 and 6 no longer match the index.
        self.assertProblem(problems, "index leaf 4", "leaf hash differs")
        self.assertProblem(problems, "index leaf 6", "leaf hash differs")
        self.assertFalse([p for p in problems if p["where"] == "index leaf 5"])
        self.assertRefusesNormalCommands()

    def test_e_reordered_events_roots_recomputed(self):
        new = self.rewrite_history(1, self.swapped(1, 0, 2), recompute_roots=True)
        # The forged history is perfectly consistent on its own ...
        git_leaves = self.s.git_leaves(new[2])
        self.assertNotEqual(git_leaves, self.leaves)
        self.assertEqual(sorted(git_leaves), sorted(self.leaves))
        self.assertEqual(self.s.trailers(new[2])["Root"],
                         crtest.mth([leaf_hash(x) for x in git_leaves]).hex())
        problems = self.check_fails()
        self.assertEqual(self.commit_problems(problems), [])
        # ... and only the witness (and the index) give it away.
        self.assertProblem(problems, self.witness(1), "no longer contains")
        self.assertProblem(problems, self.witness(2), "no longer contains")
        self.assertNoWitnessProblem(problems, 0)
        self.assertProblem(problems, "index leaf 4", "leaf hash differs")
        self.assertProblem(problems, "index leaf 6", "leaf hash differs")
        self.assertRefusesNormalCommands()
        # Rebuilding the index from the forged log does not launder it: the
        # witness (kept across rebuilds) still misses the heads it wrote.
        r = self.s.cr("index", "rebuild", "--json").json()
        self.assertEqual(r["root"], self.s.trailers(new[2])["Root"])
        problems = self.check_fails()
        self.assertEqual(sorted(p["where"] for p in problems), sorted([self.witness(1), self.witness(2)]))

    def test_f_branch_replaced_by_unrelated_history(self):
        other = self.new_store("other")
        d = os.path.join(self.tmp, "otherdata")
        make_files(d, 20, tag="o")
        other.add(d)
        self.s.git("fetch", "-q", "--update-head-ok", other.git_dir, "+%s:%s" % (crtest.BRANCH, crtest.BRANCH))
        self.assertEqual(self.s.head(), other.head())
        problems = self.check_fails()
        self.assertEqual(self.commit_problems(problems), [])
        for k in range(3):
            self.assertProblem(problems, self.witness(k), "no longer contains")
        self.assertProblem(problems, "index", "the log holds 20 (head %s)" % other.head()[:12])
        self.assertProblem(problems, "index leaf 0", "leaf hash differs")
        self.assertRefusesNormalCommands()

    def test_g_commit_adds_non_segment_file(self):
        readme = ("100644", self.s.hash_object(b"hello\n"))
        forged, path = self.new_segment_commit([forged_event(1)], extra_files={"README": readme})
        problems = self.check_fails()
        p = self.assertProblem(problems, self.where(forged), "adds README")
        self.assertEqual(p["what"], "adds README, which is not a segment")
        self.assertEqual([p["what"] for p in self.commit_problems(problems)],
                         ["adds README, which is not a segment"])

    def test_g2_non_segment_file_only(self):
        files = dict(self.s.files_at(self.c[2]))
        files["events/000000/000/notes.txt"] = ("100644", self.s.hash_object(b"hello\n"))
        forged = self.s.commit_tree(self.s.mktree(files), [self.c[2]], self.s.message(self.c[2]))
        self.s.set_branch(forged)
        problems = self.check_fails()
        self.assertProblem(problems, self.where(forged),
                           "adds events/000000/000/notes.txt, which is not a segment")
        self.assertProblem(problems, self.where(forged), "adds no segment")
        self.assertRefusesNormalCommands()

    def test_h_merge_commit(self):
        side = self.s.commit_tree(self.s.mktree({"side.txt": ("100644", self.s.hash_object(b"x\n"))}),
                                  [], "unrelated side commit\n")
        forged, path = self.new_segment_commit([forged_event(2)], parents=[self.c[2], side])
        self.assertEqual(len(self.s.git("rev-list", "--parents", "-n1", forged).out.split()), 3)
        problems = self.check_fails()
        p = self.assertProblem(problems, self.where(forged), "has 2 parents")
        self.assertIn("single line of commits", p["what"])

    def test_i_non_canonical_line(self):
        good = forged_event(3)
        bad = good.replace(b'"size":3', b'"size": 3')
        forged, path = self.new_segment_commit([good, bad, forged_event(4)])
        problems = self.check_fails()
        cps = self.commit_problems(problems)
        self.assertEqual(len(cps), 1, cps)
        self.assertEqual(cps[0]["where"], self.where(forged))
        self.assertIn("segment %s line 2 (leaf 16)" % path, cps[0]["what"])
        self.assertIn("not in canonical form", cps[0]["what"])
        # Opening the store indexes the new segment: that must fail, saying why.
        self.assertRefusesNormalCommands(why="not in canonical form", points_at_check=False)

    def test_i2_other_malformed_lines(self):
        cases = [
            (b'{"type":"input","v":1,"size":1}', "not in canonical form"),     # keys unsorted
            (forged_event(5).replace(b'"size":5', b'"size":5.0'), "real numbers"),
            (b'{"type":"input"}', 'no schema version "v"'),
            (b'{"v":1}', 'no "type"'),
            (b'not json', "not JSON"),
            (b'{"type":"input","type":"input","v":1}', "not JSON"),           # duplicate key
        ]
        for i, (line, what) in enumerate(cases):
            with self.subTest(line=line):
                self.s.set_branch(self.c[2])
                forged, path = self.new_segment_commit([forged_event(9), line])
                problems = self.check_fails()
                cps = self.commit_problems(problems)
                self.assertEqual(len(cps), 1, cps)
                self.assertIn("segment %s line 2 (leaf 16)" % path, cps[0]["what"])
                self.assertIn(what, cps[0]["what"])

    def test_j_segment_at_wrong_leaf(self):
        forged, path = self.new_segment_commit([forged_event(6), forged_event(7)], first=20)
        self.assertEqual(path, segment_path(20))
        problems = self.check_fails()
        self.assertProblem(problems, self.where(forged),
                           "segment %s starts at leaf 20 but the log holds 15 leaves before it" % path)
        self.assertProblem(problems, self.where(forged), "records tree size 22, its events give 17")
        self.assertRefusesNormalCommands(why="starts at leaf 20")

    def test_j2_segment_overlapping_existing_leaves(self):
        forged, path = self.new_segment_commit([forged_event(6)], first=10)
        problems = self.check_fails()
        self.assertProblem(problems, self.where(forged),
                           "segment %s starts at leaf 10 but the log holds 15 leaves before it" % path)

    def test_k_truncated_segment(self):
        data = forged_event(8) + b"\n" + forged_event(9)   # last newline removed
        forged, path = self.new_segment_commit([forged_event(8), forged_event(9)], data=data)
        problems = self.check_fails()
        cps = self.commit_problems(problems)
        self.assertEqual([p["what"] for p in cps],
                         ["segment %s does not end with a newline (truncated?)" % path])
        self.assertEqual(cps[0]["where"], self.where(forged))
        self.assertRefusesNormalCommands(why="truncated", points_at_check=False)

    def test_k2_truncated_existing_segment_rewritten(self):
        new = self.rewrite_history(2, self.seg_blob(2)[:-1], recompute_roots=False)
        problems = self.check_fails()
        self.assertProblem(problems, self.where(new[2]), "does not end with a newline (truncated?)")
        self.assertProblem(problems, self.witness(2), "no longer contains")

    def test_l_index_leaf_tampered(self):
        con = self.s.db()
        con.execute("UPDATE events SET leaf = ? WHERE idx = 7", (b"\x11" * 32,))
        con.commit()
        con.close()
        problems = self.check_fails()
        self.assertEqual(problems, [{"where": "index leaf 7",
                                     "what": "the index's leaf hash differs from the log's event"}])
        # The index is derived: a rebuild repairs it.
        self.s.cr("index", "rebuild")
        rc, j, text = self.s.check()
        self.assertEqual(rc, EXIT_OK, text)
        self.assertEqual(self.s.cr("prove", "--json", "7").json()["leaf_hash"], self.hashes[7].hex())

    def test_l2_index_state_tampered(self):
        con = self.s.db()
        con.execute("UPDATE meta SET value = ? WHERE key = 'head'", (self.c[1].encode(),))
        con.commit()
        con.close()
        problems = self.check_fails()
        self.assertProblem(problems, "index", "(head %s)" % self.c[1][:12])
        r = self.s.cr("status", rc=None)
        self.assertEqual(r.rc, EXIT_VERIFY, r)
        self.assertIn("cleanroom check", r.err)

    def test_l3_prove_does_not_serve_a_tampered_index(self):
        # A proof from a tampered index must not be printed as verified
        # against a root the log never recorded.
        con = self.s.db()
        con.execute("UPDATE events SET leaf = ? WHERE idx = 7", (b"\x11" * 32,))
        con.commit()
        con.close()
        r = self.s.cr("prove", "--json", "7", rc=None)
        if r.rc == 0:
            self.assertEqual(r.json()["root"], self.root, "prove printed a root the log does not hold")
            self.assertEqual(r.json()["leaf_hash"], self.hashes[7].hex())
        else:
            self.assertEqual(r.rc, EXIT_VERIFY, r)

    def test_m_commit_without_trailers(self):
        files = dict(self.s.files_at(self.c[2]))
        files[segment_path(15)] = ("100644", self.s.hash_object(forged_event(1) + b"\n"))
        forged = self.s.commit_tree(self.s.mktree(files), [self.c[2]], "just a commit\n")
        self.s.set_branch(forged)
        problems = self.check_fails()
        self.assertProblem(problems, self.where(forged),
                           "message lacks the Cleanroom trailers (not written by cleanroom)")
        r = self.s.cr("status", rc=None)
        self.assertEqual(r.rc, EXIT_VERIFY, r)
        self.assertIn("commit %s: message lacks the Cleanroom trailers" % forged, r.err)

    def test_m2_commit_without_trailers_below_the_head(self):
        files = dict(self.s.files_at(self.c[2]))
        files[segment_path(15)] = ("100644", self.s.hash_object(forged_event(1) + b"\n"))
        plain = self.s.commit_tree(self.s.mktree(files), [self.c[2]], "just a commit\n")
        self.s.set_branch(plain)
        self.hashes.append(leaf_hash(forged_event(1)))
        self.n += 1
        forged, path = self.new_segment_commit([forged_event(2)])
        problems = self.check_fails()
        self.assertEqual(self.commit_problems(problems), [
            {"where": self.where(plain), "what": "message lacks the Cleanroom trailers (not written by cleanroom)"}])
        self.assertRefusesNormalCommands(why="message lacks the Cleanroom trailers",
                                         points_at_check=False)

    def test_n_message_names_another_segment(self):
        msg = segment_message(15, 1, 16, crtest.mth(self.hashes + [leaf_hash(forged_event(1))]).hex(),
                              path=segment_path(16))
        forged, path = self.new_segment_commit([forged_event(1)], message=msg)
        problems = self.check_fails()
        self.assertProblem(problems, self.where(forged),
                           "adds %s but its message names %s" % (segment_path(15), segment_path(16)))

    def test_o_message_miscounts(self):
        hashes = self.hashes + [leaf_hash(forged_event(i)) for i in (1, 2)]
        msg = segment_message(15, 3, 17, crtest.mth(hashes).hex())
        forged, path = self.new_segment_commit([forged_event(1), forged_event(2)], message=msg)
        problems = self.check_fails()
        self.assertProblem(problems, self.where(forged),
                           "message says segment %s holds leaves 15+3, it holds 15+2" % path)

    def test_p_refusals_point_at_check(self):
        # Every refusal to open a tampered store names `cleanroom check`
        # (the catch-up and head-reading errors included).
        forgeries = {
            "truncated": lambda: self.new_segment_commit(
                [forged_event(1)], data=forged_event(1)),
            "non-canonical": lambda: self.new_segment_commit(
                [forged_event(1).replace(b'"size":1', b'"size": 1')]),
            "no trailers": lambda: self.s.set_branch(self.s.commit_tree(
                self.s.git("rev-parse", self.c[2] + "^{tree}").out.strip(), [self.c[2]], "plain\n")),
            "wrong first leaf": lambda: self.new_segment_commit([forged_event(1)], first=20),
        }
        for name, forge in forgeries.items():
            with self.subTest(name):
                self.s.set_branch(self.c[2])
                forge()
                r = self.s.cr("status", rc=None)
                self.assertIn(r.rc, (1, 3), r)
                self.assertIn("cleanroom check", r.err, r)

    def test_witness_tampered(self):
        # Removing the witness rows makes a consistent forgery undetectable by
        # check; this documents that the witness is what catches case (e).
        con = self.s.db()
        con.execute("UPDATE witness SET root = ? WHERE size = 9", (b"\x22" * 32,))
        con.commit()
        con.close()
        problems = self.check_fails()
        self.assertEqual(problems, [{"where": self.witness(1),
                                     "what": "the commit no longer records the size and root this "
                                             "store wrote"}])

    def test_reflog_shows_the_tampering(self):
        # The repository keeps a reflog: plain git shows where the branch was.
        msg = self.s.message(self.c[2]) + "\nextra\n"
        tree = self.s.git("rev-parse", self.c[2] + "^{tree}").out.strip()
        self.s.set_branch(self.s.commit_tree(tree, [self.c[1]], msg))
        reflog = self.s.git("reflog", "show", "--format=%H", crtest.BRANCH).out.split()
        self.assertEqual(reflog[1:4], list(reversed(self.c)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
