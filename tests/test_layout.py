"""The package's shape: no import cycles, light models, and DVC deps that match the code.

Imports are read from the source (every `import` and `from ... import`, at module level,
inside functions and under TYPE_CHECKING alike), so a cycle hidden in a function body or a
stage dependency reached only at run time is found as well.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import yaml

from tests.conftest import REPO

PACKAGE = "seqmodels"


def module_file(module: str) -> Path | None:
    """The source file of a project module (a package's __init__.py), or None."""
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def imports_of(module: str) -> frozenset[str]:
    """Project modules that `module`'s source imports, directly."""
    path = module_file(module)
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *filter(None, [base])])
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            names = [f"{base}.{alias.name}" if module_file(f"{base}.{alias.name}") else base
                     for alias in node.names]
        else:
            continue
        # An import names the module it imports; its parent packages' __init__ run too, but as
        # in import-linter's graph they are not counted as edges (a package's __init__ that
        # imports its own modules would otherwise make every sibling import a cycle).
        found.update(name for name in names
                     if name.split(".")[0] in (PACKAGE, "pipelines") and module_file(name) and name != module)
    return frozenset(found)


def project_modules() -> list[str]:
    files = sorted((REPO / PACKAGE).rglob("*.py"))
    return [".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for f in files]


def cycles(modules: list[str]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in imports_of(node):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return found


def closure(module: str) -> set[str]:
    """Every project module `module` imports, directly or through others, itself included."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(imports_of(current))
    return seen


def test_the_package_has_no_import_cycle():
    assert cycles(project_modules()) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path, monkeypatch):
    for name, source in {"a": "import seqmodels_fake.b\n",
                         "b": "def f():\n    from seqmodels_fake import a\n"}.items():
        (tmp_path / "seqmodels_fake").mkdir(exist_ok=True)
        (tmp_path / "seqmodels_fake" / f"{name}.py").write_text(source)
    (tmp_path / "seqmodels_fake" / "__init__.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", "seqmodels_fake")
    imports_of.cache_clear()
    try:
        assert cycles(["seqmodels_fake.a"]) == [["seqmodels_fake.a", "seqmodels_fake.b"]]
    finally:
        imports_of.cache_clear()


def test_spec_imports_nothing_of_the_package():
    assert imports_of("seqmodels.spec") <= {"seqmodels"}


def test_no_modality_module_imports_the_registry():
    """The registry imports the modules; one importing it back would be a cycle waiting to happen."""
    from seqmodels.data.registry import MODALITIES

    modules = {entry.prepare.__module__ for entry in MODALITIES.values()}
    assert len(modules) == len(MODALITIES)
    assert {m: "seqmodels.data.registry" in closure(m) for m in modules} == dict.fromkeys(modules, False)


def test_building_a_model_imports_neither_pandas_nor_pyarrow():
    code = ("import sys\n"
            "from seqmodels.models import build_model, model_kinds\n"
            "from seqmodels.models.config import ModelConfig\n"
            "from seqmodels.spec import DataSpec\n"
            "build_model(ModelConfig(kind='conv'), DataSpec(kind='series', input_shape=(16, 2)))\n"
            "assert len(model_kinds()) >= 4\n"
            "print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            check=True)
    assert result.stdout.strip() == "[]"


def runtime_closure(module: str) -> set[Path]:
    """The project files that run when `module` runs: its imports, theirs, and the __init__ of
    every package on the way (importing a.b.c runs a/__init__ and a/b/__init__ first)."""
    files: set[Path] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        path = module_file(current)
        if path in files:
            continue
        files.add(path)
        parts = current.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)) if module_file(".".join(parts[:i])))
        todo.extend(imports_of(current))
    return files


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def code_deps(deps: list[str]) -> set[Path]:
    """The Python files a stage's deps cover (a folder covers every file under it)."""
    files: set[Path] = set()
    for dep in deps:
        path = REPO / dep
        if path.suffix == ".py":
            files.add(path)
        elif path.is_dir() and dep.split("/")[0] in (PACKAGE, "pipelines"):
            files.update(path.rglob("*.py"))
    return files


def test_stages_agree_across_the_package_the_entry_points_and_dvc_yaml():
    from seqmodels.stages import STAGES

    assert list(dvc_stages()) == list(STAGES)
    assert sorted(p.stem for p in (REPO / "pipelines").glob("*.py")) == sorted(STAGES)
    assert all(module_file(f"seqmodels.stages.{name}") for name in STAGES)


def test_every_stage_depends_on_exactly_the_code_it_runs():
    """A dep missing here leaves a stale output that `dvc status` calls up to date; an extra
    one reruns a stage for code it never runs."""
    problems = {}
    for name, stage in dvc_stages().items():
        declared = code_deps(stage.get("do", stage)["deps"])  # `foreach` stages declare under `do`
        imported = runtime_closure(f"pipelines.{name}")
        missing = sorted(str(p.relative_to(REPO)) for p in imported - declared)
        extra = sorted(str(p.relative_to(REPO)) for p in declared - imported)
        if missing or extra:
            problems[name] = {"missing": missing, "not imported": extra}
    assert problems == {}


EDGES = {"seqmodels/distributed", "seqmodels/versions.py", "seqmodels/remote.py"}  # Ray and DVC only here


def external_imports(path: Path) -> set[str]:
    """Top-level names of the packages a file imports (any depth in the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_ray_and_dvc_are_imported_only_at_the_edges():
    offenders = {str(path.relative_to(REPO)): sorted(found)
                 for path in sorted((REPO / PACKAGE).rglob("*.py"))
                 if not any(str(path.relative_to(REPO)).startswith(edge) for edge in EDGES)
                 and (found := external_imports(path) & {"ray", "dvc", "dvclive"})}
    assert offenders == {}
