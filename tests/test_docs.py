"""README's two commands are the contract for a new machine; CI must run the test one verbatim."""

import subprocess
from pathlib import Path

from readme_blocks import readme_blocks

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start, end = (text[: text.index(marker)].count("\n") + 1 for marker in ("## On a new machine", "## Using it"))
    return [c for b in readme_blocks() if b.language == "sh" and start < b.line < end for c in b.commands]


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2
    assert "pipelines/quickstart.toml" in commands[0] and (ROOT / "pipelines/quickstart.toml").exists()
    assert "pytest" in commands[1]
    assert (ROOT / ".ci/run").read_text().strip().splitlines()[-1] == commands[1]


def test_every_shell_and_python_block_is_run_or_says_why_not():
    blocks = [b for b in readme_blocks() if b.language in ("sh", "python")]
    assert len(blocks) >= 6
    for block in blocks:
        assert block.not_run is None or len(block.not_run) > 10, block
    assert not [b for b in readme_blocks() if b.language == ""], "every README code block names its language"


def test_every_shell_script_parses():
    """`bash -n` on each script CI or a user runs: a branch not taken on this machine (SLURM already installed)
    is still read by bash on one where it is."""
    scripts = [ROOT / ".ci/run", *sorted(ROOT.glob("**/*.sh"))]
    assert len(scripts) >= 4
    for script in scripts:
        checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, f"{script}: {checked.stderr}"
