"""Bad input through the real command lines: a clear message naming the key or file, a non-zero
exit, earlier outputs byte-for-byte unchanged, and any MLflow run that was started ended FAILED."""

import hashlib

import pytest
from mlflow import MlflowClient

from tests.conftest import copy_project, run_cli, run_stages

pytestmark = pytest.mark.e2e
TINY = ["pretrain.epochs=2", "classify.epochs=2"]

# (stage, overrides, text the last line of stderr must contain)
CASES = [
    ("pretrain", ["bottleneck=0"], "bottleneck=0 is not allowed"),
    ("pretrain", ["bottleneck=-4"], "bottleneck=-4 is not allowed"),
    ("pretrain", ["bottleneck=abc"], "bottleneck='abc' is not allowed"),
    ("pretrain", ["bottleneck=2.5"], "bottleneck=2.5 is not allowed"),
    ("pretrain", ["bottleneck=100"], "larger than the 64 input pixels"),
    ("classify", ["dropout=-0.1"], "dropout=-0.1 is not allowed"),
    ("classify", ["dropout=1.0"], "dropout must be a number in [0, 1)"),
    ("classify", ["dropout=high"], "dropout='high' is not allowed"),
    ("pretrain", ["pretrain.epochs=0"], "pretrain.epochs=0 is not allowed"),
    ("classify", ["classify.batch_size=-1"], "classify.batch_size=-1"),
    ("pretrain", ["pretrain.learning_rate=0"], "pretrain.learning_rate=0"),
    ("pretrain", ["pretrain.learning_rate=-0.1"], "pretrain.learning_rate=-0.1"),
    ("pretrain", ["pretrain.learning_rate=1e6"], "must be a number in (0, 1]"),
    ("classify", ["classify.freeze_encoder=maybe"], "classify.freeze_encoder='maybe'"),
    ("prepare", ["dataset.test_size=0.95"], "dataset.test_size=0.95"),
    ("prepare", ["seed=-1"], "seed=-1 is not allowed"),
    ("prepare", ["dataset.name=cifar"], "dataset.name='cifar' is not allowed"),
    ("evaluate", ["evaluate.tsne_max_samples=0"], "evaluate.tsne_max_samples"),
    ("pretrain", ["botleneck=8"], "Key 'botleneck' is not in struct"),  # Hydra's own message
    ("prepare", ["dataset=cifar"], "Could not find 'dataset/cifar'"),  # lists the options
    ("pretrain", ["model=transformer"], "Could not find 'model/transformer'"),
    ("classify", ["bottleneck=16"], "has 32 outputs but bottleneck=16"),
    ("pretrain", ["paths.prepared=missing.npz"], "prepared data missing.npz not found"),
    ("pretrain", ["paths.prepared=README.md"], "README.md is not a readable .npz"),
    ("classify", ["paths.encoder=truncated.keras"], "truncated.keras cannot be loaded"),
    ("pretrain", ["paths.encoder=pyproject.toml/encoder.keras"], "cannot create output folder"),
    ("pretrain", ["mlflow.tracking_uri=nosuchscheme://x"], "mlflow.tracking_uri='nosuchscheme"),
    ("prepare", ["dataset=mnist", "dataset.path=no/mnist.npz"], "dataset.path='no/mnist.npz' not"),
]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A project after a tiny full pipeline, with a damaged copy of the encoder beside it."""
    project = copy_project(tmp_path_factory.mktemp("bad-input"))
    run_stages(project, *TINY)
    (project / "README.md").write_text("not an npz\n")
    encoder = (project / "models/encoder.keras").read_bytes()
    (project / "truncated.keras").write_bytes(encoder[: len(encoder) // 2])
    return project


def _checksums(project) -> dict[str, str]:
    return {
        str(p.relative_to(project)): hashlib.md5(p.read_bytes()).hexdigest()
        for folder in ("data", "models", "reports")
        for p in sorted((project / folder).rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("stage, overrides, message", CASES, ids=[" ".join(c[1]) for c in CASES])
def test_bad_input_is_reported_and_changes_nothing(ran, stage, overrides, message):
    before = _checksums(ran)
    client = MlflowClient(tracking_uri=f"sqlite:///{ran / 'mlflow.db'}")

    def runs() -> list:
        experiment = client.get_experiment_by_name("ae-classify")
        return client.search_runs([experiment.experiment_id]) if experiment else []

    runs_before = {r.info.run_id for r in runs()}
    env = {"MLFLOW_TRACKING_URI": ""} if any("tracking_uri" in o for o in overrides) else None
    proc = run_cli(ran, "-m", f"src.{stage}", *TINY, *overrides, check=False, env=env)

    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    if message.startswith(("Key '", "Could not find")):
        assert message in proc.stderr  # Hydra's own error, which names the key or lists options
    else:
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, last
    assert _checksums(ran) == before
    new_runs = [r for r in runs() if r.info.run_id not in runs_before]
    assert all(r.info.status == "FAILED" and r.data.tags.get("error") for r in new_runs)
