"""The tree is the architecture: nothing below the CLI imports it, and the core does not import the edges."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tokenweight

PACKAGE = Path(tokenweight.__file__).parent
#: the session notes folder beside a developer's checkout, which a user's clone does not have
OUTSIDE = "/".join(("..", "shared"))
CORE = (
    "scoring.py",
    "windows.py",
    "weighting.py",
    "loss.py",
    "logits.py",
    "documents.py",
    "choices.py",
    "short_nll.py",
    "exposure.py",
    "token_weighting.py",
    "sequence_parallel.py",
)
#: what the core may import of tokenweight: itself (scoring -> weighting -> loss -> the component)
CORE_IMPORTS = {f"tokenweight.{name[:-3]}" for name in CORE} | {"tokenweight.errors", "tokenweight.loss_kernels"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_nothing_outside_the_cli_imports_it():
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in _modules()
        if "cli" not in p.relative_to(PACKAGE).parts and any(n.startswith("tokenweight.cli") for n in _imports(p))
    ]
    assert offenders == []


def test_the_core_imports_nothing_of_the_edges():
    for name in CORE:
        ours = {n for n in _imports(PACKAGE / name) if n.startswith("tokenweight")}
        assert ours <= CORE_IMPORTS, (name, ours - CORE_IMPORTS)


def test_evaluate_sits_below_the_stages_and_the_report():
    """evaluate/ takes the stage's EvalConfig by its fields and leaves tables and figures to
    tokenweight.report; its cache imports nothing of evaluate/ (imports inside functions included)."""
    above = ("tokenweight.stages", "tokenweight.report", "tokenweight.cli", "tokenweight.demo")
    found = {str(p.relative_to(PACKAGE)): sorted(n for n in _imports(p) if n.startswith(above)) for p in _modules()}
    assert {k: v for k, v in found.items() if k.startswith("evaluate/") and v} == {}
    assert {n for n in _imports(PACKAGE / "evaluate" / "cache.py") if n.startswith("tokenweight.evaluate")} == set()


def _module_names() -> dict[str, Path]:
    """``tokenweight.x.y`` -> file, packages by their ``__init__``."""
    out = {}
    for p in _modules():
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _import_graph() -> dict[str, set[str]]:
    """Module -> the tokenweight modules it imports, at the top or inside functions (``from a.b
    import c`` counts ``a.b`` and ``a.b.c`` when that is a module); packages' ``__init__`` (lazy
    export tables) are left out, as the importer of a name resolves to the module defining it."""
    names = _module_names()
    packages = {m for m, p in names.items() if p.name == "__init__.py"}
    graph = {}
    for name, path in names.items():
        if name in packages:
            continue
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {d for d in deps if d in names and d not in packages and d != name}
    return graph


def test_no_import_cycles_even_inside_functions():
    graph, cycles, state = _import_graph(), [], {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_importing_the_demo_does_not_load_the_cli():
    code = "import sys, tokenweight.demo; print(sorted(m for m in sys.modules if m.startswith('tokenweight.cli')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_module_points_outside_the_repository():
    for p in [*_modules(), *Path(PACKAGE.parent, "docs").glob("*.md"), PACKAGE.parent / "README.md"]:
        text = p.read_text(encoding="utf-8")
        assert OUTSIDE not in text and "STACK" + "_NOTES" not in text, p


def test_test_helpers_are_imported_by_name():
    """Tests import their helpers as ``tests.<dir>.<module>``: no ``sys.path`` edits."""
    tests = Path(__file__).parents[1]
    edits = [str(p.relative_to(tests)) for p in tests.rglob("*.py") if "sys.path" in p.read_text(encoding="utf-8")]
    assert edits == [str(Path(__file__).relative_to(tests))]  # this file names it, nothing else


def test_tests_mirror_the_package():
    """``tests/<package path>/test_<module>[_<aspect>].py`` tests the module ``tokenweight/<package
    path>/<module>.py`` (``<module>`` may be the package's own name, for its ``__init__``);
    cross-cutting contracts (several packages at once, the docs, the engines) live in
    ``tests/contracts/``."""
    tests = Path(__file__).parents[1]
    strays = []
    for p in sorted(tests.rglob("test_*.py")):
        rel = p.relative_to(tests)
        if rel.parts[0] == "contracts":
            continue
        package = PACKAGE.joinpath(*rel.parts[:-1])
        modules = {q.stem for q in package.glob("*.py") if q.stem != "__init__"} | {package.name}
        name = p.stem[len("test_") :]
        if not package.is_dir() or not any(name == m or name.startswith(f"{m}_") for m in modules):
            strays.append(str(rel))
    assert strays == []
