"""How a process meets its user: one-line errors, Ctrl-C and SIGTERM, and how a run ends."""

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

INTERRUPTED = "outputs left as they were"


class UserError(Exception):
    """A problem with the user's config or files, reported as one line without a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that runs end KILLED and temporary files are cleaned up."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a UserError or an interruption into `error: <message>` on stderr and exit code 1."""
    try:
        yield
    except UserError as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt as e:
        raise SystemExit(f"error: {str(e) or 'interrupted'}; {INTERRUPTED}") from None


def run_status(error: BaseException) -> str:
    """The MLflow status of a run that `error` ended: KILLED when interrupted, else FAILED."""
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


def describe(error: BaseException) -> str:
    """`Type: message`, or `interrupted` for a bare Ctrl-C: the `error` tag of a run."""
    if isinstance(error, KeyboardInterrupt) and not str(error):
        return "interrupted"
    return f"{type(error).__name__}: {error}"[:5000]


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"stopped by signal {signum}")


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises Terminated (a KeyboardInterrupt) inside the block, as Ctrl-C does."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def deferred_signals(on_signal: Any = None) -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise as they would have.

    `on_signal()` is called when one arrives (e.g. to ask Keras to stop after the batch).
    """
    received: list[int] = []
    if not _in_main_thread():
        yield received
        return

    def handle(signum: int, frame: Any) -> None:
        received.append(signum)
        if on_signal:
            on_signal()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if received and received[0] == signal.SIGTERM:
        raise Terminated(f"stopped by signal {received[0]}")
    if received:
        raise KeyboardInterrupt


@contextmanager
def stop_on_signal(model: Any) -> Iterator[None]:
    """Around model.fit: Ctrl-C or SIGTERM stops training after the current batch, then raises
    KeyboardInterrupt (Terminated for SIGTERM). Raised inside TensorFlow's step function
    instead, the interrupt left the process hanging there."""

    def stop() -> None:
        model.stop_training = True

    with deferred_signals(stop):
        yield


def quiet_tensorflow() -> None:
    """Import TensorFlow and probe its devices with C++ start-up logging muted: the oneDNN note,
    "Could not find cuda drivers" and cuInit's error on machines without a GPU, which
    TF_CPP_MIN_LOG_LEVEL no longer silences; and TensorFlow's Python logger at ERROR (its
    tf.function retracing warnings are expected here: every model traces its own functions)
    unless `hydra.verbose` asked for its DEBUG lines. TF_CPP_MIN_LOG_LEVEL=0 keeps every line."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    quiet_library("tensorflow", logging.ERROR)


def quiet_library(name: str, level: int) -> None:
    """A library's logger shows only `level` and above, unless `hydra.verbose` (or anything
    else) already asked it for DEBUG lines. Call it after the library set up its logger."""
    logger = logging.getLogger(name)
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(level)
