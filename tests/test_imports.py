"""The layout holds the data flow (../shared/DESIGN.md, "The data flow is the layout"): each module imports only from
its own stage or the stages before it, no two modules import each other (also through imports inside functions),
and no module imports another module's private name. Read from the code (ast), not from a running import."""

from __future__ import annotations

import ast
from pathlib import Path

FEATX = Path(__file__).resolve().parent.parent / "featx"

# The stages, in the order a module may import from (its own and those above it in this list). The extractor writes
# through the cache's API, so the cache stands before it; figures (matplotlib) serve runs, verbs and the page alike.
STAGES = (
    ("base", ("featx", "featx.errors", "featx.values", "featx.runtime", "featx.progress", "featx.terminal")),
    ("sources", ("featx.sources",)),
    ("backbones", ("featx.backbones",)),
    ("cache", ("featx.cache",)),
    ("extractor", ("featx.compute", "featx.distributed", "featx.extractor")),
    ("features", ("featx.features",)),
    ("classifiers", ("featx.classifiers",)),
    ("figures", ("featx.figures",)),
    ("selection", ("featx.selection",)),
    ("runs", ("featx.runs",)),
    ("experiments", ("featx.experiments",)),
    ("report", ("featx.report",)),
    ("cli", ("featx.cli", "featx.console", "featx.__main__")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(FEATX.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> int:
    best = None
    for number, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (number, len(prefix))
    assert best is not None, f"{module} belongs to no stage: add it to STAGES"
    return best[0]


def imports() -> dict[str, list[tuple[str, tuple[str, ...], int]]]:
    """{module: [(imported featx module, names taken from it, line)]}, imports inside functions included."""
    found = {}
    for path in sorted(FEATX.rglob("*.py")):
        module = module_name(path)
        edges = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("featx"):
                names = tuple(a.name for a in node.names)
                submodules = [n for n in names if (FEATX.parent / (node.module + "." + n).replace(".", "/")).exists()]
                submodules += [
                    n for n in names if (FEATX.parent / f"{(node.module + '.' + n).replace('.', '/')}.py").exists()
                ]
                edges += [(f"{node.module}.{n}", (), node.lineno) for n in dict.fromkeys(submodules)]
                edges.append((node.module, tuple(n for n in names if n not in submodules), node.lineno))
            elif isinstance(node, ast.Import):
                edges += [(a.name, (), node.lineno) for a in node.names if a.name.startswith("featx")]
        found[module] = edges
    return found


def test_every_module_imports_only_from_its_stage_or_those_before_it():
    up = [
        f"{module} (stage {STAGES[stage(module)][0]}) imports {target} (stage {STAGES[stage(target)][0]}) at line {line}"
        for module, edges in imports().items()
        for target, _, line in edges
        if stage(target) > stage(module)
    ]
    assert not up, "\n".join(up)


def test_no_module_imports_another_modules_private_name():
    private = [
        f"{module} takes {name} from {target} at line {line}"
        for module, edges in imports().items()
        for target, names, line in edges
        for name in names
        if name.startswith("_") and target != module
    ]
    assert not private, "\n".join(private)


def test_no_import_circle():
    graph = {
        module: {t for t, _, _ in edges if t in FEATX_MODULES() and t != module} for module, edges in imports().items()
    }
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # a package's __init__ importing its own submodules is how a package hands names on, not a circle of two modules
    circles = [c for c in circles if not _package_face(c)]
    assert not circles, "\n".join(circles)


def FEATX_MODULES() -> set[str]:  # noqa: N802  (computed once per call: a set of names)
    return {module_name(p) for p in FEATX.rglob("*.py")}


def _package_face(circle: str) -> bool:
    members = circle.split(" -> ")
    return len(set(members)) == 2 and any(
        members[0].startswith(m + ".") or m.startswith(members[0] + ".") for m in members
    )


def test_the_test_sees_the_known_layout():
    """The check above is only as good as its stage table: every featx module is in one stage, and the verbs, the
    runs store and the selection modules are where the design says."""
    modules = FEATX_MODULES()
    assert all(stage(m) is not None for m in modules)
    assert stage("featx.runs.store") > stage("featx.selection.cv") > stage("featx.classifiers.registry")
    assert stage("featx.experiments.fit") > stage("featx.runs.store") and stage("featx.report") > stage(
        "featx.experiments.fit"
    )
    assert stage("featx.cli.options") == len(STAGES) - 1
