"""`featx` run in this process with its output captured: the cheap way to test a command's exit code and lines
(tests/forkserver.py runs real processes where a test needs one), and the check of a one-line error."""

from __future__ import annotations

import contextlib
import io
import re

import featx.cli


def cli(*args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `featx ARGS...`; arguments may be paths or numbers."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = featx.cli.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def user_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's C++ log lines (a fresh process logs e.g. 'E0000 ... failed call to cuInit')."""
    return [line for line in stderr.splitlines()
            if line.strip() and not re.match(r"[IWEF]\d{4} |WARNING: All log messages before absl", line)]


def assert_one_line_error(rc: int, err: str, pattern: str, code: int = 2) -> str:
    """The run ended with exit `code` and one `error: ` line matching `pattern` (re.search), no traceback."""
    lines = user_lines(err)
    assert rc == code and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    assert lines[0].startswith("error: ")
    return lines[0]
