"""src.cache: one cache keyed by inputs and by the source of the src modules the code imports."""

import functools
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from src import cache, classify, data, files, imports, train
from src.cache import NO_CACHE, Cache
from tests.conftest import make_cfg


def edited(monkeypatch, module: str) -> None:
    """Make src/<module>.py hash as if someone had edited it."""
    real, path = cache.file_md5, imports.path_of(module)
    monkeypatch.setattr(cache, "file_md5", lambda p: "edited" if Path(p) == path else real(p))


def test_computes_once_per_input_and_code(tmp_path, monkeypatch):
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3)}

    store = Cache(tmp_path, data="d1")
    first = store.arrays("thing", {"k": 1}, compute, code=files)
    again = store.arrays("thing", {"k": 1}, compute, code=files)
    assert len(calls) == 1 and np.array_equal(first["x"], again["x"])
    assert list(store.reused) == ["thing"]  # what came from the cache, for the run's tags
    store.arrays("thing", {"k": 2}, compute, code=files)  # other inputs
    Cache(tmp_path, data="d2").arrays("thing", {"k": 1}, compute, code=files)  # other data
    assert len(calls) == 3
    edited(monkeypatch, "runtime")  # a module that files.py imports changed
    store.arrays("thing", {"k": 1}, compute, code=files)
    assert len(calls) == 4
    NO_CACHE.arrays("thing", {"k": 1}, compute, code=files)  # the DVC stages: no cache
    assert len(calls) == 5 and not list(tmp_path.glob("*/.*tmp*"))


def test_key_covers_the_import_closure_of_the_code_and_nothing_else(monkeypatch):
    store = Cache(None)
    key = store.key("prepared", {}, data.prepare)  # data imports files, which imports runtime
    edited(monkeypatch, "training")  # not imported by data
    assert store.key("prepared", {}, data.prepare) == key
    edited(monkeypatch, "runtime")
    assert store.key("prepared", {}, data.prepare) != key


def test_code_is_the_module_of_a_function_lambda_partial_or_module():
    assert cache.module_of(data) == "data"
    assert cache.module_of(data.prepare) == "data"
    assert cache.module_of(functools.partial(functools.partial(data.save), path="x")) == "data"
    assert cache.module_of(classify.head_settings) == "classify"
    with pytest.raises(ValueError, match="not defined in a module under src"):
        cache.module_of(lambda: None)  # defined in tests/, not src/


def test_root_none_computes_every_time_and_stores_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3)}

    store = Cache(None)
    assert np.array_equal(store.arrays("thing", {}, compute, code=files)["x"], np.arange(3))
    store.arrays("thing", {}, compute, code=files)
    assert len(calls) == 2 and store.reused == {} and not list(tmp_path.iterdir())
    made = [store.folder("thing", {}, lambda f: (f / "a").write_text("1"), code=files)
            for _ in range(2)]  # fmt: skip
    assert made[0] != made[1] and all((f / "a").read_text() == "1" for f in made)
    for folder in made:  # temporary folders, the caller's to delete
        shutil.rmtree(folder)


def test_a_folder_entry_appears_whole_or_not_at_all(tmp_path):
    store = Cache(tmp_path)

    def broken(folder: Path) -> None:
        (folder / "first").write_text("written")
        raise RuntimeError("died half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        store.folder("entry", {}, broken, code=files)
    left = [p.name for p in (tmp_path / "entry").iterdir() if p.suffix != ".lock"]
    assert left == []  # neither an entry nor its temporary folder
    entry = store.folder("entry", {}, lambda f: (f / "a").write_text("whole"), code=files)
    assert entry.parent == tmp_path / "entry" and (entry / "a").read_text() == "whole"
    assert store.reused == {}
    assert store.folder("entry", {}, lambda f: None, code=files) == entry  # present: not redone
    assert store.reused == {"entry": entry.name}


def test_parallel_jobs_with_the_same_key_compute_once(tmp_path):
    calls = []

    def slow(folder: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (folder / "a").write_text("done")

    entries = []
    jobs = [threading.Thread(target=lambda: entries.append(
        Cache(tmp_path).folder("entry", {}, slow, code=files))) for _ in range(3)]  # fmt: skip
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert len(calls) == 1 and len(set(entries)) == 1 and (entries[0] / "a").is_file()


def test_editing_data_py_misses_the_from_scratch_baseline(tmp_path, digits, monkeypatch):
    """data.labelled_subset picks the labels the from-scratch baseline trains on: an edit of
    data.py must not reuse its old weights (the hand-written list once left data.py out)."""
    from src import baselines, models

    calls = []

    def fit_scratch_classifier(model, bottleneck, arrays, labels, settings):
        calls.append(1)
        _, encoder = models.build(model, arrays["x_train"].shape[1:], bottleneck)
        return models.build_classifier(encoder, 10, settings["head_units"], 0.0, False, None)

    monkeypatch.setattr(baselines, "fit_scratch_classifier", fit_scratch_classifier)
    cfg = make_cfg("classify.labels_per_class=5")
    settings, labels = classify.head_settings(cfg, 10), classify.label_settings(cfg)
    store = Cache(tmp_path, data="d")
    classify.scratch_classifier(cfg, digits, labels, settings, store)
    classify.scratch_classifier(cfg, digits, labels, settings, store)
    assert len(calls) == 1 and list(store.reused) == ["scratch"]
    edited(monkeypatch, "data")
    classify.scratch_classifier(cfg, digits, labels, settings, store)
    assert len(calls) == 2  # a new key: trained again
    assert len([p for p in (tmp_path / "scratch").iterdir() if p.is_dir()]) == 2


# src.train's cache entries: prepared data and autoencoders


def test_data_cache_notices_a_dataset_file_replaced_in_place(tmp_path):
    path = tmp_path / "mine.npz"
    cfg = make_cfg("dataset=npz", f"dataset.path={path}", f"paths.cache={tmp_path / 'cache'}")
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (40, 6, 6)), y=np.arange(40) % 2)
    first, first_path = train.prepared_data(cfg)
    assert train.prepared_data(cfg)[1] == first_path  # unchanged file: the cache entry
    np.savez(path, x=rng.integers(0, 256, (60, 6, 6)), y=np.arange(60) % 2)  # replaced
    second, second_path = train.prepared_data(cfg)
    assert second_path != first_path and sum(len(second[f"y_{s}"]) for s in data.SPLITS) == 60


def test_autoencoder_key_depends_on_pretrain_settings_only(monkeypatch):
    from src import cache, imports

    base = train.autoencoder_key(make_cfg(), "d")
    for override in ["dropout=0.5", "classify.epochs=7", "classify.freeze_encoder=false"]:
        assert train.autoencoder_key(make_cfg(override), "d") == base, override
    for override in ["pretrain.learning_rate=0.01", "pretrain.epochs=3", "bottleneck=8",
                     "seed=1", "model.hidden=[32]"]:  # fmt: skip
        assert train.autoencoder_key(make_cfg(override), "d") != base, override
    assert train.autoencoder_key(make_cfg(), "other data") != base
    real = cache.file_md5
    for module, same in [("classify", True), ("evaluate", True), ("training", False),
                         ("models", False), ("data", False)]:  # fmt: skip
        path = imports.path_of(module)  # an edit of that file: only pretrain.run's imports count
        with monkeypatch.context() as m:
            m.setattr(cache, "file_md5", lambda p, path=path: "edit" if p == path else real(p))
            assert (train.autoencoder_key(make_cfg(), "d") == base) == same, module


def test_changed_pretrain_setting_never_reuses_a_stale_autoencoder(tmp_path, digits, monkeypatch):
    from src import pretrain

    calls = []
    real_run = pretrain.run
    monkeypatch.setattr(pretrain, "run", lambda *a: calls.append(1) or real_run(*a))

    def point(*overrides):
        cfg = make_cfg("mlflow.enabled=false", f"paths.cache={tmp_path / 'cache'}", *overrides)
        out = tmp_path / f"job{len(list(tmp_path.glob('job*')))}"
        train.pretrain_cached(cfg, digits, out, "data")
        return out

    point("pretrain.epochs=1", "dropout=0.0")
    out = point("pretrain.epochs=1", "dropout=0.5")
    assert len(calls) == 1 and (out / "models/encoder.keras").is_file()
    point("pretrain.epochs=2")
    assert len(calls) == 2
    point("pretrain.epochs=2", "sweep.reuse_autoencoder=false")
    assert len(calls) == 3


def test_t_sne_threads_read_no_source_the_keys_are_read_before(digits, tmp_path, monkeypatch):
    """CPython 3.11's compiler can fail when two threads compile at once ("AST constructor
    recursion depth mismatch", seen in CI): the cache keys' import closure is read with ast in
    the calling thread, before evaluate's two t-SNE threads start, and once per process."""
    from src import baselines, evaluate, models

    readers = []
    real = imports.src_imports

    def src_imports(module, src=imports.SRC):
        readers.append(threading.current_thread() is threading.main_thread())
        return real(module, src)

    monkeypatch.setattr(imports, "src_imports", src_imports)
    cache.import_closure.cache_clear()
    autoencoder, _ = models.build_autoencoder((8, 8, 1), 2, [16])
    loaded = {"autoencoder": autoencoder, "autoencoder_md5": "x",
              "pca": baselines.fit_pca(digits["x_train"], 2)}  # fmt: skip
    cfg = make_cfg("evaluate.tsne_max_samples=60", "bottleneck=2")
    maps = evaluate.code_maps(cfg, digits, loaded, Cache(tmp_path))
    assert maps["maps"]["autoencoder"].shape == (60, 2) and len(list(tmp_path.iterdir())) == 2
    assert readers and all(readers)  # read, and only in the calling thread
    cache.code_md5(evaluate.code_maps)
    assert len(readers) == len(cache.import_closure(cache.module_of(evaluate)))  # not again
