"""util/signals.py: loader workers stay quiet when the main process stops in the middle of taking a batch,
and say everything else."""
import functools
import multiprocessing
import os
import threading
from types import SimpleNamespace

from torch.utils.data import DataLoader

from util.signals import quiet_loader_worker, report_unless_main_process_left

RESOURCE_SHARER = os.path.join(os.path.dirname(multiprocessing.__file__), "resource_sharer.py")


def raised_in(filename: str, error: BaseException):
    """``threading.excepthook``'s argument for ``error`` raised by code that ``filename`` holds."""
    namespace = {"error": error}
    exec(compile("def serve():\n    raise error\n", filename, "exec"), namespace)
    try:
        namespace["serve"]()
    except BaseException as caught:
        return SimpleNamespace(exc_type=type(caught), exc_value=caught, exc_traceback=caught.__traceback__,
                               thread=None)


def test_a_broken_transfer_to_a_stopped_main_process_is_dropped_and_everything_else_reported():
    # What CI saw after a SIGTERM: the worker's serving thread, mid-handshake with the main process that
    # had just stopped, printed "ConnectionResetError: [Errno 104] Connection reset by peer" below the
    # script's last line.
    reported = []
    report_unless_main_process_left(reported.append, raised_in(RESOURCE_SHARER, ConnectionResetError(104, "reset")))
    report_unless_main_process_left(reported.append, raised_in(RESOURCE_SHARER, EOFError()))
    assert reported == []
    others = [raised_in(RESOURCE_SHARER, ValueError("a bug")), raised_in(__file__, ConnectionResetError(104, "reset"))]
    for other in others:
        report_unless_main_process_left(reported.append, other)
    assert reported == others


class ExceptHookOfTheWorker:
    def __len__(self):
        return 1

    def __getitem__(self, index):
        hook = threading.excepthook
        return isinstance(hook, functools.partial) and hook.func is report_unless_main_process_left


def test_loader_workers_install_it():
    loader = DataLoader(ExceptHookOfTheWorker(), batch_size=None, num_workers=1, worker_init_fn=quiet_loader_worker)
    assert list(loader) == [True]
