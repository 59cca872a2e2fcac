"""The pruners a search can use (conf/hydra/sweeper/pruner/): each is composed and instantiated
as the sweeper and its jobs do."""

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.conftest import ROOT


def _pruner(*overrides: str):
    """The search's pruner, composed from src.train's config and instantiated."""
    with initialize_config_dir(str(ROOT / "conf"), job_name="train", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/sweeper=optuna", *overrides],
                      return_hydra_config=True)  # fmt: skip
    return instantiate(cfg.hydra.sweeper.pruner)


@pytest.mark.parametrize(
    ("choice", "kind"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
    ],  # fmt: skip
)
def test_each_pruner_is_selected_from_config(choice, kind):
    assert type(_pruner(f"hydra/sweeper/pruner={choice}")) is kind


def test_median_is_the_default_and_keys_and_null_still_override():
    pruner = _pruner("hydra.sweeper.pruner.n_warmup_steps=5")
    assert type(pruner) is optuna.pruners.MedianPruner and pruner._n_warmup_steps == 5
    assert _pruner("hydra.sweeper.pruner=null") is None
    hyperband = _pruner("hydra/sweeper/pruner=hyperband", "hydra.sweeper.pruner.min_resource=2")
    assert hyperband._min_resource == 2


def test_a_pruner_prunes_a_trial_far_below_the_others():
    """Successive halving on a toy study: at its first rung, a trial below the finished ones
    stops."""
    pruner = _pruner("hydra/sweeper/pruner=successive_halving",
                     "hydra.sweeper.pruner.min_resource=1")  # fmt: skip
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(3):
        good = study.ask()
        for step in range(5):
            good.report(0.9, step)
            assert not good.should_prune()  # the rungs it reaches are recorded here
        study.tell(good, 0.9)
    bad = study.ask()
    bad.report(0.1, 0)
    assert not bad.should_prune()  # below the first rung (epoch index 1)
    bad.report(0.1, 1)
    assert bad.should_prune()
