"""Hydra instantiates launchers only from the `hydra_plugins` namespace package: this module
puts src.sweeps.slurm's launcher there for conf/hydra/launcher/slurm.yaml."""

from src.sweeps.slurm import SlurmLauncher as _SlurmLauncher


class SlurmLauncher(_SlurmLauncher):
    """src.sweeps.slurm.SlurmLauncher, where Hydra looks for it."""
