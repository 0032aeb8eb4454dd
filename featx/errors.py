"""Errors users see: one line saying what is wrong and what to do, mapped to an exit code."""


class FeatxError(Exception):
    """Bad usage or input (exit code 2): the message names the problem and the fix."""

    exit_code = 2


class RunFailed(FeatxError):
    """A run that started correctly but could not finish (exit code 1)."""

    exit_code = 1


INTERRUPTED = "interrupted; committed work is kept and the same command resumes it"  # Ctrl-C, exit code 130
