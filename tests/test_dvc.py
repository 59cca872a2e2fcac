"""DVC on the pipeline: dvc repro, a no-op rerun, dvc exp run -S, metrics, and a remote."""

import json
import re
import shutil

import pytest

from src.files import file_md5
from tests.conftest import ROOT, TINY, run_cli

pytestmark = pytest.mark.e2e


def dvc_project(project, *params: str) -> None:
    """The copied project as a git and DVC repository, params.yaml made with `params`."""
    shutil.copytree(ROOT / ".dvc", project / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    run_cli(project, "git", "init", "-q")
    run_cli(project, "git", "config", "user.email", "test@example.com")
    run_cli(project, "git", "config", "user.name", "test")
    run_cli(project, "-m", "src.params", *params)
    run_cli(project, "git", "add", "-A")
    run_cli(project, "git", "commit", "-qm", "init")


def test_dvc_repro_then_noop_then_exp_run_with_a_new_bottleneck(project):
    dvc_project(project, *TINY)
    run_cli(project, "dvc", "repro")
    assert "up to date" in run_cli(project, "dvc", "repro").stdout
    shown = json.loads(run_cli(project, "dvc", "metrics", "show", "--json").stdout)
    written = json.loads((project / "reports/metrics.json").read_text())
    read = shown[""]["data"]["reports/metrics.json"]["data"]  # what dvc read from the file
    assert read["test_accuracy"] == written["test_accuracy"] and read["bottleneck"] == 32

    run_cli(project, "git", "add", "-A")
    run_cli(project, "git", "commit", "-qm", "baseline")
    run_cli(project, "dvc", "exp", "run", "-S", "bottleneck=16", *[f"-S{o}" for o in TINY])
    from src import models

    assert models.load(project / "models/encoder.keras").output_shape == (None, 16)
    assert json.loads((project / "reports/metrics.json").read_text())["bottleneck"] == 16
    shown = run_cli(project, "dvc", "exp", "show", "--csv").stdout
    assert "bottleneck" in shown and "test_accuracy" in shown

    # a DVC remote (a local folder here; S3, GCS, SSH... for users): push, lose, pull back
    run_cli(project, "dvc", "remote", "add", "-d", "storage", str(project.parent / "remote"))
    run_cli(project, "dvc", "push")
    outputs = ["data/prepared.npz", "models/encoder.keras", "models/autoencoder.keras",
               "models/classifier.keras", "reports/figures/history.png"]  # fmt: skip
    before = {o: file_md5(project / o) for o in outputs}
    shutil.rmtree(project / ".dvc/cache")
    for o in outputs:
        (project / o).unlink()
    run_cli(project, "dvc", "pull")
    assert {o: file_md5(project / o) for o in outputs} == before


def test_dvc_repro_with_the_ladder_writes_every_stage_output(project):
    """model=ladder through DVC (docs/ladder.md): every out, metric and plot of dvc.yaml."""
    import yaml

    dvc_project(project, "experiment=digits_ladder", *TINY, "model.epochs=2",
                "model.hidden=[32,16]", "model.denoising_weights=[1000,10,0.1,0.1]")  # fmt: skip
    run_cli(project, "dvc", "repro")
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    paths = yaml.safe_load((project / "params.yaml").read_text())["paths"]
    declared = [re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)],
                       next(iter(o)) if isinstance(o, dict) else o)
                for stage in stages.values() for kind in ("outs", "metrics", "plots")
                for o in stage.get(kind, [])]  # fmt: skip
    assert declared and not [o for o in declared if not (project / o).exists()]
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["bottleneck"] == 10 and metrics["test_accuracy"] > 0.2  # chance is 0.1
    assert "up to date" in run_cli(project, "dvc", "repro").stdout
