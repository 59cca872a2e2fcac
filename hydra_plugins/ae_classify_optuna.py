"""Hydra instantiates sweepers only from the `hydra_plugins` namespace package: this module
puts src.sweeps.optuna_sweeper's sweeper there for conf/hydra/sweeper/optuna.yaml."""

from src.sweeps.optuna_sweeper import OptunaSweeper as _OptunaSweeper


class OptunaSweeper(_OptunaSweeper):
    """src.sweeps.optuna_sweeper.OptunaSweeper, where Hydra looks for it."""
