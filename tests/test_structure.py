"""The shape of the package: the import graph has no cycles, and the modules that read and write results
(metadata contract, files, writers, report, formula providers, chemistry, plugins, matchms filter) work
without torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "matchms_diffms"

# Cycles that exist and are being removed (issue #15, point 4: shared datasets, losses and model assembly
# move out of the train task modules). A new cycle fails the test.
KNOWN_CYCLES: list[set] = []

TORCH_FREE = ["matchms_diffms", "matchms_diffms.metadata", "matchms_diffms.files", "matchms_diffms.writers",
              "matchms_diffms.report", "matchms_diffms.formula_sources", "matchms_diffms.chem",
              "matchms_diffms.plugins", "matchms_diffms.filters", "matchms_diffms.hookspecs"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, from every import statement (also those inside
    functions: a lazy import is a dependency too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            deps.update(t for t in targets if t in modules and t != name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    """Control: the finder is not vacuous."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]


def test_graph_sees_relative_and_lazy_imports():
    graph = import_graph()
    assert "matchms_diffms.metadata" in graph["matchms_diffms.report"]          # from .metadata import ...
    assert "matchms_diffms.plugins" in graph["matchms_diffms.weights"]          # inside a function
    assert "matchms_diffms.chem.formula" in graph["matchms_diffms.chem.decomposition"]


def test_import_graph_has_no_new_cycles():
    new = [c for c in cycles(import_graph()) if c not in KNOWN_CYCLES]
    assert not new, f"import cycles: {[sorted(c) for c in new]}"


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_evaluation_does_not_reach_train():
    """Evaluation reads labelled spectra through ``labelled.py``; nothing it imports, directly or not, is in
    ``train/`` (the training commands build on evaluation's modules, not the other way round)."""
    graph = import_graph()
    for module in ("matchms_diffms.evaluate", "matchms_diffms.evaluate_decoder", "matchms_diffms.labelled"):
        into_train = {m for m in _reachable(graph, module) if m.startswith("matchms_diffms.train")}
        assert not into_train, (module, sorted(into_train))


def test_adapters_import_nothing_from_train():
    """The adapters stand on the public facade; no import of theirs names ``matchms_diffms.train``."""
    for path in (REPO / "adapters").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n.startswith("matchms_diffms.train") for n in names), path


def _literal_constants(path: Path) -> dict[str, object]:
    """Module-level UPPER_CASE names bound to a literal list, tuple or dict of at least three entries."""
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if name.isupper() and isinstance(value, (list, tuple, dict)) and len(value) >= 3:
                found[name] = value
    return found


def test_chemistry_constants_have_one_home():
    """Adducts, atom types and valences live in chem/; no module outside it spells one out again."""
    chem = {f"chem/{p.name}:{k}": v for p in (PACKAGE / "chem").glob("*.py") for k, v in _literal_constants(p).items()}
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "chem":
            continue
        for name, value in _literal_constants(path).items():
            twins = [where for where, v in chem.items() if v == value]
            assert not twins, f"{path.relative_to(PACKAGE)}:{name} repeats {twins}"


def test_code_points_only_to_documents_a_clone_has():
    """Docstrings say what they mean or point to this repository's own docs, not to development notes."""
    outside = ("shared/docs", "diffms-model.md", "evaluation.md", "mzmine-sirius.md")
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "adapters").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert not [d for d in outside if d in text], path


def test_metadata_is_a_leaf():
    assert import_graph()["matchms_diffms.metadata"] == set()


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_works_without_torch(module):
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                 "MATCHMS_DIFFMS_LOAD_PLUGINS": ""})
    assert result.returncode == 0, f"{module} imports torch" + result.stderr[-2000:]


def test_public_api_names_resolve_to_their_one_home():
    import matchms_diffms

    for name in matchms_diffms.__all__:
        value = getattr(matchms_diffms, name)
        if name != "__version__":
            home = matchms_diffms._PUBLIC[name]
            module = __import__(f"matchms_diffms.{home}", fromlist=[name])
            assert getattr(module, name) is value, name
    with pytest.raises(AttributeError):
        matchms_diffms.not_a_public_name


def test_library_modules_hold_no_click():
    """click lives in cli.py, cli_options.py and commands/ (and train/cli.py, the adapters' plugins)."""
    click_free = ["io", "batch", "checkpoint", "files", "metadata", "evaluate", "evaluate_decoder", "report",
                  "weights", "annotator", "filters", "writers", "formula_sources", "plugins", "ranking"]
    for name in click_free:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and not node.level}
        assert "click" not in imported, name
