"""The layout rules: the library does the work, launchers only parse, call and print."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = sorted(p for p in (REPO / "launcher").glob("*.py") if p.name != "__init__.py")
LIBRARY = [p for d in ("pixelbert", "data_pipeline") for p in (REPO / d).rglob("*.py")]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _code_lines(path: Path) -> int:
    """Non-blank lines after the module docstring."""
    source = path.read_text()
    tree = ast.parse(source)
    start = tree.body[0].end_lineno if ast.get_docstring(tree) else 0
    return sum(1 for line in source.splitlines()[start:] if line.strip())


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_a_launcher_is_thin_and_imports_no_other_launcher(path):
    assert _code_lines(path) <= 60, f"{path.name}: the work belongs in pixelbert/"
    others = {n for n in _imports(path) if n.split(".")[0] == "launcher" and n != "launcher"
              and not n.startswith("launcher.cli")}
    assert not others, f"{path.name} imports {sorted(others)}"


def test_the_library_never_imports_the_launchers():
    offenders = {str(p.relative_to(REPO)) for p in LIBRARY if any(n.split(".")[0] == "launcher" for n in _imports(p))}
    assert not offenders


def test_the_data_pipeline_does_not_depend_on_evaluation():
    offenders = {str(p.relative_to(REPO)) for p in (REPO / "data_pipeline").rglob("*.py")
                 if any(n.startswith("pixelbert.evaluation") for n in _imports(p))}
    assert not offenders


def test_nothing_edits_the_import_path():
    for path in [*LAUNCHERS, *LIBRARY]:
        assert "sys.path.insert" not in path.read_text(), path


def test_every_launcher_is_also_a_console_script():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    targets = {v.split(":")[0] for v in scripts.values()}
    assert {f"launcher.{p.stem}" for p in LAUNCHERS if p.stem != "cli"} <= targets
    for target in scripts.values():  # each entry point exists
        module, func = target.split(":")
        assert f"def {func}(" in (REPO / (module.replace(".", "/") + ".py")).read_text(), target
