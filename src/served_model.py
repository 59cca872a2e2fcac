"""The logged classifier's model code: MLflow runs this file to load it (models from code,
mlflow.pyfunc.log_model in src.serving). Nothing in the project imports it."""

import mlflow

from src.serving import Classifier

mlflow.models.set_model(Classifier())
