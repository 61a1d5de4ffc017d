"""Shared helpers for the cleanroom integration tests (Python 3 stdlib only).

The tests drive the real CLI (env CLEANROOM, default /work/main/build/cleanroom)
on stores in temporary folders, look at the store's log.git with plain git
(GIT_DIR=<store>/log.git), and recompute everything that can be recomputed
(RFC 9162 roots, inclusion and consistency proofs, SHA-256 of files) in pure
Python so that a wrong answer from the binary fails a test.
"""
import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import unittest

CLEANROOM = os.environ.get("CLEANROOM", "/work/main/build/cleanroom")
BRANCH = "refs/heads/main"

# Exit codes documented by `cleanroom --help`.
EXIT_OK, EXIT_VERIFY, EXIT_USAGE, EXIT_ENV = 0, 1, 2, 3


# ---------------------------------------------------------------- processes --

class Result:
    """Outcome of one CLI or git run; out/err are str (surrogateescape)."""

    def __init__(self, args, rc, outb, errb):
        self.args = args
        self.rc = rc
        self.outb = outb
        self.out = outb.decode("utf-8", "surrogateescape")
        self.err = errb.decode("utf-8", "surrogateescape")

    def json(self):
        return json.loads(self.out)

    def json_lines(self):
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def __repr__(self):
        return "Result(args=%r, rc=%r, out=%r, err=%r)" % (
            self.args, self.rc, self.out[-2000:], self.err[-2000:])


def _env(extra=None):
    env = dict(os.environ)
    env.pop("CLEANROOM_STORE", None)
    # Keep the user's git configuration out of the tests.
    env.update({
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "forger", "GIT_AUTHOR_EMAIL": "forger@example.invalid",
        "GIT_COMMITTER_NAME": "forger", "GIT_COMMITTER_EMAIL": "forger@example.invalid",
        "LC_ALL": "C",
    })
    if extra:
        env.update(extra)
    return env


def run(argv, input=None, env=None, timeout=600, cwd=None):
    p = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=_env(env), timeout=timeout, cwd=cwd)
    return Result(argv, p.returncode, p.stdout, p.stderr)


def cleanroom(*args, store=None, **kw):
    """Run `cleanroom CMD [--store STORE] ARGS...`."""
    argv = [CLEANROOM]
    if args:
        argv.append(args[0])
        if store is not None:
            argv += ["--store", store]
        argv += list(args[1:])
    return run(argv, **kw)


# ------------------------------------------------------------------- Merkle --

def sha256(b):
    return hashlib.sha256(b).digest()


def leaf_hash(leaf):
    return sha256(b"\x00" + leaf)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


EMPTY_ROOT = sha256(b"")


def _split(n):
    """Largest power of two strictly less than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(hashes, lo=0, hi=None):
    """RFC 9162 2.1.1 MTH over leaf hashes[lo:hi]."""
    if hi is None:
        hi = len(hashes)
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[lo]
    k = _split(n)
    return node_hash(mth(hashes, lo, lo + k), mth(hashes, lo + k, hi))


def all_roots(hashes):
    """Root of every prefix: result[n] = MTH(hashes[:n]) (compact-range fold)."""
    roots = [EMPTY_ROOT]
    stack = []  # (height, hash), perfect subtrees left to right
    for h in hashes:
        height = 0
        while stack and stack[-1][0] == height:
            h = node_hash(stack.pop()[1], h)
            height += 1
        stack.append((height, h))
        acc = None
        for _, sub in reversed(stack):
            acc = sub if acc is None else node_hash(sub, acc)
        roots.append(acc)
    return roots


def inclusion_path(hashes, m, lo=0, hi=None):
    """RFC 9162 2.1.3.1 PATH(m, D[lo:hi]), leaf level first."""
    if hi is None:
        hi = len(hashes)
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return inclusion_path(hashes, m, lo, lo + k) + [mth(hashes, lo + k, hi)]
    return inclusion_path(hashes, m - k, lo + k, hi) + [mth(hashes, lo, lo + k)]


def consistency_proof(hashes, m, n):
    """RFC 9162 2.1.4.1 PROOF(m, D[0:n])."""

    def subproof(m, lo, hi, b):
        n = hi - lo
        if m == n:
            return [] if b else [mth(hashes, lo, hi)]
        k = _split(n)
        if m <= k:
            return subproof(m, lo, lo + k, b) + [mth(hashes, lo + k, hi)]
        return subproof(m - k, lo + k, hi, False) + [mth(hashes, lo, lo + k)]

    if m == 0 or m == n:
        return []
    return subproof(m, 0, n, True)


def verify_inclusion(leaf, index, size, path, root):
    """RFC 9162 2.1.3.2, step by step; True when the proof verifies."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1, size2, root1, root2, proof):
    """RFC 9162 2.1.4.2, step by step; True when the proof verifies."""
    if size1 > size2 or size1 == 0:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if not proof:
        return False
    proof = list(proof)
    if size1 & (size1 - 1) == 0:  # exact power of 2
        proof.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2


def canonical(obj):
    """The canonical encoding cleanroom writes (sorted keys, no spaces, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# ----------------------------------------------------------------- datasets --

# `cleanroom add` does not cache the hash of a file modified (mtime or ctime)
# within its "racy" window of the hashing (100 ms today), so that a file
# rewritten within the timestamp granularity is hashed again next time.
# Tests that rely on the hash cache wait this long after writing files.
RACY_WAIT = float(os.environ.get("CR_RACY_WAIT", "0.3"))


def settle():
    time.sleep(RACY_WAIT)


def make_files(folder, n, tag="f", size=None, per_dir=None):
    """Create n small files with distinct content under folder; return {path: bytes}."""
    os.makedirs(folder, exist_ok=True)
    made = {}
    for i in range(n):
        d = folder if not per_dir else os.path.join(folder, "d%04d" % (i // per_dir))
        if per_dir and i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        p = os.path.join(d, "%s%06d.bin" % (tag, i))
        data = ("%s %s %d\n" % (tag, folder, i)).encode()
        if size:
            data = (data * (size // len(data) + 1))[:size]
        with open(p, "wb") as f:
            f.write(data)
        made[p] = data
    return made


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def event_path(ev):
    """The recorded path of an event as bytes (path or path_b64)."""
    if "path" in ev:
        return ev["path"].encode("utf-8")
    return base64.b64decode(ev["path_b64"])


# -------------------------------------------------------------------- store --

class Store:
    """A store in a temporary folder, with CLI, git and SQLite helpers."""

    def __init__(self, path):
        self.path = path
        self.git_dir = os.path.join(path, "log.git")
        self.index_path = os.path.join(path, "index.sqlite")

    # CLI
    def cr(self, *args, rc=0, **kw):
        r = cleanroom(*args, store=self.path, **kw)
        if rc is not None and r.rc != rc:
            raise AssertionError("expected exit %d, got %r" % (rc, r))
        return r

    def init(self):
        return self.cr("init")

    def add(self, *paths, rc=0, jobs=None):
        args = ["add", "--json"]
        if jobs:
            args += ["--jobs", str(jobs)]
        return self.cr(*args, *paths, rc=rc).json()

    def status(self):
        return self.cr("status", "--json").json()

    def events(self):
        return self.cr("log", "--json").json_lines()

    def leaves(self):
        out = self.cr("log", "--export-leaves", "-").outb
        if not out:
            return []
        assert out.endswith(b"\n"), out[-100:]
        return out[:-1].split(b"\n")

    def leaf_hashes(self):
        return [leaf_hash(x) for x in self.leaves()]

    def check(self):
        """Run check twice (text and --json); return (rc, json, text)."""
        t = self.cr("check", rc=None)
        j = self.cr("check", "--json", rc=None)
        assert t.rc == j.rc, (t, j)
        if not j.out.strip():
            # check could not even start: json is None, text is its stderr.
            return j.rc, None, t.out + t.err
        return j.rc, j.json(), t.out

    # git
    def git(self, *args, input=None, ok=True):
        r = run(["git"] + list(args), input=input, env={"GIT_DIR": self.git_dir})
        if ok and r.rc != 0:
            raise AssertionError("git failed: %r" % (r,))
        return r

    def head(self):
        r = self.git("rev-parse", "--verify", "-q", BRANCH, ok=False)
        return r.out.strip() if r.rc == 0 else None

    def commits(self):
        """First-parent chain of the branch, oldest first."""
        if self.head() is None:
            return []
        return self.git("rev-list", "--first-parent", "--reverse", BRANCH).out.split()

    def message(self, commit):
        raw = self.git("cat-file", "commit", commit).out
        return raw.split("\n\n", 1)[1]

    def trailers(self, commit):
        t = {}
        for line in self.message(commit).splitlines():
            if line.startswith("Cleanroom-") and ": " in line:
                k, v = line.split(": ", 1)
                t[k[len("Cleanroom-"):]] = v
        return t

    def files_at(self, commit):
        """{path: (mode, blob)} of a commit's tree, recursively."""
        out = self.git("ls-tree", "-r", "-z", commit).outb
        files = {}
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, path = rec.split(b"\t", 1)
            mode, typ, sha = meta.decode().split()
            files[path.decode()] = (mode, sha)
        return files

    def git_leaves(self, commit=BRANCH):
        """Every leaf at commit: the segments concatenated in path order."""
        data = b"".join(self.blob(sha) for path, (mode, sha) in sorted(self.files_at(commit).items())
                        if path.startswith("events/"))
        return data[:-1].split(b"\n") if data else []

    def blob(self, sha):
        return self.git("cat-file", "blob", sha).outb

    def hash_object(self, data):
        return self.git("hash-object", "-w", "--stdin", input=data).out.strip()

    def mktree(self, files):
        """Build nested trees from {path: (mode, blob)} with git mktree."""
        tree = {}
        for path, entry in files.items():
            node = tree
            parts = path.split("/")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = entry

        def write(node):
            lines = []
            for name, v in sorted(node.items()):
                if isinstance(v, dict):
                    lines.append("040000 tree %s\t%s" % (write(v), name))
                else:
                    mode, sha = v
                    lines.append("%s blob %s\t%s" % (mode, sha, name))
            return self.git("mktree", input=("\n".join(lines) + "\n").encode() if lines else b"").out.strip()

        return write(tree)

    def commit_tree(self, tree, parents, message):
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        return self.git(*args, "-F", "-", input=message.encode()).out.strip()

    def set_branch(self, commit):
        self.git("update-ref", BRANCH, commit)

    # SQLite
    def db(self):
        return sqlite3.connect(self.index_path)

    def dump_derived(self):
        """The tables `index rebuild` derives, as sorted row lists."""
        con = self.db()
        try:
            d = {}
            for table, order in (("events", "idx"), ("files", "idx"), ("segments", "first"),
                                 ("nodes", "level, pos")):
                d[table] = con.execute("SELECT * FROM %s ORDER BY %s" % (table, order)).fetchall()
            d["meta"] = con.execute(
                "SELECT key, value FROM meta WHERE key IN ('size','frontier','head') ORDER BY key"
            ).fetchall()
            return d
        finally:
            con.close()


def segment_path(first):
    return "events/%06d/%03d/%016d.jsonl" % (first // 1000000, first // 1000 % 1000, first)


def segment_message(first, count, size, root_hex, path=None, subject=None):
    """A commit message exactly like the one cleanroom writes."""
    path = path or segment_path(first)
    subject = subject or "Append events %d..%d" % (first, size - 1)
    return ("%s\n\nCleanroom-Segment: %s\nCleanroom-First: %d\nCleanroom-Count: %d\n"
            "Cleanroom-Tree-Size: %d\nCleanroom-Root: %s\n" % (subject, path, first, count, size,
                                                               root_hex))


class TestCase(unittest.TestCase):
    """A test with a temporary folder (self.tmp) removed afterwards."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        if not os.access(CLEANROOM, os.X_OK):
            # Fail, not skip: a missing binary must not look like a pass.
            raise RuntimeError("no cleanroom binary at %s (build it, or set CLEANROOM)" % CLEANROOM)

    def setUp(self):
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="cr-it-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def new_store(self, name="store", init=True):
        s = Store(os.path.join(self.tmp, name))
        if init:
            r = s.init()
            self.assertEqual(r.rc, 0, r)
        return s

    def assertProblem(self, problems, where=None, what=None, msg=None):
        """Some problem whose 'where' starts with `where` and whose 'what' contains `what`."""
        for p in problems:
            if (where is None or p["where"].startswith(where)) and (what is None or what in p["what"]):
                return p
        self.fail("%sno problem where=%r what~%r in:\n%s" % (
            (msg + ": ") if msg else "", where, what,
            "\n".join("  %s: %s" % (p["where"], p["what"]) for p in problems)))


# ------------------------------------------------------------------ bundles --

# docs/formats/bundle.md: members in this order (those present), regular files,
# mode 0644, owner and group 0 (root), mtime 0.
BUNDLE_ORDER = ["VERSION", "manifest.json", "seal.note", "key.pub", "key.vkey", "anchor.json",
                "attestation.dsse.json", "proofs/checkpoints.jsonl", "proofs/inputs.jsonl",
                "proofs/consistency.jsonl", "events.jsonl"]
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


def bundle_tar_bytes(path):
    """The uncompressed tar of a bundle (.tar.zst or .tar.gz, told by its magic)."""
    import gzip
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == ZSTD_MAGIC:
        r = run(["zstd", "-q", "-d", "-c"], input=data)
        if r.rc != 0:
            raise AssertionError("zstd -d failed: %r" % (r,))
        return r.outb
    if data[:2] == GZIP_MAGIC:
        return gzip.decompress(data)
    return data


def read_bundle(path):
    """[(TarInfo, bytes)] of a bundle's members, in archive order."""
    import io
    import tarfile
    out = []
    with tarfile.open(fileobj=io.BytesIO(bundle_tar_bytes(path)), mode="r:") as t:
        for m in t.getmembers():
            f = t.extractfile(m) if m.isreg() else None
            out.append((m, f.read() if f else b""))
    return out


def bundle_dict(path):
    """{name: bytes} of a bundle's members."""
    return {m.name: data for m, data in read_bundle(path)}


def compress(data, how="zstd"):
    if how == "gzip":
        import gzip
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        r = run(["zstd", "-q", "-c"], input=data)
        if r.rc != 0:
            raise AssertionError("zstd failed: %r" % (r,))
        return r.outb
    return data


def tar_bytes(members):
    """A pax tar of members: (name, bytes) pairs (regular files, 0644, root, mtime 0)
    or (TarInfo, bytes) pairs taken as they are."""
    import io
    import tarfile
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as t:
        for m, data in members:
            if isinstance(m, str):
                ti = tarfile.TarInfo(m)
                ti.mode, ti.uid, ti.gid, ti.uname, ti.gname, ti.mtime = 0o644, 0, 0, "root", "root", 0
                m = ti
            if m.isreg():
                m.size = len(data)
                t.addfile(m, io.BytesIO(data))
            else:
                t.addfile(m)
    return bio.getvalue()


def write_bundle(path, members, how="zstd"):
    """Write members (see tar_bytes) as a bundle file compressed with how (zstd, gzip, none)."""
    with open(path, "wb") as f:
        f.write(compress(tar_bytes(members), how))


def fix_manifest(members):
    """members [(name, bytes)] with manifest.json's entries (size, sha256) and
    counts recomputed for the members present: what a forger would do, since
    the manifest is not signed. Entries of absent members are kept."""
    have = {n: d for n, d in members}
    m = json.loads(have["manifest.json"])
    for e in m["members"]:
        if e["name"] in have:
            e["size"] = len(have[e["name"]])
            e["sha256"] = hashlib.sha256(have[e["name"]]).hexdigest()
    data = canonical(m)
    return [(n, data if n == "manifest.json" else d) for n, d in members]
