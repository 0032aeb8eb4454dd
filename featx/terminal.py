"""Text for the terminal: every table and long line featx prints fits its width.

The width is shutil.get_terminal_size's: $COLUMNS where set, else the terminal's own, else 120 (a pipe, a file).
`fit_table` lays a table out within it: numbers right-aligned, text left-aligned; where the natural table is
wider, the widest text columns wrap within their cells, and a column that still does not fit moves under the
table, as an indented `name: value` line below each row. `fit_lines` wraps long lines of prose (indented
continuation lines). One helper for every table (`featx ls`, `info`, `runs`, `compare`, `tune`, `layers`,
`verify`, `predict`) so none of them decides a width of its own.
"""

from __future__ import annotations

import re
import shutil
import textwrap
import unicodedata

import pandas as pd

FALLBACK = 120  # columns when neither $COLUMNS nor a terminal says
UNLIMITED = 10**9  # a width for tables asked for whole (`featx runs --wide`)
MIN_WIDTH = 40  # narrower than this, tables are laid out for 40 columns anyway
WRAP_MIN = 20  # a long text column wraps down to this many characters a line before it moves under the table,
MAX_WRAPPED_LINES = 3  # and into at most this many lines
MIN_COLUMN = 10  # the first column (the row's name) wraps down to this, where nothing else is left to move
GAP = "  "
NUMBER = re.compile(r"[-+]?[\d.,]*(e[-+]?\d+)?%?( ± [\d.]+)?|nan|")


def terminal_width() -> int:
    """The width to print within: $COLUMNS, else the terminal's, else FALLBACK (at least MIN_WIDTH)."""
    return max(MIN_WIDTH, shutil.get_terminal_size((FALLBACK, 24)).columns)


def display_width(text: str) -> int:
    """Columns `text` takes on a terminal: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1 for c in text)


def fit_table(table: pd.DataFrame, width: int | None = None, *, index: bool = False, long=None) -> str:
    """`table` as text within `width` columns (default terminal_width()); cells are shown as str() shows them
    (format numbers first), None and NaN as empty. index : also show the index, as a first column.

    long : the columns that may wrap (down to WRAP_MIN characters, into at most MAX_WRAPPED_LINES lines) or move
    under the table, in that order of preference (default: every text column but the first, which names the row). Where that is not enough, the
    other columns but the first move under the table too, the rightmost first; the first wraps last.
    """
    width = width or terminal_width()
    if index:
        table = table.reset_index()
    names = [str(c) for c in table.columns]
    rows = [[_cell(v) for v in record] for record in table.itertuples(index=False, name=None)]
    if not rows:
        return GAP.join(names)
    columns = range(len(names))
    right = [all(NUMBER.fullmatch(row[c].strip()) for row in rows) for c in columns]
    natural = [max(display_width(names[c]), *(display_width(row[c]) for row in rows)) for c in columns]
    wraps = [c for c in columns if (names[c] in long if long is not None else c > 0 and not right[c])]
    movable = sorted(wraps, key=lambda c: -natural[c]) + [c for c in reversed(columns) if c > 0 and c not in wraps]
    shown, under = list(columns), []
    least = [max(WRAP_MIN, -(-natural[c] // MAX_WRAPPED_LINES)) for c in columns]
    while True:
        widths = _wrapped_widths(natural, shown, [c for c in wraps if c in shown], width, least)
        if _total(widths, shown) <= width or not movable:
            break
        column = movable.pop(0)
        shown.remove(column)
        under.append(column)
    widths = _wrapped_widths(widths, shown, shown[:1], width, [MIN_COLUMN] * len(names))  # the first, at last
    lines = _rows(names, shown, widths, right)
    for row in rows:
        lines += _rows(row, shown, widths, right)
        for c in sorted(under):
            lines += _wrap_words(f"{names[c]}: {row[c]}", width, "    ", "      ") or [f"    {names[c]}:"]
    return "\n".join(lines)


def _total(widths, shown) -> int:
    return sum(widths[c] for c in shown) + len(GAP) * (len(shown) - 1)


def _wrapped_widths(natural, shown, wraps, width: int, least: list[int]) -> list[int]:
    """Column widths with the `wraps` columns narrowed, widest first, each no narrower than its `least`, until the
    shown columns fit `width` (or cannot narrow further)."""
    widths = list(natural)
    while _total(widths, shown) > width:
        wide = [c for c in wraps if widths[c] > least[c]]
        if not wide:
            break
        column = max(wide, key=lambda c: widths[c])
        widths[column] = max(least[column], widths[column] - (_total(widths, shown) - width))
    return widths


def _cell(value) -> str:
    try:
        missing = value is None or bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or an array: shown as it is
        missing = False
    return "" if missing else str(value)


def _rows(row, shown, widths, right) -> list[str]:
    """One table row as lines: each cell wrapped within its column's width, padded, the columns GAP apart."""
    wrapped = {c: _wrap(row[c], widths[c]) for c in shown}
    height = max(len(parts) for parts in wrapped.values())
    lines = []
    for i in range(height):
        parts = []
        for c in shown:
            value = wrapped[c][i] if i < len(wrapped[c]) else ""
            pad = " " * (widths[c] - display_width(value))
            parts.append(pad + value if right[c] else value + pad)
        lines.append(GAP.join(parts).rstrip())
    return lines


def _wrap(text: str, width: int) -> list[str]:
    if display_width(text) <= width:
        return [text]
    lines = textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]
    out = []
    for line in lines:  # textwrap counts characters: split again where wide characters overflow
        while display_width(line) > width:
            cut = width
            while display_width(line[:cut]) > width:
                cut -= 1
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return out


def fit_lines(text: str, width: int | None = None, indent: str = "  ") -> str:
    """Each line of `text` wrapped at spaces within `width` (default terminal_width()), continuation lines indented
    by `indent` more. A word longer than a line (a path) stays whole on a line of its own: it can be copied."""
    width = width or terminal_width()
    out = []
    for line in text.splitlines():
        if display_width(line) <= width:
            out.append(line)
            continue
        lead = line[: len(line) - len(line.lstrip())]
        out += _wrap_words(line.strip(), width, lead, lead + indent, whole_words=True)
    return "\n".join(out)


def _wrap_words(text: str, width: int, first: str, rest: str, whole_words: bool = False) -> list[str]:
    lines = textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
        break_long_words=not whole_words,
    )
    return lines if whole_words else [part for line in lines for part in _wrap(line, width)]
