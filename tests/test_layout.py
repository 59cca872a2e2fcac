"""The shape of the code: stages never import stages, and dvc.yaml lists every module a stage
runs, as the code's imports say (read with ast, so nothing is imported)."""

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

SRC = ROOT / "src"
STAGES = ("prepare", "pretrain", "classify", "evaluate")
ORCHESTRATORS = ("train", "sweep")  # only these may run stages


def src_imports(module: str, src: Path = SRC) -> set[str]:
    """The src modules that src/<module>.py imports, at the top or inside functions."""
    tree = ast.parse((src / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "src":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("src."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("src.")}
    return found


def closure(module: str) -> set[str]:
    """module and every src module it imports, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(src_imports(m))
    return seen


@pytest.mark.parametrize("module", sorted(p.stem for p in SRC.glob("*.py")))
def test_only_train_and_sweep_import_stages(module):
    if module in ORCHESTRATORS:
        return
    imported = src_imports(module) & set(STAGES) - {module}
    assert not imported, f"src/{module}.py imports stage modules {sorted(imported)}"


def test_import_scan_sees_every_form_of_import(tmp_path):
    code = (
        "import src.data\nfrom src.files import x\ndef f():\n    from src import classify, plots\n"
    )
    (tmp_path / "m.py").write_text(code)
    assert src_imports("m", tmp_path) == {"data", "files", "classify", "plots"}


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_deps_list_every_module_the_stage_runs(stage):
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
    listed = {Path(d).stem for d in deps if d.startswith("src/")}
    needed = closure(stage)
    assert listed == needed, f"{stage}: missing {needed - listed}, not imported {listed - needed}"
