"""The shape of the code: stages never import stages, and dvc.yaml lists every module a stage
runs, as the code's imports say (src.imports reads them with ast, so nothing is imported)."""

from pathlib import Path

import pytest
import yaml

from src.imports import closure, modules, source_files, src_imports
from tests.conftest import ROOT

SRC = ROOT / "src"
STAGES = ("prepare", "pretrain", "classify", "evaluate")
ORCHESTRATORS = ("train",)  # only these may run stages


@pytest.mark.parametrize("module", modules(SRC))
def test_only_train_imports_stages(module):
    if module in ORCHESTRATORS:
        return
    imported = src_imports(module) & set(STAGES) - {module}
    assert not imported, f"src module {module} imports stage modules {sorted(imported)}"


def fake_src(root: Path, files: dict[str, str]) -> Path:
    """A src/ folder under `root` with these files (path -> code)."""
    for name, code in files.items():
        (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "src" / name).write_text(code)
    return root / "src"


def test_import_scan_sees_every_form_of_import(tmp_path):
    src = fake_src(tmp_path, {
        "__init__.py": "",
        "m.py": "import src.data\nfrom src.files import x\nimport numpy\n"
                "def f():\n    from src import classify, plots, VERSION\n",
        "data.py": "", "files.py": "", "classify.py": "", "plots.py": "",
    })  # fmt: skip
    assert src_imports("m", src) == {"data", "files", "classify", "plots"}


def test_import_scan_names_subpackage_modules_by_their_dotted_path(tmp_path):
    src = fake_src(tmp_path, {
        "__init__.py": "",
        "train.py": "from src.sweeps import job\nfrom src.sweeps.context import Ctx\n",
        "other.py": "import src.sweeps.job\n",
        "sweeps/__init__.py": "",
        "sweeps/job.py": "from . import context\nfrom ..data import load\n",
        "sweeps/context.py": "from src.files import write_json\n",
        "data.py": "", "files.py": "",
    })  # fmt: skip
    assert src_imports("train", src) == {"sweeps", "sweeps.job", "sweeps.context"}
    assert src_imports("other", src) == {"sweeps", "sweeps.job"}
    assert src_imports("sweeps.job", src) == {"sweeps", "sweeps.context", "data"}
    assert closure("sweeps.job", src) == {
        "sweeps",
        "sweeps.job",
        "sweeps.context",
        "data",
        "files",
    }
    assert source_files("other", src) == sorted([
        src / "data.py", src / "files.py", src / "other.py", src / "sweeps/__init__.py",
        src / "sweeps/context.py", src / "sweeps/job.py",
    ])  # fmt: skip
    assert modules(src) == ["data", "files", "other", "sweeps", "sweeps.context", "sweeps.job",
                            "train"]  # fmt: skip


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_deps_list_every_module_the_stage_runs(stage):
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
    listed = {ROOT / d for d in deps if d.startswith("src/")}
    needed = set(source_files(stage))
    assert listed == needed, f"{stage}: missing {needed - listed}, not imported {listed - needed}"


def test_functions_fit_on_a_screen_and_classes_stay_small():
    """No function over 40 lines and no class over 100 lines in src/ (docstrings included)."""
    import ast

    too_long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            limit = {ast.FunctionDef: 40, ast.ClassDef: 100}.get(type(node))
            if limit and node.end_lineno - node.lineno + 1 > limit:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not too_long, too_long


def test_dvc_lock_matches_the_code_and_params_so_a_fresh_clone_has_nothing_to_rerun():
    """Every file dep in dvc.lock has the md5 the file has now, and every param its value in
    params.yaml: otherwise a fresh clone's `dvc repro` reruns stages and rewrites dvc.lock."""
    import hashlib

    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stale = []
    for stage, entry in lock.items():
        for dep in entry.get("deps", []):
            path = ROOT / dep["path"]
            if path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() != dep["md5"]:
                stale.append(f"{stage}: {dep['path']}")
        for key, value in entry.get("params", {}).get("params.yaml", {}).items():
            here = params
            for part in key.split("."):  # dvc.yaml may name a nested key: dataset.name
                here = here.get(part) if isinstance(here, dict) else None
            if here != value:
                stale.append(f"{stage}: params {key}")
    assert not stale, f"dvc.lock is stale (run dvc repro and commit dvc.lock): {stale}"


def test_readme_stays_a_newcomers_page_of_at_most_250_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move depth to docs/"
