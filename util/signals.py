"""Stopping cleanly: SIGTERM raised where the program is, as Ctrl-C is (``Terminated``), signals held
while a file that must not be cut is written (``signals_deferred``), and loader workers that stay quiet
when the main process stops (``quiet_loader_worker``)."""
import contextlib
import functools
import os
import signal
import sys
import threading
import traceback


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's stop, ``kill``), raised where the program is, as Ctrl-C is."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into ``Terminated``, so that a script stops as on Ctrl-C: files being written are
    finished or removed, and it can say where it stopped; a tensor hand-over that the stop breaks stays
    quiet (``quiet_resource_sharer``)."""
    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    quiet_resource_sharer()


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT and SIGTERM until the block ends, then act on the first one received as its handler
    would have. ``torch.save`` turns an exception raised inside it (Ctrl-C's ``KeyboardInterrupt``) into
    a ``RuntimeError`` about the zip writer, so a stop during a checkpoint write must wait for its end.
    Only the main thread can change handlers; elsewhere nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in previous:
        signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), received[0])


def quiet_loader_worker(worker_id: int) -> None:
    """``worker_init_fn`` of the scripts' DataLoaders. A worker hands each batch's tensors to the main process
    through a serving thread (``multiprocessing.resource_sharer``); when the main process stops (Ctrl-C,
    SIGTERM) while taking one, that thread's connection breaks, and Python would print its traceback after
    the script's last line, as if something had crashed. Only those errors are dropped."""
    quiet_resource_sharer()


def quiet_resource_sharer() -> None:
    """Drop the tracebacks of broken connections inside ``multiprocessing.resource_sharer`` in this process:
    the other side of a tensor's hand-over stopped midway, which the script itself reports. Its serving
    thread reports errors through ``sys.excepthook`` (not ``threading.excepthook``), so both are filtered.
    Installed once per process, in loader workers and in the main process alike."""
    if getattr(sys.excepthook, "func", None) is not report_unless_hand_over_broke:
        sys.excepthook = functools.partial(report_unless_hand_over_broke, sys.excepthook)
    if getattr(threading.excepthook, "func", None) is not report_unless_main_process_left:
        threading.excepthook = functools.partial(report_unless_main_process_left, threading.excepthook)


def broken_hand_over(exc_type, exc_traceback) -> bool:
    """Whether an exception is a broken connection raised inside ``multiprocessing.resource_sharer``."""
    return issubclass(exc_type, (ConnectionError, EOFError)) and any(
        frame.f_code.co_filename.endswith(os.path.join("multiprocessing", "resource_sharer.py"))
        for frame, _ in traceback.walk_tb(exc_traceback))


def report_unless_hand_over_broke(report, exc_type, exc_value, exc_traceback) -> None:
    """``sys.excepthook`` that passes everything to ``report`` but a broken tensor hand-over."""
    if not broken_hand_over(exc_type, exc_traceback):
        report(exc_type, exc_value, exc_traceback)


def report_unless_main_process_left(report, args) -> None:
    """Pass ``args`` (of ``threading.excepthook``) to ``report``, unless it is a broken connection inside
    ``multiprocessing.resource_sharer``: the main process went away mid-transfer."""
    if not broken_hand_over(args.exc_type, args.exc_traceback):
        report(args)
