"""Stopping cleanly: SIGTERM raised where the program is, as Ctrl-C is (``Terminated``), and signals held
while a file that must not be cut is written (``signals_deferred``)."""
import contextlib
import os
import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's stop, ``kill``), raised where the program is, as Ctrl-C is."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into ``Terminated``, so that a script stops as on Ctrl-C: files being written are
    finished or removed, and it can say where it stopped."""
    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


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
