#!/usr/bin/python3
"""The preload hook end to end: each case of tests/hooks/entrypoints.c (and a
small torch program) runs under hookdump, and the events are checked exactly.

Binaries come from the environment, defaulting to the hand build of
tests/hooks/build.sh:
  HOOKDUMP           build-hooks/hookdump
  CLEANROOM_PRELOAD  build-hooks/libcleanroom-preload.so
  ENTRYPOINTS        build-hooks/entrypoints
  STATIC_HELLO       build-hooks/static-hello (a -static binary; skipped if absent)

Every run is also checked for what must hold always: no protocol error, no
dropped record, absolute paths only, nothing under /proc, /sys or /dev, a
HELLO for every process that reported, and each forked child's HELLO naming
its parent.
"""
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("CR_HOOKS_BUILD", os.path.join(ROOT, "build-hooks"))
HOOKDUMP = os.environ.get("HOOKDUMP", os.path.join(BUILD, "hookdump"))
PRELOAD = os.environ.get("CLEANROOM_PRELOAD", os.path.join(BUILD, "libcleanroom-preload.so"))
ENTRY = os.environ.get("ENTRYPOINTS", os.path.join(BUILD, "entrypoints"))
STATIC = os.environ.get("STATIC_HELLO", os.path.join(BUILD, "static-hello"))
PYTHON = "/usr/bin/python3"

OPEN_READ, OPEN_WRITE, OPEN_CREATE, OPEN_TRUNC = 1, 2, 4, 8
WRITTEN_MMAP, WRITTEN_UNLINKED = 1, 2
HELLO_AFTER_EXEC = 1
UNOBS_STATIC, UNOBS_SETUID = 1, 2


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class Run:
    """The events of one command under hookdump."""

    def __init__(self, events, status, stderr):
        self.events = events
        self.status = status
        self.stderr = stderr

    def of(self, ev, **match):
        return [e for e in self.events if e["ev"] == ev and all(e.get(k) == v for k, v in match.items())]

    def hellos(self, pid):
        return self.of("hello", pid=pid)

    def main_pid(self, exe):
        for e in self.events:
            if e["ev"] == "hello" and e["exe"] == exe and e["flags"] & HELLO_AFTER_EXEC:
                return e["pid"]
        raise AssertionError("no HELLO from %s" % exe)


class HookTest(unittest.TestCase):
    def setUp(self):
        for p in (HOOKDUMP, PRELOAD, ENTRY):
            if not os.path.exists(p):
                self.fail("%s missing: run tests/hooks/build.sh" % p)
        self.tmp = tempfile.mkdtemp(prefix="cr-hooks-")
        self.d = os.path.join(self.tmp, "d")
        os.makedirs(os.path.join(self.d, "sub"))
        os.makedirs(os.path.join(self.d, "th"))
        with open(self.p("in.txt"), "w") as f:
            f.write("input data\n")
        for t in range(8):
            for i in range(50):
                with open(os.path.join(self.d, "th", "%d-%d" % (t, i)), "w") as f:
                    f.write("%d-%d\n" % (t, i))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def p(self, name):
        return os.path.join(self.d, name)

    def hook(self, cmd, status=0):
        sock = tempfile.mkdtemp(prefix="s", dir=self.tmp)
        os.chmod(sock, 0o700)
        env = dict(os.environ)
        env["PATH"] = "/usr/bin:/bin"
        for k in ("LD_PRELOAD", "CLEANROOM_SOCKET"):
            env.pop(k, None)
        proc = subprocess.run([HOOKDUMP, "--preload", PRELOAD, sock, "--"] + cmd,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=300)
        text = proc.stdout.decode("utf-8", "surrogateescape")
        events = [json.loads(line) for line in text.splitlines()]
        run = Run(events, proc.returncode, proc.stderr.decode("utf-8", "replace"))
        self.assertEqual(proc.returncode, status, run.stderr)
        self.check_always(run)
        return run

    def entry(self, case, *extra, status=0):
        return self.hook([ENTRY, case, self.d] + list(extra), status=status)

    def check_always(self, run):
        ev = run.events
        self.assertEqual(ev[-1]["ev"], "done", ev[-3:])
        self.assertEqual(ev[-1]["errors"], 0, [e for e in ev if e["ev"] == "error"])
        self.assertEqual(run.of("error"), [])
        for e in run.of("closed"):
            self.assertEqual(e["dropped"], 0, e)
        reported = {e["pid"] for e in ev if e["ev"] not in ("done", "closed")}
        hello_pids = {e["pid"] for e in run.of("hello")}
        self.assertLessEqual(reported, hello_pids, "a process reported without HELLO")
        for e in ev:
            for k in ("path", "path2"):
                if k in e and e["ev"] != "written":
                    self.assertTrue(e[k].startswith("/"), e)
                if k in e and e["ev"] in ("open", "written"):
                    self.assertIsNone(re.match(r"/(proc|sys|dev)(/|$)", e[k]), e)
        # A forked child's first HELLO (not after exec) names the forking process.
        for f in run.of("fork"):
            first = [h for h in run.hellos(f["child"]) if not h["flags"] & HELLO_AFTER_EXEC]
            for h in first:
                self.assertEqual(h["ppid"], f["pid"], (f, h))

    def written_for(self, run, path):
        return [e for e in run.of("written") if e["path"] == path]

    def assert_written_final(self, run, path, flags=None, count=None):
        w = self.written_for(run, path)
        self.assertTrue(w, "no WRITTEN for %s" % path)
        if count is not None:
            self.assertEqual(len(w), count, w)
        want = sha256_file(path)
        for e in w:
            self.assertEqual(e["sha256"], want, e)
            if flags is not None:
                self.assertEqual(e["flags"], flags, e)
        return w

    # ---- opens ----------------------------------------------------------------

    def test_opens_every_entry_point(self):
        run = self.entry("opens")
        pid = run.main_pid(ENTRY)
        opens = run.of("open", pid=pid)
        # open open64 openat openat64(dirfd) __open_2 __open64_2 __openat_2(dirfd)
        # __openat64_2, fortified open, relative after chdir, relative after fchdir
        self.assertEqual(len(opens), 11, opens)
        st = os.stat(self.p("in.txt"))
        for e in opens:
            self.assertEqual(e["path"], self.p("in.txt"))
            self.assertEqual(e["flags"], OPEN_READ)
            self.assertEqual((e["ino"], e["size"]), (st.st_ino, st.st_size))
        # /proc, /sys, /dev, /dev/shm: never reported (check_always), not even written.
        self.assertEqual(run.of("written"), [])

    def test_creat(self):
        run = self.entry("creat")
        for name in ("c1", "c2"):
            o = run.of("open", path=self.p(name))
            self.assertEqual(len(o), 1)
            self.assertEqual(o[0]["flags"], OPEN_WRITE | OPEN_CREATE | OPEN_TRUNC)
            self.assert_written_final(run, self.p(name), flags=0, count=1)

    def test_fopen_freopen_and_streams_left_open(self):
        run = self.entry("fopen")
        self.assertEqual(len(run.of("open", path=self.p("in.txt"), flags=OPEN_READ)), 1)
        for name in ("f1", "f3", "f4", "f6"):
            self.assert_written_final(run, self.p(name), count=1)
        self.assertEqual(run.of("open", path=self.p("f6"))[0]["flags"],
                         OPEN_READ | OPEN_WRITE | OPEN_CREATE)
        # Never fclose'd: flushed and reported at exit.
        w = self.assert_written_final(run, self.p("f5"), count=1)
        self.assertEqual(w[0]["sha256"], sha256(b"left open at exit"))
        self.assertEqual(self.written_for(run, self.p("f1"))[0]["sha256"],
                         sha256(b"fopen64 content\n"))

    def test_tmpfile_and_mkstemp_family(self):
        run = self.entry("tmp")
        tmpw = [e for e in run.of("written") if e["path"].startswith("/tmp/#")]
        self.assertEqual(len(tmpw), 2, tmpw)
        self.assertEqual(sorted(e["sha256"] for e in tmpw),
                         sorted([sha256(b"tmpfile"), sha256(b"tmpfile64")]))
        for e in tmpw:
            self.assertEqual(e["flags"], WRITTEN_UNLINKED)
        names = sorted(os.listdir(self.d))
        for i in range(8):
            pat = r"mk%d-[A-Za-z0-9]{6}%s$" % (i, r"\.sfx" if i >= 4 else "")
            found = [n for n in names if re.match(pat, n)]
            self.assertEqual(len(found), 1, (pat, names))
            path = self.p(found[0])
            o = run.of("open", path=path)
            self.assertEqual(len(o), 1)
            self.assertEqual(o[0]["flags"], OPEN_READ | OPEN_WRITE | OPEN_CREATE)
            w = self.assert_written_final(run, path, count=1)
            self.assertEqual(w[0]["sha256"], sha256(b"mk%d" % i))

    # ---- descriptors ----------------------------------------------------------

    def test_dups_report_once_at_last_close(self):
        run = self.entry("dups")
        w = self.assert_written_final(run, self.p("d1"), count=1)
        self.assertEqual(w[0]["sha256"], sha256(b"abcdef"))
        # close_range(3, ~0) reports d2 and spares the hook's own socket:
        # d3, written afterwards, still arrives.
        self.assert_written_final(run, self.p("d2"), count=1)
        self.assert_written_final(run, self.p("d3"), count=1)

    def test_rename_followed(self):
        run = self.entry("rename")
        # Renamed while open: WRITTEN carries the final name.
        self.assert_written_final(run, self.p("r1.final"), count=1)
        self.assertEqual(self.written_for(run, self.p("r1.tmp")), [])
        r = run.of("rename", path=self.p("r1.tmp"))
        self.assertEqual(r[0]["path2"], self.p("r1.final"))
        # Closed, then renamed: WRITTEN under the temporary name, then RENAME.
        w = self.written_for(run, self.p("r2.tmp"))
        self.assertEqual(len(w), 1)
        self.assertEqual(w[0]["sha256"], sha256_file(self.p("r2.final")))
        r = run.of("rename", path=self.p("r2.tmp"))
        self.assertEqual(r[0]["path2"], self.p("r2.final"))
        # renameat2 with RENAME_NOREPLACE: flags travel in the record.
        r = run.of("rename", path=self.p("r3.tmp"))
        self.assertEqual((r[0]["path2"], r[0]["flags"]), (self.p("r3.final"), 1))
        self.assert_written_final(run, self.p("r3.final"), count=1)

    def test_link_unlink(self):
        run = self.entry("link")
        links = [(e["path"], e["path2"]) for e in run.of("link")]
        self.assertIn((self.p("l1"), self.p("l2")), links)
        self.assertIn((self.p("l2"), self.p("l3")), links)
        self.assertEqual(sorted(e["path"] for e in run.of("unlink")), [self.p("l1"), self.p("l2")])
        # The O_TMPFILE made visible with linkat(AT_EMPTY_PATH).
        st = os.stat(self.p("tmp-linked"))
        tl = [e for e in run.of("link") if e["path2"] == self.p("tmp-linked")]
        self.assertEqual(len(tl), 1)
        w = [e for e in run.of("written") if e["ino"] == st.st_ino]
        self.assertEqual(len(w), 1)
        self.assertEqual(w[0]["sha256"], sha256(b"tmpfile linked"))
        self.assertEqual(w[0]["path"], tl[0]["path"])

    def test_truncate(self):
        run = self.entry("truncate")
        self.assertEqual(len(run.of("truncate", path=self.p("t1"))), 2)

    def test_mmap_writes(self):
        run = self.entry("mmap")
        # The recorder hashes when a message arrives: the report at close
        # (before the writes through the mapping) may see either content.
        # The last report of each file must see the final one.
        m1 = self.written_for(run, self.p("m1"))
        self.assertEqual([e["flags"] for e in m1], [0, WRITTEN_MMAP, WRITTEN_MMAP])  # close, msync, munmap
        self.assertEqual(m1[-1]["sha256"], sha256_file(self.p("m1")))
        m2 = self.written_for(run, self.p("m2"))
        self.assertEqual([e["flags"] for e in m2], [WRITTEN_MMAP, 0])  # munmap, close
        self.assertEqual(m2[-1]["sha256"], sha256_file(self.p("m2")))
        with open(self.p("m1"), "rb") as f:
            self.assertTrue(f.read().startswith(b"Written through a shared mapping"))

    # ---- processes --------------------------------------------------------------

    def test_fork(self):
        run = self.entry("fork")
        pid = run.main_pid(ENTRY)
        forks = run.of("fork", pid=pid)
        self.assertEqual(len(forks), 1)
        child = forks[0]["child"]
        h = run.hellos(child)
        self.assertEqual(len(h), 1)
        self.assertEqual((h[0]["flags"], h[0]["ppid"]), (0, pid))
        self.assertEqual(len(run.of("open", pid=child, path=self.p("in.txt"))), 1)
        self.assertEqual(len(run.of("open", pid=pid, path=self.p("in.txt"))), 1)
        w = self.assert_written_final(run, self.p("child.txt"), count=1)
        self.assertEqual(w[0]["pid"], child)
        self.assertEqual(run.of("exit", pid=child)[0]["status"], 0)

    def test_vfork_then_exec(self):
        run = self.entry("vfork")
        pid = run.main_pid(ENTRY)
        child = run.of("fork", pid=pid)[0]["child"]
        flags = sorted(h["flags"] for h in run.hellos(child))
        self.assertEqual(flags, [0, HELLO_AFTER_EXEC])
        ex = run.of("exec", pid=child)
        self.assertEqual((ex[0]["path"], ex[0]["argv"]), ("/bin/cat", ["cat", self.p("in.txt")]))
        after = [h for h in run.hellos(child) if h["flags"] & HELLO_AFTER_EXEC][0]
        self.assertEqual((after["exe"], after["ppid"]), ("/usr/bin/cat", pid))
        self.assertEqual(len(run.of("open", pid=child, path=self.p("in.txt"))), 1)

    def test_clone_and__Fork_children_reset(self):
        run = self.entry("clone")
        pid = run.main_pid(ENTRY)
        forks = run.of("fork", pid=pid)
        self.assertEqual(len(forks), 2)
        for f in forks:
            h = run.hellos(f["child"])
            self.assertEqual([(x["flags"], x["ppid"]) for x in h], [(0, pid)])
            self.assertEqual(len(run.of("open", pid=f["child"], path=self.p("in.txt"))), 1)
        self.assertEqual(self.written_for(run, self.p("child.txt"))[0]["pid"], forks[0]["child"])

    def test_posix_spawn(self):
        run = self.entry("spawn")
        pid = run.main_pid(ENTRY)
        spawns = run.of("spawn", pid=pid)
        self.assertEqual([s["path"] for s in spawns], ["/bin/cat", "/usr/bin/cat"])
        for s in spawns:
            h = run.hellos(s["child"])
            self.assertEqual([(x["flags"], x["ppid"], x["exe"]) for x in h],
                             [(HELLO_AFTER_EXEC, pid, "/usr/bin/cat")])
            self.assertEqual(len(run.of("open", pid=s["child"], path=self.p("in.txt"))), 1)

    def _shell_child_reads(self, case):
        run = self.entry(case)
        pid = run.main_pid(ENTRY)
        sh = [h for h in run.of("hello") if h["exe"] == "/usr/bin/dash" and h["ppid"] == pid]
        self.assertEqual(len(sh), 1, run.of("hello"))
        cats = [h["pid"] for h in run.of("hello") if h["exe"] == "/usr/bin/cat"]
        self.assertEqual(len(cats), 1)
        self.assertEqual(len(run.of("open", pid=cats[0], path=self.p("in.txt"))), 1)

    def test_system_after_env_scrubbed(self):
        self._shell_child_reads("system")

    def test_popen_after_env_scrubbed(self):
        self._shell_child_reads("popen")

    def test_every_exec_variant_and_empty_env(self):
        run = self.entry("execs")
        pid = run.main_pid(ENTRY)
        children = [f["child"] for f in run.of("fork", pid=pid)]
        self.assertEqual(len(children), 9)
        for c in children:
            ex = run.of("exec", pid=c)
            self.assertEqual(len(ex), 1, c)
            self.assertEqual(ex[0]["argv"], ["cat", self.p("in.txt")])
            self.assertIn(ex[0]["path"], ("/bin/cat", "/usr/bin/cat"))
            # Empty or hostile environments (env -i, LD_PRELOAD=) still carry the hook.
            after = [h for h in run.hellos(c) if h["flags"] & HELLO_AFTER_EXEC]
            self.assertEqual(len(after), 1, c)
            self.assertEqual(len(run.of("open", pid=c, path=self.p("in.txt"))), 1, c)
        self.assertEqual(run.of("unobserved"), [])

    def test_failed_exec_keeps_errno(self):
        run = self.entry("failed-exec")
        self.assertEqual(len(run.of("exec", path=self.p("does-not-exist"))), 1)

    def test_threads(self):
        run = self.entry("threads")
        pid = run.main_pid(ENTRY)
        opens = [e for e in run.of("open", pid=pid) if "/th/" in e["path"]]
        self.assertEqual(len(opens), 400)
        self.assertEqual(len({e["path"] for e in opens}), 400)
        tids = {e["tid"] for e in opens}
        self.assertEqual(len(tids), 8)
        self.assertNotIn(pid, tids)
        for t in range(8):
            w = self.assert_written_final(run, self.p("th-out-%d" % t), count=1)
            self.assertIn(w[0]["pid"], (pid,))

    def test_static_binary_unobserved(self):
        if not os.path.exists(STATIC):
            self.skipTest("no static binary (libc.a missing at build time)")
        run = self.entry("exec-path", STATIC)
        u = run.of("unobserved")
        self.assertEqual(len(u), 1)
        self.assertEqual((u[0]["path"], u[0]["flags"] & UNOBS_STATIC), (STATIC, UNOBS_STATIC))
        self.assertEqual(len(run.of("exec", path=STATIC)), 1)
        self.assertEqual([h for h in run.of("hello") if h["exe"] == STATIC], [])

    def test_setuid_binary_unobserved(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to make a setuid copy owned by another user")
        suid = os.path.join(self.tmp, "suid-id")
        shutil.copy("/usr/bin/id", suid)
        os.chown(suid, pwd.getpwnam("nobody").pw_uid, -1)
        os.chmod(suid, 0o4755)
        run = self.entry("exec-path", suid)
        u = run.of("unobserved")
        self.assertEqual(len(u), 1)
        self.assertEqual((u[0]["path"], u[0]["flags"]), (suid, UNOBS_SETUID))
        # The loader ran it in secure mode: no HELLO from it.
        self.assertEqual([h for h in run.of("hello") if h["exe"] == suid], [])

    def test_exit_status(self):
        run = self.entry("exit", status=7)
        self.assertEqual([e["status"] for e in run.of("exit")], [7])
        self.assertEqual(run.events[-1]["status"], 7)

    # ---- Python --------------------------------------------------------------------

    def test_python_torch_dataloader_and_save(self):
        probe = subprocess.run([PYTHON, "-c", "import torch, numpy"], capture_output=True)
        if probe.returncode != 0:
            self.skipTest("python3-torch/numpy not importable")
        import numpy as np  # only here: the rest of the suite is stdlib

        n = 12
        os.makedirs(self.p("samples"))
        for i in range(n):
            with open(os.path.join(self.d, "samples", "s%02d.bin" % i), "wb") as f:
                f.write(b"x" * (i + 1))
        with open(self.p("config.txt"), "w") as f:
            f.write("lr=0.1\n")
        np.save(self.p("arr.npy"), np.arange(4, dtype=np.float32))
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_case.py")
        run = self.hook([PYTHON, script, self.d, str(n)])
        pid = run.main_pid(PYTHON if os.path.realpath(PYTHON) == PYTHON else os.path.realpath(PYTHON))
        self.assertEqual(len(run.of("open", pid=pid, path=self.p("config.txt"))), 1)
        self.assertEqual(len(run.of("open", pid=pid, path=self.p("arr.npy"))), 1)
        workers = {f["child"] for f in run.of("fork", pid=pid)}
        self.assertGreaterEqual(len(workers), 2)
        readers = set()
        for i in range(n):
            path = os.path.join(self.d, "samples", "s%02d.bin" % i)
            o = run.of("open", path=path)
            self.assertEqual(len(o), 1, path)
            self.assertIn(o[0]["pid"], workers, "sample read outside a worker")
            readers.add(o[0]["pid"])
        self.assertEqual(len(readers), 2)
        for w in readers:
            h = run.hellos(w)
            self.assertEqual([(x["flags"], x["ppid"]) for x in h], [(0, pid)])
        w = self.assert_written_final(run, self.p("model.pt"), count=1)
        self.assertEqual(w[0]["pid"], pid)
        self.assertEqual(w[0]["flags"], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
