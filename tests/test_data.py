import socket

import numpy as np
import pytest

from src import classify, data, training
from src.runtime import UserError
from tests.conftest import make_cfg


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
    with pytest.raises(UserError, match="6 samples with dataset.test_size=0.2 and dataset.val"):
        data.split({"x": x, "y": y}, 0.2, 0.1, seed=0)
    own_test = {"x_train": x[:4], "y_train": np.array([0, 1, 0, 1]), "x_test": x, "y_test": y}
    with pytest.raises(UserError, match="4 training samples with dataset.val_size=0.1:"):
        data.split(own_test, None, 0.1, seed=0)


def test_split_of_data_with_its_own_test_set_splits_only_train():
    x, y = np.arange(40).reshape(40, 1, 1, 1), np.arange(40) % 2
    test = {"x_test": x[:6], "y_test": y[:6]}
    own = data.split({"x_train": x, "y_train": y, **test}, 0.5, 0.25, 1)
    assert own["x_test"] is test["x_test"] and own["y_test"] is test["y_test"]  # test_size unused
    assert (len(own["y_train"]), len(own["y_val"])) == (30, 10) and own["y_val"].sum() == 5
    both = np.concatenate([own["x_train"], own["x_val"]]).ravel()
    assert sorted(both) == list(range(40))
    xy = data.split({"x": x, "y": y}, 0.25, 0.25, 1)  # fractions of all 40 samples
    assert [len(xy[f"y_{s}"]) for s in data.SPLITS] == [20, 10, 10]


def test_history_csv_round_trip(tmp_path):
    history = {"loss": [0.5, 0.25], "val_loss": [0.6, 0.3]}
    data.save_history(history, tmp_path / "h.csv")
    assert (tmp_path / "h.csv").read_text().splitlines()[0] == "epoch,loss,val_loss"
    assert data.load_history(tmp_path / "h.csv") == history


def _images(n: int, shape: tuple, n_classes: int, seed: int = 0) -> tuple:
    """n uint8 images and balanced integer labels, as a user's or MNIST's files hold them."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % n_classes


def _write_idx(path, a: np.ndarray) -> None:
    """The original MNIST file format: magic 0 0 8 ndim, big-endian dims, bytes; gzipped."""
    import gzip

    header = bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + a.astype(np.uint8).tobytes())


def test_npz_with_x_and_y_is_split_and_scaled(tmp_path):
    x, y = _images(40, (6, 5), 4)  # grey, no channel axis, pixels 0..255
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    arrays = data.prepare("npz", 0.25, 0.25, seed=0, path=str(tmp_path / "mine.npz"))
    assert [len(arrays[f"y_{s}"]) for s in data.SPLITS] == [20, 10, 10]
    assert arrays["x_train"].shape[1:] == (6, 5, 1) and arrays["x_train"].dtype == np.float32
    assert list(arrays["pixel_range"]) == [x.min(), x.max()]
    i = np.flatnonzero((x.reshape(40, -1) == arrays["x_test"][0].ravel() * 255).all(axis=1))
    assert len(i) == 1 and y[i[0]] == arrays["y_test"][0]  # images keep their labels
    assert list(arrays["class_names"]) == ["0", "1", "2", "3"]


def test_npz_with_train_and_test_keeps_the_test_set(tmp_path):
    x_train, y_train = _images(30, (4, 4, 3), 3)  # RGB
    x_test, y_test = _images(9, (4, 4, 3), 3, seed=1)
    path = tmp_path / "rgb.npz"
    names = np.array(["cat", "dog", "fox"])
    np.savez(
        path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, class_names=names
    )
    arrays = data.prepare("npz", None, 0.2, seed=0, path=str(path))
    lo, hi = float(min(x_train.min(), x_test.min())), float(max(x_train.max(), x_test.max()))
    np.testing.assert_allclose(arrays["x_test"], (x_test - lo) / (hi - lo), rtol=1e-6)
    assert np.array_equal(arrays["y_test"], y_test)
    assert len(arrays["y_val"]) == 6 and np.bincount(arrays["y_val"]).tolist() == [2, 2, 2]
    assert list(arrays["class_names"]) == ["cat", "dog", "fox"]
    renamed = data.prepare("npz", None, 0.2, 0, str(path), class_names=["a", "b", "c"])
    assert list(renamed["class_names"]) == ["a", "b", "c"]


@pytest.mark.parametrize("name, first", [("mnist", "0"), ("fashion_mnist", "T-shirt/top")])
def test_idx_folder_loads_like_the_original_files(tmp_path, name, first):
    x_train, y_train = _images(20, (7, 7), 10)
    x_test, y_test = _images(10, (7, 7), 10, seed=1)
    for key, a in [
        ("x_train", x_train),
        ("y_train", y_train),
        ("x_test", x_test),
        ("y_test", y_test),
    ]:
        _write_idx(tmp_path / f"{data.IDX_FILES[key]}.gz", a)
    arrays = data.prepare(name, None, 0.5, seed=0, path=str(tmp_path))
    assert arrays["x_test"].shape == (10, 7, 7, 1)
    assert np.array_equal(arrays["y_test"], y_test)
    np.testing.assert_allclose(arrays["x_test"][..., 0] * 255, x_test, atol=1e-3)
    assert sorted(arrays["y_val"]) == list(range(10))  # stratified: one per class
    assert arrays["class_names"][0] == first and len(arrays["class_names"]) == 10


def test_bad_idx_and_npz_files_name_the_problem(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03garbage")
    with pytest.raises(UserError, match="bad magic"):
        data.read_idx(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(UserError, match="folder lacks train-labels"):
        data.read_path(str(tmp_path))
    np.savez(tmp_path / "odd.npz", images=np.zeros((2, 2)))
    with pytest.raises(UserError, match="needs x and y"):
        data.read_path(str(tmp_path / "odd.npz"))
    with pytest.raises(UserError, match=r"dataset.path='nope.npz' not found"):
        data.prepare("npz", 0.2, 0.1, 0, path="nope.npz")


def test_missing_keras_download_says_how_to_get_the_data(monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(UserError, match=r"could not be downloaded.*set dataset\.path="):
        data.prepare("mnist", None, 0.1, seed=0)


def offline(*args, **kwargs):
    """socket.getaddrinfo on a machine without a network (or DNS)."""
    raise socket.gaierror(-2, "Name or service not known")


def test_a_dataset_to_download_offline_is_refused_at_once_unless_on_disk(monkeypatch, tmp_path):
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(data, "KERAS_TMP", tmp_path / "tmp-keras")
    with pytest.raises(UserError) as refused:
        data.check_download("mnist", None)
    assert str(refused.value) == (  # what load_keras says when Keras' own download fails
        "mnist is not in ~/.keras/datasets and could not be downloaded ([Errno -2] Name or "
        "service not known): set dataset.path= to a local copy, e.g. "
        "dataset.path=../shared/data/mnist.npz (a .npz with x_train, y_train, x_test and y_test, "
        "or a folder of the four IDX .gz files)"
    )
    data.check_download("mnist", "../shared/data/mnist.npz")  # a local copy: no download
    data.check_download("digits", None)  # built in
    fashion = tmp_path / "tmp-keras/datasets"  # Keras' fallback when KERAS_HOME is read-only
    for f in data.KERAS_FILES["fashion_mnist"][:3]:
        (fashion / f).parent.mkdir(parents=True, exist_ok=True)
        (fashion / f).write_bytes(b"")
    with pytest.raises(UserError, match="fashion_mnist is not in"):  # one file short
        data.check_download("fashion_mnist", None)
    (fashion / data.KERAS_FILES["fashion_mnist"][3]).write_bytes(b"")
    data.check_download("fashion_mnist", None)
    (tmp_path / "keras/datasets").mkdir(parents=True)
    (tmp_path / "keras/datasets/mnist.npz").write_bytes(b"")
    data.check_download("mnist", None)  # Keras reads it without a network


@pytest.mark.parametrize(
    "arrays, class_names, message",
    [
        ({"y_test": np.array([0, 1, 2.0])}, None, "labels y_test must be non-negative integers"),
        ({"y_train": np.array([0, 1, 5])}, ["a", "b", "c"], "labels y_train go up to 5"),
        ({"x_test": np.full((3, 4, 4), np.inf)}, None, "images x_test contain NaN"),
        ({"x_test": np.zeros((3, 5, 4))}, None, r"x_train are \(4, 4, 1\) but x_test"),
        ({"x_train": np.zeros((3, 4))}, None, "images x_train must have shape"),
    ],
)
def test_prepare_checks_name_the_array(tmp_path, arrays, class_names, message):
    good = {
        "x_train": np.zeros((3, 4, 4)),
        "y_train": np.array([0, 1, 2]),
        "x_test": np.ones((3, 4, 4)),
        "y_test": np.array([0, 1, 2]),
    }
    np.savez(tmp_path / "d.npz", **{**good, **arrays})
    with pytest.raises(UserError, match=message):
        data.prepare("npz", None, 0.5, 0, str(tmp_path / "d.npz"), class_names)


def test_labelled_subset_exactly_n_per_class_seeded():
    y = np.repeat(np.arange(4), [50, 20, 7, 30])  # unbalanced classes
    idx = data.labelled_subset(y, 5, seed=0)
    assert np.bincount(y[idx]).tolist() == [5, 5, 5, 5] and len(set(idx)) == 20
    assert np.array_equal(idx, data.labelled_subset(y, 5, seed=0))
    assert not np.array_equal(idx, data.labelled_subset(y, 5, seed=1))
    fraction = data.labelled_subset(y, 0.5, seed=0)
    assert np.bincount(y[fraction]).tolist() in ([25, 10, 4, 15], [25, 10, 3, 15])
    with pytest.raises(UserError, match="class 2 has only 7"):
        data.labelled_subset(y, 8, seed=0)


def test_label_spreading_labels_clusters_from_two_labels_each():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 100)
    codes = np.array([[0, 0], [8, 0], [0, 8]])[y] + rng.normal(0, 1, (300, 2))
    keep = data.labelled_subset(y, 2, seed=0)
    index, labels = training.spread_labels(codes, y, keep, n_neighbors=10)
    assert np.array_equal(index, np.arange(300))  # every image reached
    assert np.mean(labels == y) > 0.97  # chance is 1/3
    assert np.array_equal(labels[keep], y[keep])  # the known labels stay


def test_training_labels_all_few_or_spread(digits):
    x, y = digits["x_train"], digits["y_train"]
    codes = x.reshape(len(x), -1)

    def labels(*overrides):
        settings = classify.label_settings(make_cfg(*overrides))
        return training.training_labels(codes, y, **settings)

    index, all_y = labels()
    assert index is None and all_y is y
    few_index, few_y = labels("classify.labels_per_class=3")
    assert np.bincount(few_y).tolist() == [3] * 10 and np.array_equal(y[few_index], few_y)
    spread_index, spread_y = labels("classify.labels_per_class=3", "classify.label_spreading=true")
    index, spread = training.spread_labels(codes, y, data.labelled_subset(y, 3, 42), 10)
    assert spread_index is None and len(index) == len(y)  # every image reached: no copy
    assert np.array_equal(spread_y, spread)
    assert len(index) > len(y) // 2 and np.mean(spread == y[index]) > 0.8  # from 30 labels
