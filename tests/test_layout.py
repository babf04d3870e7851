"""The house rules of the layout (README, Development): fermon/ laid out by stage, no import circles,
no module that has grown several jobs, and one atomic write."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGES = ("fermon", "training")
MAX_TOP_LEVEL = 12  # modules and subpackages of fermon/, not counting data/ and weights/
MAX_LINES = 400


def module_files(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of a package (a package is its __init__.py)."""
    files = {}
    for path in sorted((REPOSITORY / package).rglob("*.py")):
        parts = path.relative_to(REPOSITORY).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every import statement, at any depth (inside functions too), except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = node.orelse
        stack.extend(children)


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that importing ``name`` runs: what it imports, and the packages above each
    of those (their __init__ runs first), except its own parents, which are already running."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in known else base)
    found = set()
    own_parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            if module in known and module != name and module not in own_parents:
                found.add(module)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    files = module_files(package)
    known = set(files) | {m for p in PACKAGES for m in module_files(p)}
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circles(package: str) -> None:
    cycle = find_cycle(import_graph(package))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_circle_made_inside_a_function(tmp_path: Path) -> None:
    """The check itself: a circle closed by an import inside a function is found, one under
    TYPE_CHECKING is not."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n")
    known = {"a", "b", "c"}
    graph = {name: imported_modules(name, tmp_path / f"{name}.py", known) for name in known}
    assert find_cycle(graph) == ["a", "b", "a"]
    assert graph["c"] == set()


def test_the_top_level_reads_as_the_pipeline() -> None:
    entries = [
        p.name
        for p in (REPOSITORY / "fermon").iterdir()
        if p.name not in {"data", "weights", "__pycache__"} and not p.name.endswith((".pyc", ".egg-info"))
    ]
    assert len(entries) <= MAX_TOP_LEVEL, sorted(entries)
    for package in [p for p in (REPOSITORY / "fermon").iterdir() if (p / "__init__.py").is_file()]:
        docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
        assert docstring, f"fermon/{package.name}/__init__.py says nothing of what enters and what leaves"


def test_no_module_has_grown_several_jobs() -> None:
    long = {
        str(path.relative_to(REPOSITORY)): lines
        for path in module_files("fermon").values()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_writer_goes_through_the_one_atomic_write() -> None:
    """A rename that publishes a file happens in fermon.inputs.storage.atomic_path and nowhere else."""
    rename = re.compile(r"\bos\.(replace|rename)\(|\.(replace|rename)\((temporary|tmp)")
    offenders = [
        str(path.relative_to(REPOSITORY))
        for package in PACKAGES
        for path in module_files(package).values()
        if rename.search(path.read_text(encoding="utf-8")) and path != REPOSITORY / "fermon/inputs/storage.py"
    ]
    assert not offenders


# The pipeline's order: a module may import its own stage and those before it, never a later one.
STAGES = (
    "fermon.errors",
    "fermon.inputs",
    "fermon.video",
    "fermon.faces",
    "fermon.people",
    "fermon.expression",
    "fermon.classify",
    "fermon.run",
    "fermon.analysis",
    "fermon.report",
    "fermon.cli",
)


def stage_of(module: str) -> int:
    for index, stage in enumerate(STAGES):
        if module == stage or module.startswith(stage + "."):
            return index
    return -1  # the package itself (fermon/__init__.py: the version and the lazy analyst API)


def test_imports_run_down_the_pipeline() -> None:
    backwards = [
        f"{module} -> {target}"
        for module, targets in import_graph("fermon").items()
        for target in targets
        if stage_of(target) > stage_of(module) >= 0
    ]
    assert not backwards, backwards
    listed = {stage.split(".")[1].removesuffix(".py") for stage in STAGES}
    present = {p.name.removesuffix(".py") for p in (REPOSITORY / "fermon").iterdir()}
    assert present - listed - {"__init__", "data", "weights", "__pycache__"} == set(), "a stage missing from STAGES"
