"""Sweeps and searches of `python -m src.train ... -m`: the study (a grid or an Optuna study),
the Hydra callback and sweeper, the context the driver hands its jobs, summaries, champion."""
