"""The `featx` console script (and `python -m featx`): Ctrl-C is answered from main()'s first instant, then
`featx.cli.main` runs the command. Importing this module, like importing featx, changes nothing process-wide."""

from __future__ import annotations

import os
import signal

from featx.errors import INTERRUPTED


def _exit_interrupted(signum, frame):
    os.write(2, f"{INTERRUPTED}\n".encode())
    os._exit(130)


def main() -> int:
    """Run the command line of this process (sys.argv); returns its exit code."""
    # Until featx.cli.main takes over Ctrl-C (importing the command line takes a moment): nothing to clean up yet.
    signal.signal(signal.SIGINT, _exit_interrupted)
    from featx.cli import main as run_command

    return run_command()
