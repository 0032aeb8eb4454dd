"""The one parser of typed values written as text (`--param`, `--grid`, `--pca`, classifier flags).

Text becomes a Python literal where it is one (3, 0.5, None, True, (128, 64)), else stays a string ("entropy").
Light on purpose: the CLI uses it as an argparse type, so values arrive typed and are never re-parsed.
"""

from __future__ import annotations

import ast

from featx.errors import FeatxError

_BRACKETS = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}


def parse_value(text: str):
    """'3' -> 3, '1e-3' -> 0.001, '(128, 64)' -> (128, 64), 'None' -> None, 'gini' -> 'gini'."""
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_param(item: str) -> tuple[str, object]:
    """'max_depth=3' -> ('max_depth', 3)."""
    key, text = _key_and_text(item, "key=value, e.g. max_depth=3")
    return key, parse_value(text)


def parse_grid_item(item: str) -> tuple[str, list]:
    """'min_samples_leaf=1,2,5' -> ('min_samples_leaf', [1, 2, 5]); 'hidden=(256,),(128,64)' -> two tuples.

    Values are split at commas outside brackets, then each goes through parse_value.
    """
    key, text = _key_and_text(item, "key=v1,v2,..., e.g. min_samples_leaf=1,2,5")
    values = [parse_value(part) for part in _split_top_level(text)]
    if any(value == "" for value in values):
        raise FeatxError(f"bad grid {item!r}: a value is empty; write it as key=v1,v2,..., e.g. min_samples_leaf=1,2,5")
    return key, values


def parse_grid(items) -> dict:
    """["min_samples_leaf=1,2,5", "criterion=gini,entropy", "hidden=(256,),(128,64)"] -> {param: [values]}."""
    return params_dict(map(parse_grid_item, items))


def params_dict(pairs) -> dict:
    """[(key, value), ...] -> {key: value}; a key given twice is an error."""
    params = {}
    for key, value in pairs:
        if key in params:
            raise FeatxError(f"parameter {key!r} is given twice; keep one {key}=... .")
        params[key] = value
    return params


def _key_and_text(item: str, form: str) -> tuple[str, str]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier() or not text.strip():
        raise FeatxError(f"bad parameter {item!r}: write it as {form}")
    return key, text


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += _BRACKETS.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]
