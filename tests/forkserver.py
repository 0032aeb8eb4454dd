"""Fresh `featx` processes for tests, started in milliseconds: forked from a server that imported TensorFlow once.

Each process is a real OS process running `featx.cli.main(argv)` (what the `featx` console script runs), with
its own stdout/stderr files, and optionally a file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored, so writes
fail with EFBIG as on a full disk) or without the file-permission override of root (so chmod makes files
unreadable or folders read-only even when the tests run as root). Tests may SIGKILL it at any instant. A plain subprocess pays a TensorFlow import (5-20 s on
2 cores) per start; this pays it once, which is what lets the kill/resume harness afford many kills.

The server imports TensorFlow in the environment `featx.cli.main` gives it (featx.runtime.tensorflow_environment),
exactly as the console script does: TensorFlow reads its environment at import, and another one could give slightly
different numbers.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SERVER = r"""
import json, os, resource, signal, sys, traceback
import featx.cli
from featx import runtime

with runtime.tensorflow_environment(verbose=False):  # as featx.cli.main imports it: the command line's environment
    import keras, tensorflow  # noqa: F401  the slow part, paid once


def drop_file_permission_override():
    # root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH obeys file modes like any user, yet can still
    # read its own (0700) home, where Python and TensorFlow live and are lazily imported from
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0].effective &= ~0b110
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] in ("wait", "poll"):
        pid, status = os.waitpid(req["pid"], 0 if req["op"] == "wait" else os.WNOHANG)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status) if pid else None}), flush=True)
        continue
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), 1)
            os.dup2(os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), 2)
            os.chdir(req["cwd"])
            os.environ.update(req["env"])
            if req["fsize"] is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"]))
            if req["unprivileged"] and os.geteuid() == 0:
                drop_file_permission_override()
            sys.argv = ["featx", *req["argv"]]
            code = featx.cli.main(req["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


@dataclass
class Child:
    pid: int
    stdout: Path
    stderr: Path
    server: ForkServer
    rc: int | None = None

    def poll(self) -> int | None:
        if self.rc is None:
            self.rc = self.server._ask({"op": "poll", "pid": self.pid})["rc"]
        return self.rc

    def wait(self) -> int:
        if self.rc is None:
            self.rc = self.server._ask({"op": "wait", "pid": self.pid})["rc"]
        return self.rc

    def kill(self) -> int:
        """SIGKILL (if still running) and reap; returns the exit code (-9 when the kill landed)."""
        if self.poll() is None:
            os.kill(self.pid, 9)
        return self.wait()

    @property
    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.read_text(errors="replace")


class ForkServer:
    def __init__(self):
        self._lock = threading.Lock()
        self._logs = Path(tempfile.mkdtemp(prefix="featx-forkserver-"))
        self._logs.chmod(0o777)  # children may run as another user
        self._proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self._logs / "server.err", "wb"),
            text=True,
            bufsize=1,
        )
        self._ready = False
        self._count = 0

    def _ask(self, request: dict) -> dict:
        with self._lock:
            if not self._ready:
                line = self._proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"fork server died: {(self._logs / 'server.err').read_text()[-2000:]}")
                self._ready = True
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"fork server died: {(self._logs / 'server.err').read_text()[-2000:]}")
            return json.loads(line)

    def start(
        self,
        argv: list[str],
        *,
        cwd=None,
        env: dict | None = None,
        fsize: int | None = None,
        unprivileged: bool = False,
    ) -> Child:
        """Start `featx ARGV` as a fresh process. fsize: RLIMIT_FSIZE in bytes; unprivileged: obey file modes."""
        self._count += 1
        out, err = self._logs / f"{self._count}.out", self._logs / f"{self._count}.err"
        request = {
            "op": "start",
            "argv": [str(a) for a in argv],
            "stdout": str(out),
            "stderr": str(err),
            "cwd": str(cwd or os.getcwd()),
            "env": env or {},
            "fsize": fsize,
            "unprivileged": unprivileged,
        }
        return Child(self._ask(request)["pid"], out, err, self)

    def run(self, argv: list[str], timeout: float = 300, **kwargs) -> Child:
        child = self.start(argv, **kwargs)
        deadline = time.monotonic() + timeout
        while child.poll() is None:
            if time.monotonic() > deadline:
                child.kill()
                raise TimeoutError(f"featx {' '.join(map(str, argv))} ran over {timeout}s")
            time.sleep(0.02)
        return child

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


_server: ForkServer | None = None


def server() -> ForkServer:
    """The session's fork server, started on first use (its TensorFlow import runs in the background)."""
    global _server
    if _server is None:
        _server = ForkServer()
        atexit.register(_server.close)
    return _server
