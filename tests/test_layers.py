"""The package's layers: a module never imports one of a higher layer (issue 27)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "icm_cli"


def _imports(path: Path) -> set[str]:
    """Every ``icm_cli...`` module a file imports, at any depth (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("icm_cli"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("icm_cli"))
    return found


def test_the_bottom_layers_import_nothing_from_the_model():
    for bottom in ("config.py", "errors.py", "process_settings.py"):
        imported = _imports(PACKAGE / bottom)
        assert not [m for m in imported if m.startswith(("icm_cli.predict", "icm_cli.runner", "icm_cli.commands",
                                                          "icm_cli.predictor", "icm_cli.jobs"))], (bottom, imported)


def test_the_pure_tensor_core_imports_nothing_else_of_icm():
    for path in (PACKAGE / "core").glob("*.py"):
        outside = [m for m in _imports(path) if not m.startswith("icm_cli.core")]
        assert not outside, (path.name, outside)


def test_nothing_below_the_command_line_imports_a_command():
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "commands" or path.name in ("cli.py", "__main__.py"):
            continue
        assert not [m for m in _imports(path) if m.startswith("icm_cli.commands")], path


def test_the_runner_and_the_model_print_nothing_themselves():
    """runner/, engines/, predict/ and core/ report through what they are given (a Reporter), never the
    command line's console, and import no command."""
    for folder in ("runner", "engines", "predict", "core"):
        for path in (PACKAGE / folder).glob("*.py"):
            found = [m for m in _imports(path) if m.startswith(("icm_cli.console", "icm_cli.commands"))]
            assert not found, (f"{folder}/{path.name}", found)


def test_the_model_imports_nothing_of_its_users():
    """``predict/`` is the model: the public API (``predictor``), the runner's adapter (``pipeline``), the runner,
    the jobs and the commands sit above it; and the old name ``predict.engine`` is gone (issue 27)."""
    above = ("icm_cli.predictor", "icm_cli.pipeline", "icm_cli.runner", "icm_cli.jobs", "icm_cli.engines",
             "icm_cli.commands")
    for path in (PACKAGE / "predict").glob("*.py"):
        imported = _imports(path)
        assert not [m for m in imported if m.startswith(above)], (path.name, imported)
        assert not [m for m in imported if m.startswith("icm_cli.predict.engine")], path.name
    assert not (PACKAGE / "predict" / "engine.py").exists()
