"""The logged classifier's model code: MLflow runs this file to load it (models from code,
mlflow.pyfunc.log_model in src.serving). Nothing in the project imports it."""

from src.runtime import quiet_tensorflow

quiet_tensorflow()  # before src.serving imports Keras: `mlflow models serve` without C++ lines

import mlflow  # noqa: E402

from src.serving import Classifier  # noqa: E402

mlflow.models.set_model(Classifier())
