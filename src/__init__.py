"""Autoencoder pretraining for image classification: Hydra stages, DVC pipeline, MLflow runs."""
