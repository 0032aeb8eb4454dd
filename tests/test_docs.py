"""README's two commands are the contract for a new machine; CI must run the test one verbatim. Every page's blocks
run or say why not, and docs/cli.md is what the parsers say."""

import importlib.util
import subprocess
from pathlib import Path

from doc_blocks import README, blocks_to_run, page_blocks, page_name, pages

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The shell commands of README's section "On a new machine" (up to the next section)."""
    lines = README.read_text().splitlines()
    start = lines.index("## On a new machine") + 1
    end = next(n for n in range(start, len(lines)) if lines[n].startswith("## ")) + 1
    return [c for b in page_blocks(README) if b.language == "sh" and start < b.line < end for c in b.commands]


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2
    assert "pipelines/quickstart.toml" in commands[0] and (ROOT / "pipelines/quickstart.toml").exists()
    assert "pytest" in commands[1]
    assert (ROOT / ".ci/run").read_text().strip().splitlines()[-1] == commands[1]


def test_readme_is_the_front_door_not_the_manual():
    assert len(README.read_text().splitlines()) <= 150


def test_every_shell_and_python_block_is_run_or_says_why_not():
    assert len(pages()) >= 10
    blocks = [b for path in pages() for b in page_blocks(path) if b.language in ("sh", "python")]
    assert len(blocks) >= 20
    for block in blocks:
        assert block.not_run is None or len(block.not_run) > 10, block
    assert {b.language for path in pages() for b in blocks_to_run(path)} == {"python", "sh"}
    unnamed = [f"{page_name(path)}:{b.line}" for path in pages() for b in page_blocks(path) if b.language == ""]
    assert not unnamed, f"every code block names its language: {unnamed}"


def test_cli_reference_is_generated_from_the_parsers():
    """docs/cli.md is committed; when a command's help changes, `python3 docs/gen_cli.py` rewrites it."""
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs/gen_cli.py")
    gen_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_cli)
    expected = gen_cli.reference()
    assert "## featx extract" in expected and "`--layers LAYERS`" in expected
    assert (ROOT / "docs/cli.md").read_text(encoding="utf-8") == expected, (
        "docs/cli.md differs from featx's parsers: run python3 docs/gen_cli.py and commit docs/cli.md"
    )


def test_every_shell_script_parses():
    """`bash -n` on each script CI or a user runs: a branch not taken on this machine (SLURM already installed)
    is still read by bash on one where it is."""
    scripts = [ROOT / ".ci/run", *sorted(ROOT.glob("**/*.sh"))]
    assert len(scripts) >= 4
    for script in scripts:
        checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, f"{script}: {checked.stderr}"
