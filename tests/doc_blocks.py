"""The fenced code blocks of README.md and of every page in docs/, with the convention that says which must run.

Every ```python and ```sh block runs in tests/test_doc_pages.py unless the line before its fence is
`<!-- not run: REASON -->` (an illustration: your own data, a SLURM cluster, the test suite itself).
Other languages (```toml, ```text) are shown, never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUNNABLE = ("python", "sh")
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int  # 1-based line of the opening fence
    not_run: str | None  # the reason, when marked

    @property
    def commands(self) -> list[str]:
        """A shell block's commands, one per line, without trailing comments."""
        return [re.sub(r"\s+#.*$", "", line).strip() for line in self.text.splitlines() if line.strip()]


def pages() -> list[Path]:
    """README.md, then the pages of docs/ by name."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def page_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def page_blocks(path: Path = README) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, n = [], 0
    while n < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[n])
        if not fence:
            n += 1
            continue
        end = next(i for i in range(n + 1, len(lines)) if lines[i].startswith("```"))
        marker = NOT_RUN.search(lines[n - 1]) if n else None
        blocks.append(
            Block(fence.group(1), "\n".join(lines[n + 1 : end]) + "\n", n + 1, marker.group(1) if marker else None)
        )
        n = end + 1
    return blocks


def blocks_to_run(path: Path = README) -> list[Block]:
    return [b for b in page_blocks(path) if b.language in RUNNABLE and b.not_run is None]
