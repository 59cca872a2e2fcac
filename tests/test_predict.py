"""src.predict: new images through the training preprocessing, from a .keras file or MLflow."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from src import predict
from src.runtime import UserError
from tests.conftest import TINY, copy_project, make_cfg, run_cli, run_stages

# A third classifier epoch: the tests compare argmax classes after src.predict's own
# preprocessing (8-bit PNGs, resizing), which moves pixels by up to 0.002. After 2 epochs the
# smallest top-two probability margin on these test images is 0.0024; after 3, 0.015.
TRAINED = [*TINY, "classify.epochs=3"]
# what src.predict says it takes, after a wrong input
ACCEPTED = (
    "give an .npz file (array x, x_test or images), a PNG or JPEG image, or a folder of them"
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("predict"))
    run_stages(project, *TRAINED, stages=("prepare", "pretrain", "classify"), tracked=True)
    return project


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_record_sits_where_predict_looks():
    cfg = make_cfg()
    assert predict.preprocessing_path(cfg.paths.classifier) == Path(cfg.paths.preprocessing)


@pytest.mark.e2e
def test_npz_in_the_original_pixel_range_predicts_like_the_pipeline(trained):
    from src import models

    prepared = np.load(trained / "data/prepared.npz")
    lo, hi = prepared["pixel_range"]
    x = prepared["x_test"][:20]
    np.savez(trained / "raw.npz", x=(x * (hi - lo) + lo)[..., 0])  # as a user has them: 0..16
    run_cli(trained, "-m", "src.predict", "input=raw.npz", "output=out/pred.csv")
    rows = _rows(trained / "out/pred.csv")
    expected = models.load(trained / "models/classifier.keras").predict(x, verbose=0)
    assert [int(r["class"]) for r in rows] == expected.argmax(1).tolist()
    assert all(r["class_name"] == r["class"] for r in rows)  # digits: names are "0".."9"
    np.testing.assert_allclose([float(r["probability"]) for r in rows], expected.max(1), atol=1e-5)


@pytest.mark.e2e
def test_folder_of_png_images_is_resized_and_scaled(trained):
    import keras

    folder = trained / "pngs"
    folder.mkdir()
    x = np.load(trained / "data/prepared.npz")["x_test"][:3]
    for i, image in enumerate(x):  # 8-bit PNGs, 4x larger than the training images
        big = np.kron(image, np.ones((4, 4, 1))) * 255
        keras.utils.save_img(folder / f"digit{i}.png", big, scale=False)
    proc = run_cli(trained, "-m", "src.predict", f"input={folder}", "output=png.csv")
    rows = _rows(trained / "png.csv")
    assert [Path(r["input"]).name for r in rows] == ["digit0.png", "digit1.png", "digit2.png"]
    from src import models

    expected = models.load(trained / "models/classifier.keras").predict(x, verbose=0)
    assert [int(r["class"]) for r in rows] == expected.argmax(1).tolist()  # as the pipeline's
    assert "3 images" in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_mlflow_model_uri_carries_the_record(trained):
    from src import models

    client = MlflowClient(tracking_uri=f"sqlite:///{trained / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ae-classify")
    model = next(m for m in client.search_logged_models([exp.experiment_id])
                 if m.name == "classifier")  # fmt: skip
    x = np.load(trained / "data/prepared.npz")["x_test"][:5]
    np.savez(trained / "few.npz", x=x * 16)
    run_cli(trained, "-m", "src.predict", f"model={model.model_uri}", "input=few.npz",
            "output=uri.csv")  # fmt: skip
    rows = _rows(trained / "uri.csv")  # the Keras model inside the served pyfunc, as the .keras
    expected = models.load(trained / "models/classifier.keras").predict(x, verbose=0)
    assert [int(r["class"]) for r in rows] == expected.argmax(1).tolist()
    np.testing.assert_allclose([float(r["probability"]) for r in rows], expected.max(1), atol=1e-5)


@pytest.mark.e2e
def test_model_without_record_and_bad_input_are_refused(trained):
    import shutil

    shutil.copy(trained / "models/classifier.keras", trained / "bare.keras")
    np.savez(trained / "some.npz", x=np.zeros((2, 8, 8)))
    proc = run_cli(trained, "-m", "src.predict", "model=bare.keras", "input=some.npz", check=False)
    assert proc.returncode != 0 and "has no preprocessing record" in proc.stderr
    proc = run_cli(trained, "-m", "src.predict", "input=nothing.txt", check=False)
    assert proc.returncode != 0 and "input=nothing.txt" in proc.stderr.splitlines()[-1]


def _not_an_image(folder: Path) -> Path:
    (folder / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    return folder / "passwd"


@pytest.mark.parametrize(
    "make, said",
    [
        (_not_an_image, "{input} is neither an .npz file nor an image"),
        (lambda folder: folder / "missing.png", "{input} not found"),
        (lambda folder: folder, "{input} is a folder without .png, .jpg or .jpeg files"),
        (lambda folder: _not_an_image(folder).rename(folder / "x.png").parent,
         "{input} holds x.png, which is not an image"),
    ],
    ids=["text file", "missing", "folder without images", "folder with a non-image"],
)  # fmt: skip
def test_wrong_input_is_one_line_saying_what_is_accepted(tmp_path, make, said):
    source = str(make(tmp_path))
    with pytest.raises(UserError) as refused:
        predict.input_files(source)  # what src.predict checks before TensorFlow loads
    message = str(refused.value)
    assert message == f"{said.format(input=f'input={source}')}: {ACCEPTED}"
    assert "\n" not in message and "<" not in message  # no object's repr


def test_npz_image_and_folder_inputs_pass_the_check(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 8, 8)))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "b.bmp")  # any format Pillow reads
    assert predict.input_files(str(tmp_path / "x.npz")) == []
    assert predict.input_files(str(tmp_path / "b.bmp")) == [tmp_path / "b.bmp"]
    assert predict.input_files(str(tmp_path)) == [tmp_path / "a.png"]  # .png, .jpg, .jpeg only


@pytest.mark.e2e
def test_text_file_as_input_is_one_line_before_tensorflow_loads(tmp_path):
    text = _not_an_image(tmp_path)
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['src.predict', 'input={text}']\n"
        "try:\n"
        "    runpy.run_module('src.predict', run_name='__main__', alter_sys=True)\n"
        "finally:\n"
        "    print('tensorflow imported:', 'tensorflow' in sys.modules, file=sys.stderr)\n"
    )
    proc = run_cli(tmp_path, sys.executable, "-c", code, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "tensorflow imported: False",
        f"error: input={text} is neither an .npz file nor an image: {ACCEPTED}",
    ]
