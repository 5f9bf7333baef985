"""The layout of the code: every import points down, and no module grows past 500 lines.

``online_models/`` is laid out in families (see the README's "Where things live"): the
families (segments, churn, recommend, value) never import each other or the scoring core
above them; ``customer/`` and ``sentiment.py`` import nothing above them; ``scoring/`` drives
the families; ``group/`` sits on top. Imports are read with ``ast`` from the source, every
one of them: at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "online_models"
FAMILIES = frozenset({"segments", "churn", "recommend", "value"})
#: What each part of online_models may import from online_models, besides itself and the
#: package root (which holds only ``__version__``).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "customer": frozenset(),
    # Measures and batch baselines on arrays: they judge scores, they import no model.
    "evaluation": frozenset(),
    "sentiment": frozenset({"customer"}),
    # A family may judge itself with the shared measures (churn's live cohort AUC).
    **{family: frozenset({"customer", "evaluation"}) for family in FAMILIES},
    "scoring": frozenset({"customer", "sentiment", *FAMILIES}),
    "group": frozenset({"customer", "sentiment", "scoring", *FAMILIES}),
}
#: The import cycles allowed, each a set of modules: none.
ALLOWED_CYCLES: frozenset[frozenset[str]] = frozenset()
#: Libraries of the wiring that online_models never imports (STYLE.md, "The shape").
WIRING = frozenset({"faust", "mode", "redis", "kafka", "aiokafka", "prometheus_client"})
MAX_LINES = 500
#: Files allowed over MAX_LINES, each with the reason.
LONG_FILES = {
    # Issue 28 asks for about 500; these two are still over it (README, Throughput: missed).
    # scorer.py holds one event's scoring and the scorer's models (542 lines, from 872: its
    # learning, alerts and types are modules of their own); app.py is the Faust wiring with the
    # rebalance, erasure and emit paths (785; the batch loop is streams/batch_loop.py).
    "online_models/scoring/scorer.py": "one event's scoring and the models: 542 lines",
    "streams/app.py": "the Faust wiring, not yet split: 785 lines",
    # One frozen pydantic-settings object (STYLE.md, Configuration): a field and its checks
    # per setting; cutting it in two would make two settings objects.
    "streams/settings.py": "the one settings object",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / PACKAGE).rglob("*.py"))}


def type_only_imports(tree: ast.Module) -> set[ast.AST]:
    """The import statements under ``if TYPE_CHECKING:``: read by type checkers, never run."""
    return {
        child
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
        for child in ast.walk(node)
        if isinstance(child, ast.Import | ast.ImportFrom)
    }


def imported_names(path: Path, module: str, *, run_time: bool = False) -> Iterator[str]:
    """Every module ``path`` imports, as written (``from a import b`` gives ``a.b``, which
    may be a module or a name in ``a``); with ``run_time``, not those for types only."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = type_only_imports(tree) if run_time else set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(*, run_time: bool = False) -> dict[str, set[str]]:
    """online_models' modules and the modules of it each one imports (at run time only:
    ``run_time``)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        graph[module] = {
            name
            for name in imported_names(path, module, run_time=run_time)
            if name in modules and name != module
        }
    return graph


def part_of(module: str) -> str | None:
    """The part of online_models a module belongs to (None for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_import_in_online_models_points_down() -> None:
    wrong = []
    for module, targets in import_graph().items():
        part = part_of(module)
        if part is None:
            continue
        allowed = MAY_IMPORT.get(part)
        assert allowed is not None, (
            f"{module}: a part of online_models the layout test does not know"
        )
        for target in sorted(targets):
            target_part = part_of(target)
            if target_part not in (None, part) and target_part not in allowed:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_two_modules_of_online_models_import_each_other() -> None:
    # A module naming another's class in its annotations only (under TYPE_CHECKING) is no
    # circle: batch_scoring and batch_events take the CustomerScorer that drives them.
    found = cycles(import_graph(run_time=True))
    assert [sorted(cycle) for cycle in found if cycle not in ALLOWED_CYCLES] == []


def test_online_models_imports_no_broker_cache_or_metrics_library() -> None:
    wrong = []
    for module, path in package_modules().items():
        for name in imported_names(path, module):
            if name.split(".")[0] in WIRING:
                wrong.append(f"{module} imports {name}")
    assert wrong == []


@pytest.mark.parametrize("package", ["online_models", "streams", "schemas"])
def test_no_file_is_over_500_lines(package: str) -> None:
    long = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and name not in LONG_FILES:
            long[name] = lines
    assert long == {}


def test_the_layout_check_sees_a_wrong_import(tmp_path: Path) -> None:
    # The checks read real files; this pins the two helpers they rest on.
    source = tmp_path / "kmeans.py"
    source.write_text(
        "from online_models.churn.model import ChurnModel\n"
        "def f():\n    from . import names\n"
        "if True:\n    import faust\n"
    )
    names = set(imported_names(source, "online_models.segments.kmeans"))
    assert {"online_models.churn.model", "online_models.segments.names", "faust"} <= names
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
