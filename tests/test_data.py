import numpy as np
import pytest

from src import data
from src.config import UserError


def test_prepare_digits_splits_and_scales(digits):
    sizes = {s: len(digits[f"y_{s}"]) for s in data.SPLITS}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 360 and sizes["val"] == 180
    for s in data.SPLITS:
        x = digits[f"x_{s}"]
        assert x.shape[1:] == (8, 8, 1) and x.dtype == np.float32
        assert x.min() >= 0 and x.max() <= 1
    assert digits["x_train"].max() == 1.0  # the full pixel range is used
    assert list(digits["class_names"]) == [str(i) for i in range(10)]


def test_split_is_stratified_and_seeded(digits):
    test_counts = np.bincount(digits["y_test"])
    assert test_counts.min() >= 35 and test_counts.max() <= 37  # 20 % of ~180 per class
    again = data.prepare("digits", 0.2, 0.1, seed=0)
    other = data.prepare("digits", 0.2, 0.1, seed=1)
    assert np.array_equal(again["x_test"], digits["x_test"])
    assert not np.array_equal(other["x_test"], digits["x_test"])


def test_save_and_load_round_trip(digits, tmp_path):
    path = tmp_path / "sub" / "prepared.npz"
    data.save(digits, path)
    loaded = data.load(path)
    assert set(loaded) == set(digits)
    assert np.array_equal(loaded["x_val"], digits["x_val"])
    assert not list(path.parent.glob(".*tmp*"))  # no temporary file left behind


def test_load_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        data.load(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="bad.npz"):
        data.load(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 8, 8, 1)))
    with pytest.raises(UserError, match="lacks arrays"):
        data.load(partial)


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((4, 8, 8)), np.array([0, 1, 0, 1]), "shape"),
        (np.zeros((4, 8, 8, 1)), np.array([0, 1, 0]), "4 samples"),
        (np.full((4, 8, 8, 1), np.nan), np.array([0, 1, 0, 1]), "NaN"),
        (np.zeros((4, 8, 8, 1)), np.array([0.5, 1, 0, 1]), "integers"),
        (np.zeros((4, 8, 8, 1)), np.array([1, 1, 1, 1]), "single class"),
    ],
)
def test_check_names_the_problem(x, y, message):
    with pytest.raises(UserError, match=message):
        data.check(x, y)


def test_split_too_small_names_the_keys():
    x, y = np.zeros((6, 2, 2, 1)), np.array([0, 1, 2, 3, 4, 5])
    with pytest.raises(UserError, match="dataset.test_size"):
        data.split(x, y, 0.2, 0.1, seed=0)


def test_history_csv_round_trip(tmp_path):
    history = {"loss": [0.5, 0.25], "val_loss": [0.6, 0.3]}
    data.save_history(history, tmp_path / "h.csv")
    assert (tmp_path / "h.csv").read_text().splitlines()[0] == "epoch,loss,val_loss"
    assert data.load_history(tmp_path / "h.csv") == history
