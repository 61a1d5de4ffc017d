"""Explicit marks for a training run recorded by `cleanroom record`.

    import cleanroom
    cleanroom.checkpoint("ckpt/epoch-3.pt", step=3000, metrics={"loss": 0.12})
    cleanroom.input("/data/extra.bin", source="vendor-x", licence="CC-BY-4.0")
    cleanroom.note(phase="fine-tune", lr=3e-4)

The preload hook already sees every file read and every checkpoint written;
these calls add what it cannot infer: a step and metrics for a checkpoint, an
input outside the data folders with its labels, free-form notes. They talk to
the same recorder over its socket. Outside a recorded run they do nothing and
say so once on stderr.

Event fields are integers, strings, booleans, lists and objects; floats are
kept as their repr() strings (events hold no floating point numbers).
"""
import json
import mmap
import os
import socket
import struct
import sys
import time

__all__ = ["checkpoint", "input", "note", "active"]

_MAGIC = 0x43524D31          # "CRM1", hooks/wire.h CRW_MAGIC
_VERSION = 1
_MSG_HELLO = 1
_MSG_NOTE = 3
_HEADER = struct.Struct("=IHHiiQIIQ")   # crw_msg
_RING_BYTES = 1 << 20
_RING_CONTROL = 4096
_RING_MAGIC = 0x43525231
_INT_MAX = 2 ** 53 - 1

_state = {"sock": None, "pid": None, "warned": False, "ring": None}


def active():
    """True when this process runs under `cleanroom record`."""
    return bool(os.environ.get("CLEANROOM_SOCKET"))


def _warn_once(msg):
    if not _state["warned"]:
        _state["warned"] = True
        print(f"cleanroom: {msg}; marks are ignored", file=sys.stderr)


def _header(kind, payload_len):
    return _HEADER.pack(_MAGIC, _VERSION, kind, os.getpid(), os.getppid(),
                        time.time_ns(), 0, payload_len, 0)


def _connect():
    if _state["sock"] is not None and _state["pid"] == os.getpid():
        return _state["sock"]
    path = os.environ.get("CLEANROOM_SOCKET")
    if not path:
        _warn_once("not running under `cleanroom record`")
        return None
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(path)
        # Every connection opens with a hello carrying its ring (unused here).
        fd = os.memfd_create("cleanroom-python-ring", os.MFD_CLOEXEC)
        os.ftruncate(fd, _RING_BYTES)
        ring = mmap.mmap(fd, _RING_BYTES)
        ring[0:16] = struct.pack("=IIQ", _RING_MAGIC, _VERSION, _RING_BYTES - _RING_CONTROL)
        exe = (os.path.realpath(sys.executable) + "\0").encode("utf-8", "surrogateescape")
        argv = b"\0".join(a.encode("utf-8", "surrogateescape") for a in sys.argv) + b"\0"
        payload = (exe + argv)[:8192]
        socket.send_fds(s, [_header(_MSG_HELLO, len(payload)) + payload], [fd])
        os.close(fd)
    except OSError as e:
        _warn_once(f"cannot reach the recorder at {path} ({e})")
        return None
    _state.update(sock=s, pid=os.getpid(), ring=ring)
    return s


def _clean(value):
    """Make a value fit an event: no floats, integers within 2^53."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if -_INT_MAX <= value <= _INT_MAX else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return str(value)


def _send(kind, path=None, fields=None):
    s = _connect()
    if s is None:
        return False
    msg = {"kind": kind}
    if path is not None:
        msg["path"] = os.path.abspath(os.fspath(path))
    if fields:
        msg["fields"] = _clean(fields)
    payload = json.dumps(msg, ensure_ascii=False, sort_keys=True).encode("utf-8")
    try:
        s.send(_header(_MSG_NOTE, len(payload)) + payload)
    except OSError as e:
        _warn_once(f"lost the recorder ({e})")
        return False
    return True


def checkpoint(path, step=None, metrics=None, **fields):
    """Mark `path` as a checkpoint (hashed by the recorder now), with its step and metrics."""
    f = dict(fields)
    if step is not None:
        f["step"] = step
    if metrics:
        f["metrics"] = metrics
    return _send("checkpoint", path, f)


def input(path, **labels):  # noqa: A001 - the API's name
    """Record `path` as an input of the run, with labels (source, licence, ...)."""
    return _send("input", path, labels)


def note(**fields):
    """Append a free-form note to the run's log."""
    return _send("note", None, fields)
