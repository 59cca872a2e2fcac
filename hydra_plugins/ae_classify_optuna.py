"""Hydra instantiates sweepers only from the `hydra_plugins` namespace package: this module
puts src.search's Optuna sweeper there for conf/hydra/sweeper/optuna.yaml."""

from src.search import OptunaSweeper as _OptunaSweeper


class OptunaSweeper(_OptunaSweeper):
    """src.search.OptunaSweeper, where Hydra looks for it."""
