"""README's two commands are the contract for a new machine; CI must run the test one verbatim."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().split("## On a new machine")[1].split("\n## ")[0].splitlines()
    return [line.strip() for line in lines if line.startswith("    ")]


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2
    assert "pipelines/quickstart.toml" in commands[0] and (ROOT / "pipelines/quickstart.toml").exists()
    assert "pytest" in commands[1]
    assert (ROOT / ".ci/run").read_text().strip().splitlines()[-1] == commands[1]
