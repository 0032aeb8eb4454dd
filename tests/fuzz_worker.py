"""The process the fuzz tier's watchdog (tests/helpers.py FuzzWorker) drives: it imports featx once, then answers one
request per stdin line (JSON) with progress lines and one result line (JSON) on stdout, so that thousands of
mutated files cost one interpreter start, and a crash or hang inside a library is seen by the parent as this
process dying by a signal or going silent, with the last progress line naming the case.

Requests:
    {"op": "cli", "argv": [...]}
        run `featx ARGV` in this process (featx.cli.main, output captured): {"rc", "out", "err"}
    {"op": "mutate", "path": FILE, "mutations": [[[offset, xor], ...], ...], "argv": [[...], ...],
     "read": [ENTRY, LAYER] | null}
        for each mutation: change those bytes of FILE (xor each), run `read` (open the entry's layer and read its rows,
        the path every command takes to a layer file; the entry, whose index FILE is not, is opened once) and each
        argv, then put FILE back; a progress line before each.
        Result: {"cases": [[mutation, what, rc, n_error_lines, traceback, last_error_line], ...]} (rc 0: ok, 1 or 2:
        a featx error, -1: an exception got out of featx)
    {"op": "pipeline", "path": FILE}
        everything `featx run FILE` does before it runs anything (read_pipeline: the schema; check_steps: every
        FitSpec and Evaluation): {"outcome": "ok"} or {"outcome": "refused" | "exception", "message"}
    {"op": "import", "modules": [...]}
        import those modules now (Keras, once, not inside a case's time): {"imported": [...]}
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import traceback


def _cli(argv: list[str]) -> tuple[int, str, str]:
    import featx.cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = featx.cli.main([str(a) for a in argv])
        except BaseException:  # noqa: BLE001  main() lets nothing out; if it does, that is the finding
            traceback.print_exc(file=err)
            rc = -1
    return rc, out.getvalue(), err.getvalue()


def _read(entry, layer: str) -> tuple[int, str]:
    from featx.errors import FeatxError

    try:
        with entry.open_layer(layer) as ds:
            ds[()]
        return 0, ""
    except FeatxError as exc:
        return exc.exit_code, f"error: {exc}\n"
    except BaseException:  # noqa: BLE001
        return -1, traceback.format_exc()


def _say(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _mutate(request: dict) -> dict:
    from featx.cache.store import CacheEntry

    path, cases = request["path"], []
    with open(path, "rb") as f:
        original = f.read()
    entry = CacheEntry(request["read"][0]) if request.get("read") else None  # its index is not what changes here
    try:
        for mutation in request["mutations"]:
            changed = bytearray(original)
            for offset, xor in mutation:
                changed[offset] ^= xor
            with open(path, "wb") as f:
                f.write(changed)
            runs = ([("read", lambda: _read(entry, request["read"][1]))] if entry else []) + [
                (" ".join(argv[:1]), lambda argv=argv: _cli(argv)[::2]) for argv in request.get("argv", [])
            ]
            for what, run in runs:
                _say({"progress": f"{mutation} of {path}: {what}"})
                rc, err = run()
                lines = [line for line in err.splitlines() if line.strip()]
                cases.append([mutation, what, rc, len(lines), "Traceback" in err, lines[-1][:300] if lines else ""])
    finally:
        with open(path, "wb") as f:
            f.write(original)
    return {"cases": cases}


def _pipeline(path: str) -> dict:
    from featx.errors import FeatxError
    from featx.experiments.pipelines import check_steps, read_pipeline

    try:
        check_steps(read_pipeline(path), path)
        return {"outcome": "ok"}
    except FeatxError as exc:
        return {"outcome": "refused", "message": str(exc)}
    except BaseException:  # noqa: BLE001  anything but a FeatxError is the finding
        return {"outcome": "exception", "message": traceback.format_exc()}


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "cli":
            rc, out, err = _cli(request["argv"])
            _say({"rc": rc, "out": out[-4000:], "err": err[-4000:]})
        elif request["op"] == "mutate":
            _say(_mutate(request))
        elif request["op"] == "pipeline":
            _say({"progress": f"checks of {request['path']}"})
            _say(_pipeline(request["path"]))
        elif request["op"] == "import":
            _say({"imported": [importlib.import_module(name).__name__ for name in request["modules"]]})
        else:
            _say({"error": f"unknown op {request['op']!r}"})


if __name__ == "__main__":
    main()
