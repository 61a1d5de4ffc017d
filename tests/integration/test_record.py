"""`cleanroom record` on real training runs: the reference PyTorch workload
(forked DataLoader workers, torch.save every epoch, a hand-written safetensors
file), exit statuses, signals, crashes, and the Python marks API.

Needs /usr/bin/python3 with torch, numpy and sklearn (scripts/setup.sh), and
the reference workload: $CR_WORKLOAD, else ../shared/workload next to the
repository, else the project's own example (examples/digits).
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402

SRC = os.environ.get("CR_SOURCE_DIR",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
PY = "/usr/bin/python3"


def workload():
    for d in (os.environ.get("CR_WORKLOAD"), os.path.join(SRC, "..", "shared", "workload")):
        if d and os.path.exists(os.path.join(d, "train.py")):
            return os.path.realpath(d), "reference"
    return os.path.join(SRC, "examples", "digits"), "example"


def events_of(store, run=None):
    evs = store.events()
    return [e["event"] | {"_index": e["index"]} for e in evs
            if run is None or e["event"].get("run") == run]


class RecordWorkload(crtest.TestCase):
    """One recorded run of the reference workload, checked from every side."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import tempfile
        cls.dir = os.path.realpath(tempfile.mkdtemp(prefix="cr-rec-"))
        wl, kind = workload()
        cls.data = os.path.join(cls.dir, "data")
        cls.ckpt = os.path.join(cls.dir, "ckpt")
        n = 2500
        r = crtest.run([PY, os.path.join(wl, "make_data.py"), str(n), cls.data])
        assert r.rc == 0, r
        cls.store = crtest.Store(os.path.join(cls.dir, "store"))
        args = [PY, os.path.join(wl, "train.py"), "--data", cls.data, "--out", cls.ckpt,
                "--epochs", "2", "--workers", "2"]
        if kind == "reference":
            args += ["--batch", "128"]
        cls.rec = crtest.cleanroom("record", "--json", "--data", cls.data, "--", *args,
                                   store=cls.store.path, timeout=900)
        cls.files = {}
        for root, _, names in os.walk(cls.data):
            for name in names:
                p = os.path.join(root, name)
                cls.files[p] = crtest.file_sha256(p)

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.dir, True)

    def setUp(self):
        pass

    def test_exit_and_summary(self):
        self.assertEqual(self.rec.rc, 0, self.rec)
        summary = json.loads(self.rec.out.strip().splitlines()[-1])
        self.assertEqual(summary["exit_status"], 0)
        self.assertEqual(summary["inputs"], len(self.files))
        self.assertEqual(summary["checkpoints"], 3)
        self.assertEqual(summary["unobserved"], 0, summary)

    def test_every_input_once_with_true_hash(self):
        evs = events_of(self.store)
        inputs = [e for e in evs if e["type"] == "input"]
        paths = [e["path"] for e in inputs]
        self.assertEqual(len(paths), len(set(paths)), "an input recorded twice")
        self.assertEqual(set(paths), set(self.files))
        for e in inputs:
            self.assertEqual(e["sha256"], self.files[e["path"]], e["path"])
            self.assertEqual(e["size"], os.path.getsize(e["path"]))
            self.assertNotIn("changed", e)

    def test_checkpoints_with_true_hash(self):
        evs = events_of(self.store)
        ck = {e["path"]: e for e in evs if e["type"] == "checkpoint"}
        want = [os.path.join(self.ckpt, n) for n in ("epoch-1.pt", "epoch-2.pt", "model.safetensors")]
        self.assertEqual(sorted(ck), sorted(want))
        for p in want:
            self.assertEqual(ck[p]["sha256"], crtest.file_sha256(p), p)
            self.assertEqual(ck[p]["size"], os.path.getsize(p))

    def test_reads_attributed_to_workers(self):
        evs = events_of(self.store)
        procs = {e["pid"]: e for e in evs if e["type"] == "process"}
        start = [e for e in evs if e["type"] == "run_start"][0]
        main = [p for p in procs.values() if p["via"] == "exec"]
        self.assertTrue(main, procs)
        main_pid = main[0]["pid"]
        workers = {pid for pid, p in procs.items() if p["ppid"] == main_pid and p["via"] == "fork"}
        self.assertGreaterEqual(len(workers), 2, procs)
        for e in evs:
            if e["type"] != "input":
                continue
            if e["path"].endswith("labels.csv"):
                self.assertEqual(e["pid"], main_pid)
            else:
                self.assertIn(e["pid"], workers, e)
        self.assertEqual(start["argv"][0], PY)

    def test_lineage_intervals(self):
        evs = events_of(self.store)
        idx = {e["_index"]: e for e in evs}
        inputs = {e["_index"] for e in evs if e["type"] == "input"}
        samples = {i for i in inputs if not idx[i]["path"].endswith("labels.csv")}
        ck = [e for e in evs if e["type"] == "checkpoint"]
        ck.sort(key=lambda e: e["_index"])

        def covered(lin):
            s = set()
            for a, b in lin["inputs"]:
                s.update(range(a, b + 1))
            return s

        e1, e2, final = ck
        self.assertTrue(e1["path"].endswith("epoch-1.pt"))
        self.assertEqual(covered(e1["lineage"]), inputs)      # labels.csv + every sample
        self.assertIsNone(e1["lineage"]["previous"])
        self.assertEqual(covered(e2["lineage"]), samples)     # every sample again
        self.assertEqual(e2["lineage"]["reads"], len(samples))
        self.assertEqual(e2["lineage"]["previous"], e1["_index"])
        self.assertEqual(sum(e2["lineage"]["readers"].values()), len(samples))
        self.assertEqual(final["lineage"]["input_count"], 0)
        self.assertEqual(final["lineage"]["previous"], e2["_index"])
        # Every input event precedes the checkpoint that lists it.
        for c in ck:
            for a, b in c["lineage"]["inputs"]:
                self.assertLess(b, c["_index"])
        r = self.store.cr("lineage", "--json", os.path.join(self.ckpt, "epoch-2.pt"))
        out = r.json()
        self.assertEqual(out["index"], e2["_index"])
        self.assertEqual(out["lineage"], e2["lineage"])
        r = self.store.cr("lineage", "--json", "--inputs", e2["sha256"])
        self.assertEqual({i["index"] for i in r.json()["inputs"]}, samples)

    def test_run_events_and_check(self):
        evs = events_of(self.store)
        types = [e["type"] for e in evs]
        self.assertEqual(types[0], "run_start")
        self.assertEqual(types[-1], "run_end")
        self.assertEqual(evs[-1]["exit_status"], 0)
        env = [e for e in evs if e["type"] == "environment"][0]
        env_paths = {f["path"] for f in env["files"]}
        self.assertTrue(any(p.endswith("train.py") for p in env_paths), "the script is environment")
        self.assertTrue(any("/torch/" in p for p in env_paths))
        self.assertFalse(env_paths & set(self.files), "data mixed into the environment")
        self.assertFalse(any(p.startswith("/dev/shm") for p in env_paths))
        r = self.store.cr("check")
        self.assertIn("OK", r.out)
        for k in os.environ:
            if crtest_secret(k):
                self.assertNotIn(k, evs[0]["env"])


def crtest_secret(name):
    return any(w in name.upper() for w in ("TOKEN", "KEY", "SECRET", "PASSWORD"))


class RecordBehaviour(crtest.TestCase):

    def test_exit_status_passed_on(self):
        s = self.new_store()
        r = s.cr("record", "--quiet", "--", "sh", "-c", "exit 7", rc=None)
        self.assertEqual(r.rc, 7, r)
        end = [e for e in events_of(s) if e["type"] == "run_end"][-1]
        self.assertEqual(end["exit_status"], 7)
        r = s.cr("record", "--quiet", "--", "/nonexistent/program", rc=None)
        self.assertEqual(r.rc, 127, r)
        self.assertIn("/nonexistent/program", r.err)
        s.cr("check")

    def test_secrets_never_recorded(self):
        s = self.new_store()
        env = {"PYTHONHASHSEED": "0", "HF_TOKEN": "hf_sekrit_value", "WANDB_API_KEY": "wb_sekrit"}
        s.cr("record", "--quiet", "--", "true", env=env)
        start = [e for e in events_of(s) if e["type"] == "run_start"][-1]
        self.assertEqual(start["env"].get("PYTHONHASHSEED"), "0")
        self.assertNotIn("HF_TOKEN", start["env"])
        self.assertIn("HF_TOKEN", start["env_redacted"])
        raw = open(os.path.join(s.path, "log.git", "HEAD")).read()  # noqa: F841 (touch the repo)
        leaves = s.cr("log", "--export-leaves", "-").outb
        self.assertNotIn(b"sekrit", leaves)

    def test_signal_forwarded(self):
        s = self.new_store()
        marker = os.path.join(self.tmp, "got-sigint")
        script = ("import signal, sys, time\n"
                  "def h(n, f):\n"
                  "    open(%r, 'w').write('yes')\n"
                  "    sys.exit(42)\n"
                  "signal.signal(signal.SIGINT, h)\n"
                  "print('ready', flush=True)\n"
                  "time.sleep(60)\n" % marker)
        p = subprocess.Popen([crtest.CLEANROOM, "record", "--store", s.path, "--quiet", "--",
                              PY, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(p.stdout.readline().strip(), b"ready")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 42, err)
        self.assertTrue(os.path.exists(marker))
        s.cr("check")

    def test_nice_lowers_the_recorder_not_the_command(self):
        s = self.new_store()
        data = os.path.join(self.tmp, "data")
        crtest.make_files(data, 2)
        ck = os.path.join(self.tmp, "model.pt")
        # The command writes a checkpoint and reads data (so that the hashing
        # thread and the checkpoint thread each get a job), then watches its
        # parent's threads until the recorder has lowered itself.
        script = ("import glob, json, os, sys, time\n"
                  "open(%r, 'wb').write(b'weights')\n"
                  "for p in sorted(glob.glob(%r + '/*')):\n"
                  "    open(p, 'rb').read()\n"
                  "rec = os.getppid()\n"
                  "def threads():\n"
                  "    out = {}\n"
                  "    for t in os.listdir('/proc/%%d/task' %% rec):\n"
                  "        st = open('/proc/%%d/task/%%s/stat' %% (rec, t)).read()\n"
                  "        comm = st[st.index('(') + 1:st.rindex(')')]\n"
                  "        f = st[st.rindex(')') + 2:].split()\n"
                  "        out[t] = (comm, int(f[16]), int(f[38]))\n"
                  "    return out\n"
                  "end = time.time() + 30\n"
                  "while True:\n"
                  "    th = threads()\n"
                  "    names = {t[0] for t in th.values()}\n"
                  "    me = os.getpriority(os.PRIO_PROCESS, 0)\n"
                  "    hashers = [(n, p) for c, n, p in th.values() if c == 'cr-hash']\n"
                  "    lowered = {'lower': all(n > me for n, p in hashers),\n"
                  "               'idle': all(p == os.SCHED_IDLE for n, p in hashers),\n"
                  "               'same': True}[sys.argv[1]]\n"
                  "    if ('cr-ckpt' in names and lowered or\n"
                  "        time.time() > end):\n"
                  "        break\n"
                  "    time.sleep(0.05)\n"
                  "print(json.dumps({'me': os.getpriority(os.PRIO_PROCESS, 0), 'rec': rec,\n"
                  "                  'threads': th}))\n" % (ck, data))
        base = os.getpriority(os.PRIO_PROCESS, 0)
        if base > 19 - 5:
            self.skipTest("the tests already run at nice %d" % base)
        r = s.cr("record", "--quiet", "--jobs", "1", "--nice", "5", "--data", data, "--",
                 PY, "-c", script, "lower")
        got = json.loads(r.out)
        self.assertEqual(got["me"], base, "the command keeps its priority")
        th = got["threads"]
        self.assertEqual(th[str(got["rec"])][1:], [base + 5, os.SCHED_OTHER], th)
        hashers = [t[1:] for t in th.values() if t[0] == "cr-hash"]
        self.assertEqual(hashers, [[base + 5, os.SCHED_OTHER]], th)
        ckpt = [t[1:] for t in th.values() if t[0] == "cr-ckpt"]
        self.assertEqual(ckpt, [[base, os.SCHED_OTHER]], th)
        evs = events_of(s)
        self.assertEqual(len([e for e in evs if e["type"] == "input"]), 2)
        self.assertEqual(len([e for e in evs if e["type"] == "checkpoint"]), 1)
        # The default: hashing at SCHED_IDLE, the main thread 10 lower, the
        # checkpoint thread as the command.
        r = s.cr("record", "--quiet", "--jobs", "1", "--data", data, "--",
                 PY, "-c", script, "idle")
        got = json.loads(r.out)
        self.assertEqual(got["me"], base)
        self.assertEqual(os.sched_getscheduler(0), os.SCHED_OTHER)
        th = got["threads"]
        self.assertEqual(th[str(got["rec"])][1:], [min(base + 10, 19), os.SCHED_OTHER], th)
        self.assertEqual([t[2] for t in th.values() if t[0] == "cr-hash"], [os.SCHED_IDLE], th)
        self.assertEqual([t[1:] for t in th.values() if t[0] == "cr-ckpt"],
                         [[base, os.SCHED_OTHER]], th)
        # --nice 0 leaves the recorder as it is; out-of-range values are refused.
        r = s.cr("record", "--quiet", "--jobs", "1", "--nice", "0", "--data", data, "--",
                 PY, "-c", script, "same")
        got = json.loads(r.out)
        self.assertEqual({tuple(t[1:]) for t in got["threads"].values()},
                         {(base, os.SCHED_OTHER)}, got)
        r = s.cr("record", "--nice", "20", "--", "true", rc=None)
        self.assertEqual(r.rc, 2, r)
        self.assertIn("--nice", r.err)

    def test_crash_keeps_everything_before_it(self):
        s = self.new_store()
        data = os.path.join(self.tmp, "data")
        files = crtest.make_files(data, 40)
        script = ("import os, glob\n"
                  "for p in sorted(glob.glob(%r + '/*')):\n"
                  "    open(p, 'rb').read()\n"
                  "os.abort()\n" % data)
        r = s.cr("record", "--quiet", "--data", data, "--", PY, "-c", script, rc=None)
        self.assertEqual(r.rc, 128 + signal.SIGABRT, r)
        evs = events_of(s)
        got = {e["path"]: e["sha256"] for e in evs if e["type"] == "input"}
        self.assertEqual(got, {p: hashlib.sha256(b).hexdigest() for p, b in files.items()})
        end = [e for e in evs if e["type"] == "run_end"][-1]
        self.assertEqual(end["signal"], signal.SIGABRT)
        s.cr("check")

    def test_python_marks(self):
        s = self.new_store()
        data = os.path.join(self.tmp, "data")
        os.makedirs(data)
        extra = os.path.join(self.tmp, "extra.bin")
        with open(extra, "wb") as f:
            f.write(b"licensed extra data")
        ck = os.path.join(self.tmp, "model.ckpt")
        script = ("import sys; sys.path.insert(0, %r)\n"
                  "import cleanroom\n"
                  "assert cleanroom.active()\n"
                  "cleanroom.input(%r, source='vendor-x', licence='CC-BY-4.0')\n"
                  "open(%r, 'wb').write(b'weights')\n"
                  "cleanroom.checkpoint(%r, step=3, metrics={'loss': 0.25})\n"
                  "cleanroom.note(phase='fine-tune', lr=3e-4, big=2**60)\n"
                  % (os.path.join(SRC, "hooks", "python"), extra, ck, ck))
        s.cr("record", "--quiet", "--data", data, "--", PY, "-c", script)
        evs = events_of(s)
        inp = [e for e in evs if e["type"] == "input"]
        self.assertEqual(len(inp), 1)
        self.assertEqual(inp[0]["path"], extra)
        self.assertEqual(inp[0]["labels"], {"source": "vendor-x", "licence": "CC-BY-4.0"})
        self.assertEqual(inp[0]["sha256"], hashlib.sha256(b"licensed extra data").hexdigest())
        cks = [e for e in evs if e["type"] == "checkpoint"]
        self.assertEqual(len(cks), 1)
        self.assertEqual(cks[0]["sha256"], hashlib.sha256(b"weights").hexdigest())
        marks = [e for e in evs if e["type"] == "checkpoint_mark"]
        self.assertEqual(len(marks), 1)
        self.assertEqual(marks[0]["checkpoint"], cks[0]["_index"])
        self.assertEqual(marks[0]["marks"], {"step": 3, "metrics": {"loss": "0.25"}})
        note = [e for e in evs if e["type"] == "note"][0]
        self.assertEqual(note["fields"], {"phase": "fine-tune", "lr": "0.0003",
                                          "big": str(2 ** 60)})
        s.cr("check")

    def test_python_marks_outside_a_run(self):
        r = crtest.run([PY, "-c", "import sys; sys.path.insert(0, %r)\n"
                        "import cleanroom\n"
                        "print(cleanroom.active(), cleanroom.note(a=1), cleanroom.note(b=2))"
                        % os.path.join(SRC, "hooks", "python")],
                       env={"CLEANROOM_SOCKET": ""})
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.out.strip(), "False False False")
        self.assertEqual(r.err.count("not running under `cleanroom record`"), 1, r.err)

    def test_rename_to_checkpoint_name(self):
        s = self.new_store()
        final = os.path.join(self.tmp, "out", "w.safetensors")
        os.makedirs(os.path.dirname(final))
        script = ("import os\n"
                  "tmp = %r + '.tmp'\n"
                  "open(tmp, 'wb').write(b'tensor bytes')\n"
                  "os.rename(tmp, %r)\n" % (final, final))
        s.cr("record", "--quiet", "--", PY, "-c", script)
        cks = [e for e in events_of(s) if e["type"] == "checkpoint"]
        self.assertEqual([c["path"] for c in cks], [final])
        self.assertEqual(cks[0]["sha256"], hashlib.sha256(b"tensor bytes").hexdigest())


if __name__ == "__main__":
    unittest.main()
