"""`featx` run in this process with its output captured: the cheap way to test a command's exit code and lines
(tests/forkserver.py runs real processes where a test needs one)."""

from __future__ import annotations

import contextlib
import io

import featx.cli


def cli(*args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `featx ARGS...`; arguments may be paths or numbers."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = featx.cli.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()
