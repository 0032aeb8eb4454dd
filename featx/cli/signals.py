"""How a command ends: exit codes (0 ok, 1 failed run, 2 bad usage or input, 130 interrupted, 141 closed pipe), the
one `error:` line of a FeatxError, and Ctrl-C, which is never a traceback."""

from __future__ import annotations

import os
import signal
import sys
import threading

from featx.errors import INTERRUPTED, FeatxError

_interrupts = {"seen": False, "said": False}


def run_command(argv, command) -> int:
    """Run `command()` (a parsed command line's work) as `featx.cli.main` does; returns the exit code.

    The first Ctrl-C unwinds (committed work is kept); a second one, while that cleanup or publishing still
    runs, exits at once: as safe as a kill, which the cache is built to survive. Called as the console script
    (argv None), an interrupted run then ends at once too (the interpreter's shutdown, with TensorFlow's, takes
    long and would die silently of a further Ctrl-C), and after a normal run any Ctrl-C exits at once; called
    with argv (tests, notebooks) the caller's handler is back afterwards.
    """
    previous = _handle_interrupts()
    try:
        return _exit_code(command)
    except KeyboardInterrupt:
        _interrupted()
        if argv is None and previous is not None:
            _exit_now(130)
        return 130
    finally:
        if previous is not None and argv is not None:
            signal.signal(signal.SIGINT, previous)
        _interrupts["seen"] = True  # the command is over: a Ctrl-C now has nothing to unwind


def _exit_code(command) -> int:
    try:
        command()
        sys.stdout.flush()  # a reader gone early (`featx backbones | head -1`) shows here, not at exit
    except FeatxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit must not fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a program stopped by a closed pipe
    return 0


def _handle_interrupts():
    """SIGINT: KeyboardInterrupt the first time, immediate exit 130 after. Returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signals reach only the main thread; its own handler stays in charge
    _interrupts.update(seen=False, said=False)

    def on_interrupt(signum, frame):
        if _interrupts["seen"]:
            _interrupted()
            _exit_now(130)
        _interrupts["seen"] = True
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, on_interrupt)


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001  a closed pipe: nothing more can be said
            pass
    os._exit(code)


def _interrupted() -> None:
    if not _interrupts["said"]:
        _interrupts["said"] = True
        try:
            print(INTERRUPTED, file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001  stderr closed or busy (interrupted mid-write): exit 130 regardless
            pass
