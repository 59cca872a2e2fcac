"""Signals, one-line errors and files written whole: src.runtime and src.files in process."""

import os
import signal

import numpy as np
import pytest

from src import files, runtime


def test_signal_during_fit_stops_after_the_batch_then_raises():
    """Ctrl-C inside TensorFlow's step function hung `src.pretrain`; stop_on_signal defers it."""
    import keras

    from src import runtime

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    batches = []

    class SendSignal(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append(batch)
            if len(batches) == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    x = np.zeros((64, 4), dtype="float32")
    with pytest.raises(runtime.Terminated, match="stopped by signal 15"):
        with runtime.stop_on_signal(model):
            model.fit(x, x[:, :1], batch_size=4, epochs=50, verbose=0, callbacks=[SendSignal()])
    assert len(batches) < 16 * 2  # stopped within the first epoch or the next, not after 50
    assert signal.getsignal(signal.SIGTERM) is handler  # restored


def test_failed_write_keeps_old_file(tmp_path):
    """A write that fails half-way leaves the old file, and no temporary file."""
    target = tmp_path / "metrics.json"
    target.write_text("old")
    from src.files import atomic_path

    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_text("new, half-")
        raise OSError("disk full")  # a crash half-way through writing
    assert target.read_text() == "old" and not list(tmp_path.glob(".metrics*"))


def test_outputs_replace_old_files_together_or_not_at_all(tmp_path):
    for name in ("a.txt", "sub/b.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("old")
    with pytest.raises(RuntimeError), files.outputs(tmp_path, ["a.txt", "sub/b.txt"]) as staged:
        staged("a.txt").write_text("new")
        raise RuntimeError("crash between two writes")
    assert [(tmp_path / n).read_text() for n in ("a.txt", "sub/b.txt")] == ["old", "old"]
    with files.outputs(tmp_path, ["a.txt", "sub/b.txt", "figs"]) as staged:
        staged("a.txt").write_text("new")
        staged("sub/b.txt").write_text("new")
        staged("figs").mkdir()
        (staged("figs") / "f.png").write_text("png")
        assert (tmp_path / "a.txt").read_text() == "old"  # nothing replaced before the end
    assert [(tmp_path / n).read_text() for n in ("a.txt", "sub/b.txt")] == ["new", "new"]
    assert (tmp_path / "figs/f.png").read_text() == "png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "figs", "sub"]


def test_signal_during_commit_waits_until_every_output_is_in_place(tmp_path, monkeypatch):
    replaced = []
    real = files._replace

    def replace_and_signal(src, dest):
        real(src, dest)
        replaced.append(dest.name)
        if len(replaced) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the two renames

    monkeypatch.setattr(files, "_replace", replace_and_signal)
    with pytest.raises(KeyboardInterrupt), files.outputs(tmp_path, ["a", "b"]) as staged:
        staged("a").write_text("new")
        staged("b").write_text("new")
    assert replaced == ["a", "b"]  # the interrupt came after both
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text() == "new"


def test_user_errors_are_one_line_and_interrupts_say_outputs_are_kept():
    with pytest.raises(SystemExit, match=r"^error: bottleneck=0 is bad$"):
        with runtime.user_errors():
            raise runtime.UserError("bottleneck=0 is bad")
    with pytest.raises(SystemExit, match=r"^error: stopped by signal 15; outputs left as they"):
        with runtime.user_errors():
            raise runtime.Terminated("stopped by signal 15")
    assert runtime.run_status(KeyboardInterrupt()) == "KILLED"
    assert runtime.run_status(ValueError()) == "FAILED"
    assert runtime.describe(KeyboardInterrupt()) == "interrupted"
