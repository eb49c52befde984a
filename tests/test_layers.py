"""The packages' layers point one way: benchmark <- model_zoo <- leaderboard <- robench (the command line)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: each package, and the packages it may import (besides itself)
MAY_IMPORT = {
    "benchmark": set(),
    "model_zoo": {"benchmark"},
    "leaderboard": {"benchmark", "model_zoo"},
    "robench": {"benchmark", "model_zoo", "leaderboard"},
}


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(MAY_IMPORT)


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = {
        str(path.relative_to(REPO)): sorted(_imported_packages(path) - MAY_IMPORT[package] - {package})
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_importing_the_zoo_or_the_leaderboard_loads_no_evaluation_machinery():
    code = ("import sys, model_zoo, leaderboard; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('benchmark', 'robench')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    loaded = set(ast.literal_eval(out))
    assert not loaded & {"benchmark.runner", "benchmark.checks", "benchmark.journal", "benchmark.distributed",
                         "benchmark.analysis"}
    assert not any(name.startswith("robench") for name in loaded)
    assert "benchmark.record" in loaded  # the check above looks at the right names


def test_the_command_line_modules_form_no_cycle():
    imports = {path.stem: {node.module for node in ast.walk(ast.parse(path.read_text()))
                           if isinstance(node, ast.ImportFrom) and node.level == 1}
               for path in (REPO / "robench").glob("*.py")}
    for module, targets in imports.items():
        for target in targets:
            assert module not in imports.get(target, set()), f"robench.{module} and robench.{target} import each other"
