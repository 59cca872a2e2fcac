"""Bad input: a clear message naming the key or file and what is allowed, earlier outputs
byte-for-byte unchanged, and any MLflow run that was started ended FAILED.

Most cases run in this process, through what a stage's command line runs after Hydra has
composed its config (src.cli.run_stage: the checks, the stage's run() and its MLflow run, inside
src.runtime.user_errors()). A few, one of each kind, go through the real command lines for what
only a process shows: exit code 1, one `error:` line on stderr and no traceback."""

import hashlib
import importlib
import os
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from src import cli
from src.runtime import UserError
from tests.conftest import TINY, copy_project, make_cfg, mlflow_store, run_cli, run_stages

POSITIVE, RATE, DROPOUT = "a positive integer", "a number in (0, 1]", "a number in [0, 1)"


def refused(setting: str, allowed: str) -> str:
    """The message of a value the config does not allow: `key=value`, then what it allows."""
    key = setting.split("=")[0]
    return f"{setting} is not allowed: {key} must be {allowed}"


# (stage, overrides, the whole message after "error: ", or its start when it ends with "…")
IN_PROCESS = [
    ("pretrain", ["bottleneck=-4"], refused("bottleneck=-4", POSITIVE)),
    ("pretrain", ["bottleneck=abc"], refused("bottleneck='abc'", POSITIVE)),
    ("pretrain", ["bottleneck=2.5"], refused("bottleneck=2.5", POSITIVE)),
    ("classify", ["dropout=-0.1"], refused("dropout=-0.1", DROPOUT)),
    ("classify", ["dropout=1.0"], refused("dropout=1.0", DROPOUT)),
    ("classify", ["dropout=high"], refused("dropout='high'", DROPOUT)),
    ("pretrain", ["pretrain.epochs=0"], refused("pretrain.epochs=0", POSITIVE)),
    ("classify", ["classify.batch_size=-1"], refused("classify.batch_size=-1", POSITIVE)),
    ("pretrain", ["pretrain.learning_rate=0"], refused("pretrain.learning_rate=0.0", RATE)),
    ("pretrain", ["pretrain.learning_rate=-0.1"], refused("pretrain.learning_rate=-0.1", RATE)),
    ("pretrain", ["pretrain.learning_rate=1e6"],
     refused("pretrain.learning_rate=1000000.0", RATE)),
    ("classify", ["classify.freeze_encoder=maybe"],
     refused("classify.freeze_encoder='maybe'", "true or false")),
    ("prepare", ["dataset.test_size=0.95"],
     refused("dataset.test_size=0.95", "a fraction in (0, 1) such that dataset.test_size + "
                                       "dataset.val_size < 1")),
    ("prepare", ["seed=-1"], refused("seed=-1", "a non-negative integer")),
    ("prepare", ["dataset.name=cifar"],
     refused("dataset.name='cifar'", "one of ('digits', 'mnist', 'fashion_mnist', 'npz')")),
    ("evaluate", ["evaluate.tsne_max_samples=0"],
     refused("evaluate.tsne_max_samples=0", "an integer >= 50")),
    ("pretrain", ["bottleneck=100"],
     "bottleneck=100 is larger than the 64 input pixels: an autoencoder must compress"),
    ("classify", ["bottleneck=16"],
     "encoder models/encoder.keras has 32 outputs but bottleneck=16: rerun pretrain"),
    ("pretrain", ["paths.prepared=missing.npz"],
     "prepared data missing.npz not found: run `python -m src.prepare` first"),
    ("pretrain", ["paths.prepared=README.md"],
     "prepared data README.md is not a readable .npz file (…"),
    ("pretrain", ["paths.encoder=pyproject.toml/encoder.keras"],
     "cannot create output folder pyproject.toml: …"),
    ("pretrain", ["mlflow.tracking_uri=nosuchscheme://x"],
     "mlflow.tracking_uri='nosuchscheme://x' cannot be used (…"),
]  # fmt: skip
EXPERIMENTS = (
    "digits_ladder, fashion_mnist, mnist, mnist_conv, mnist_dense16, mnist_dense2, "
    "mnist_dense32, mnist_dense4, mnist_dense8, mnist_label_budget, mnist_labels100, "
    "mnist_ladder, mnist_ladder_gamma"
)
# (command, overrides, the message): an option that its config group (conf/<group>/) lacks,
# refused by cli.checked_choices around each command's hydra.main before Hydra composes
UNKNOWN_CHOICE = [
    (
        "train",
        ["experiment=nonexistent"],
        f"experiment=nonexistent is not allowed: experiment must be one of {EXPERIMENTS} "
        "(conf/experiment/)",
    ),
    (
        "prepare",
        ["experiment=nonexistent"],
        f"experiment=nonexistent is not allowed: experiment must be one of {EXPERIMENTS} "
        "(conf/experiment/)",
    ),
    (
        "pretrain",
        ["bottleneck=8", "model=foo"],
        "model=foo is not allowed: model must be one of conv, dense, ladder (conf/model/)",
    ),
    (
        "classify",
        ["dataset=foo"],
        "dataset=foo is not allowed: dataset must be one of digits, "
        "fashion_mnist, mnist, npz (conf/dataset/)",
    ),
    (
        "evaluate",
        ["mlflow=remote"],
        "mlflow=remote is not allowed: mlflow must be one of local, server (conf/mlflow/)",
    ),
    (
        "train",
        ["-m", "model=dense,transformer", "bottleneck=8,16"],  # a sweep: every choice
        "model=transformer is not allowed: model must be one of conv, dense, ladder (conf/model/)",
    ),
]
# Hydra's own errors, raised while it composes the config, before any of the project's code
COMPOSE = [
    (["dataset=cifar"], ["Could not find 'dataset/cifar'", "options in 'dataset':\n\tdigits"]),
    (["model=transformer"], ["Could not find 'model/transformer'", "options in 'model':\n\tconv"]),
]
# (stage, overrides, what stderr must show): one case of each kind through the command line
COMMAND_LINE = [
    # a value the config refuses, as docs/configuration.md shows it
    ("pretrain", ["bottleneck=0"], "error: " + refused("bottleneck=0", POSITIVE)),
    # a damaged file, met inside the stage's MLflow run
    (
        "classify",
        ["paths.encoder=truncated.keras"],
        "error: model file truncated.keras cannot be loaded (",
    ),
    # the data, before prepare writes
    (
        "prepare",
        ["dataset=mnist", "dataset.path=no/mnist.npz"],
        "error: dataset.path='no/mnist.npz' not found (relative paths start at",
    ),
    # a key the config lacks, found by Hydra while it composes, in one line
    (
        "pretrain",
        ["botleneck=8"],
        "error: botleneck=8 is not allowed: the config has no key botleneck; did you mean "
        "bottleneck?",
    ),
    # an option its config group lacks, refused before Hydra composes
    ("pretrain", ["model=foo"], "error: " + UNKNOWN_CHOICE[2][2]),
]
# (command, overrides, the message): what Hydra finds while it composes the config, in one
# line: a key the config lacks (with the keys it has), an override it cannot read, an option of
# one of Hydra's own groups, a swept key (before the sweep's parent run); else its message
COMPOSING = [
    ("train", ["bottlenek=8"],
     "bottlenek=8 is not allowed: the config has no key bottlenek; did you mean bottleneck?"),
    ("pretrain", ["pretrain.foo=3"],
     "pretrain.foo=3 is not allowed: pretrain has no key foo; its keys are epochs, batch_size, "
     "learning_rate, patience, loss, noise_factor"),
    ("classify", ["model.filters=[8]"],
     "model.filters=[8] is not allowed: model has no key filters; its keys are name, hidden, "
     "activation"),
    ("evaluate", ["nosuchkey=1"],
     "nosuchkey=1 is not allowed: the config has no key nosuchkey; its keys are bottleneck, "
     "dropout, seed, pretrain, classify, evaluate, sweep, paths, dataset, model, mlflow"),
    ("train", ["bottleneck=[1,"],
     "bottleneck=[1, cannot be read (no viable alternative at input '[1,'): see "
     "https://hydra.cc/docs/advanced/override_grammar/basic/"),
    ("train", ["-m", "hydra/sweeper=nosuch"],
     "hydra/sweeper=nosuch is not allowed: hydra/sweeper must be one of basic, optuna"),
    ("train", ["-m", "dropout=0.0,0.5", "bottlenek=8,32"],
     "bottlenek=8,32 is not allowed: the config has no key bottlenek; did you mean bottleneck?"),
    ("predict", ["inptu=x"],
     "inptu=x is not allowed: the config has no key inptu; did you mean input?"),
    ("prepare", ["~nokey"], "Could not delete from config. 'nokey' does not exist."),
]  # fmt: skip
# (command, overrides, the message): config errors that must come before TensorFlow loads
BEFORE_TENSORFLOW = [
    ("train", ["bottleneck=-4"], refused("bottleneck=-4", POSITIVE)),
    ("train", ["experiment=nonexistent"], UNKNOWN_CHOICE[0][2]),
    ("prepare", ["dropout=1.0"], refused("dropout=1.0", "a number in [0, 1)")),
    ("pretrain", ["model=foo"], UNKNOWN_CHOICE[2][2]),
    ("train", ["-m", "bottleneck=8,32", "pretrain.foo=3"], COMPOSING[1][2]),  # a sweep's
]
# A dataset keras.datasets must download, on a machine without a network: one line at once
MNIST_OFFLINE = (
    "mnist is not in ~/.keras/datasets and could not be downloaded ([Errno -2] Name or service "
    "not known): set dataset.path= to a local copy, e.g. dataset.path=../shared/data/mnist.npz "
    "(a .npz with x_train, y_train, x_test and y_test, or a folder of the four IDX .gz files)"
)
OFFLINE = [
    ("train", ["dataset=mnist"], MNIST_OFFLINE),
    ("prepare", ["dataset=mnist"], MNIST_OFFLINE),
]
# Before PROBE: no network (no DNS), and no copy of Keras' datasets on disk
NO_NETWORK = """
import socket
from src import data
def offline(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")
socket.getaddrinfo = offline
data.keras_cached = lambda name: False
"""
# Runs a command as `python -m` does, then says on stderr whether TensorFlow was imported
PROBE = """
import runpy, sys
sys.argv = [{module!r}, *{overrides!r}]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
finally:
    print("tensorflow imported:", "tensorflow" in sys.modules, file=sys.stderr)
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> Path:
    """A project after a tiny full pipeline, with a damaged copy of the encoder beside it."""
    project = copy_project(tmp_path_factory.mktemp("bad-input"))
    run_stages(project, *TINY)
    (project / "README.md").write_text("not an npz\n")
    encoder = (project / "models/encoder.keras").read_bytes()
    (project / "truncated.keras").write_bytes(encoder[: len(encoder) // 2])
    return project


def _checksums(project: Path) -> dict[str, str]:
    return {
        str(p.relative_to(project)): hashlib.md5(p.read_bytes()).hexdigest()
        for folder in ("data", "models", "reports")
        for p in sorted((project / folder).rglob("*"))
        if p.is_file()
    }


def _runs(project: Path) -> dict[str, object]:
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ae-classify")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return {r.info.run_id: r for r in runs}


def _assert_unchanged(project: Path, checksums: dict[str, str], runs_before: dict) -> None:
    """Earlier outputs as they were, no staged outputs left, new MLflow runs FAILED."""
    assert _checksums(project) == checksums
    assert not list(project.glob(".outputs-*"))
    new_runs = [r for k, r in _runs(project).items() if k not in runs_before]
    assert all(r.info.status == "FAILED" and r.data.tags.get("error") for r in new_runs)


def _uri(project: Path, overrides: list[str]) -> str:
    """The MLflow store of a stage in `project`: its own, unless the case sets the config's."""
    return "" if any("tracking_uri" in o for o in overrides) else f"sqlite:///{project}/mlflow.db"


@pytest.mark.parametrize(
    "stage, overrides, message", IN_PROCESS, ids=[" ".join(c[1]) for c in IN_PROCESS]
)
def test_bad_input_stops_the_stage_with_one_line_and_changes_nothing(
    ran, monkeypatch, stage, overrides, message
):
    before, runs_before = _checksums(ran), _runs(ran)
    module = importlib.import_module(f"src.{stage}")
    run = module.run if stage != "prepare" else lambda cfg, _: module.run(cfg)
    monkeypatch.chdir(ran)  # the command lines run in the project; paths are relative to it
    with mlflow_store(_uri(ran, overrides)), pytest.raises(SystemExit) as stopped:
        cli.run_stage(make_cfg(*TINY, *overrides), stage, module.PARAMS, run, stage != "prepare")
    said = str(stopped.value)
    if message.endswith("…"):
        assert said.startswith(f"error: {message[:-1]}") and "\n" not in said, said
    else:
        assert said == f"error: {message}"
    _assert_unchanged(ran, before, runs_before)


@pytest.mark.parametrize("overrides, parts", COMPOSE, ids=[" ".join(c[0]) for c in COMPOSE])
def test_unknown_group_choice_is_hydras_error_listing_the_options(overrides, parts):
    with pytest.raises(Exception) as composing:
        make_cfg(*TINY, *overrides)
    assert all(part in str(composing.value) for part in parts), str(composing.value)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "stage, overrides, message", COMMAND_LINE, ids=[" ".join(c[1]) for c in COMMAND_LINE]
)
def test_bad_input_on_the_command_line_exits_1_with_one_line(ran, stage, overrides, message):
    before, runs_before = _checksums(ran), _runs(ran)
    env = {"MLFLOW_TRACKING_URI": _uri(ran, overrides)}
    proc = run_cli(ran, "-m", f"src.{stage}", *TINY, *overrides, check=False, env=env)

    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    if message.startswith("error: "):
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(message), last
    else:
        assert message in proc.stderr  # Hydra's own error, which names the key
    _assert_unchanged(ran, before, runs_before)


@pytest.mark.parametrize(
    "command, overrides, message", UNKNOWN_CHOICE, ids=[" ".join(c[1]) for c in UNKNOWN_CHOICE]
)
def test_unknown_group_option_is_one_line_listing_the_options(
    monkeypatch, tmp_path, command, overrides, message
):
    module = importlib.import_module(f"src.{command}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"src/{command}.py", *overrides])
    with pytest.raises(SystemExit) as stopped:
        module.main()  # refused before hydra.main: no config composed, no output folder
    assert str(stopped.value) == f"error: {message}"


@pytest.mark.parametrize(
    "command, overrides, message", COMPOSING, ids=[" ".join(c[1]) for c in COMPOSING]
)
def test_what_hydra_finds_while_composing_is_one_line(
    monkeypatch, tmp_path, command, overrides, message
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stopped:
        run_as_command(monkeypatch, command, overrides)
    assert str(stopped.value) == f"error: {message}"
    assert "HYDRA_FULL_ERROR" not in os.environ  # set only while Hydra composes and runs
    assert not (tmp_path / "multirun").exists()  # a sweep stopped before its first point


def test_hydra_full_error_set_by_the_user_keeps_hydras_own_report(monkeypatch, tmp_path):
    from hydra.errors import ConfigCompositionException

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException, match="Could not override 'bottlenek'"):
        run_as_command(monkeypatch, "train", ["bottlenek=8"])


def run_as_command(monkeypatch, command: str, overrides: list[str]) -> None:
    """`python -m src.<command> <overrides>` in this process (hydra.main finds conf/ as then)."""
    import runpy

    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.setattr(sys, "argv", [f"src.{command}", *overrides])
    try:
        runpy.run_module(f"src.{command}", run_name="__main__")
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=mnist_conv", "model=conv", "dataset=fashion_mnist", "mlflow=server"],
        ["experiment=null", "~experiment", "+dataset@extra=npz"],  # null, deleted, elsewhere
        ["model=dense,conv", "bottleneck=range(2,8)", "dataset.path=x.npz", "dropout=0.1"],
        ["hydra/launcher=joblib", "hydra/sweeper=optuna"],  # Hydra's groups: Hydra checks them
        ["model=(", "botleneck=8"],  # not valid overrides: Hydra's own error says why
    ],
)
def test_known_group_options_and_other_overrides_are_left_to_hydra(overrides):
    cli.check_choices(overrides)


def test_a_config_folder_of_the_user_is_left_to_hydra():
    assert cli.command_line_overrides(["--config-dir", "mine", "model=mine"]) == []
    assert cli.command_line_overrides(["-m", "-cn", "train", "model=foo"]) == ["model=foo"]


def test_failed_mnist_download_is_one_line_with_a_local_copy_to_type(ran, monkeypatch, capsys):
    import keras

    def offline() -> None:
        print("Downloading data from https://storage.googleapis.com/tensorflow/mnist.npz")
        raise Exception(  # what Keras' get_file raises without a network
            "URL fetch failure on https://storage.googleapis.com/tensorflow/mnist.npz: None -- "
            "[Errno -2] Name or service not known"
        )

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    prepare = importlib.import_module("src.prepare")
    before, runs_before = _checksums(ran), _runs(ran)
    monkeypatch.chdir(ran)
    with mlflow_store(f"sqlite:///{ran}/mlflow.db"), pytest.raises(SystemExit) as stopped:
        cfg = make_cfg(*TINY, "dataset=mnist")
        cli.run_stage(cfg, "prepare", prepare.PARAMS, lambda cfg, _: prepare.run(cfg), False)
    assert str(stopped.value) == (
        "error: mnist is not in ~/.keras/datasets and could not be downloaded ([Errno -2] Name "
        "or service not known): set dataset.path= to a local copy, e.g. "
        "dataset.path=../shared/data/mnist.npz (a .npz with x_train, y_train, x_test and y_test, "
        "or a folder of the four IDX .gz files)"
    )
    assert "Downloading" not in capsys.readouterr().out  # Keras' line held back
    _assert_unchanged(ran, before, runs_before)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "command, overrides, message",
    BEFORE_TENSORFLOW,
    ids=[f"{c[0]} {' '.join(c[1])}" for c in BEFORE_TENSORFLOW],
)
def test_config_errors_come_before_tensorflow_loads(project, command, overrides, message):
    code = PROBE.format(module=f"src.{command}", overrides=overrides)
    proc = run_cli(project, sys.executable, "-c", code, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["tensorflow imported: False", f"error: {message}"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "command, overrides, message", OFFLINE, ids=[f"{c[0]} {' '.join(c[1])}" for c in OFFLINE]
)
def test_a_dataset_to_download_offline_is_refused_before_tensorflow_loads(
    project, command, overrides, message
):
    code = NO_NETWORK + PROBE.format(module=f"src.{command}", overrides=overrides)
    proc = run_cli(project, sys.executable, "-c", code, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["tensorflow imported: False", f"error: {message}"]


def test_src_train_offline_runs_on_from_its_cached_prepared_data(monkeypatch, tmp_path):
    """The check before TensorFlow loads passes when the cache holds the prepared data, which
    is all src.train reads of the dataset."""
    from src import data, train
    from src.cache import Cache
    from src.config import validate

    monkeypatch.setattr(data, "keras_cached", lambda name: False)
    monkeypatch.setattr(data.socket, "getaddrinfo", _offline)
    cfg = validate(make_cfg("dataset=mnist", f"paths.cache={tmp_path}"))
    with pytest.raises(UserError, match="mnist is not in ~/.keras/datasets"):
        train.check_dataset(cfg)
    inputs = train.prepared_inputs(cfg)
    (tmp_path / "prepared" / Cache(tmp_path).key("prepared", inputs, data)).mkdir(parents=True)
    train.check_dataset(cfg)


def _offline(*args, **kwargs):
    raise OSError(-2, "Name or service not known")
