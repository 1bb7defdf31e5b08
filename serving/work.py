"""One inference at a time per model: work runs on a single thread, in the order it came, behind a queue
of bounded length. A request that waits and whose client disconnects leaves the queue and costs nothing."""
import asyncio
from concurrent.futures import ThreadPoolExecutor

# How often a waiting request checks whether its client is still there (seconds).
DISCONNECT_POLL_S = 0.2


class QueueFull(Exception):
    """``max_waiting`` requests already wait."""


class ClientGone(Exception):
    """The client disconnected while its request waited; nothing was run."""


class InferenceQueue:
    """Runs functions one at a time on one worker thread (the network's), first come first served.

    ``run`` refuses with ``QueueFull`` when ``max_waiting`` calls wait already (the running one not
    counted); ``limit=False`` skips that check, for a video's next frame, of which one at a time waits.
    """

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.pending = set()

    @property
    def waiting(self) -> int:
        """Calls queued and not yet started."""
        return sum(1 for future in self.pending if not future.running() and not future.done())

    @property
    def busy(self) -> bool:
        return any(future.running() for future in self.pending)

    async def run(self, function, *args, disconnected=None, limit: bool = True):
        """``function(*args)`` on the worker thread; its result, or its exception raised here.

        ``disconnected``: an async callable that says whether the client is gone; while the call waits it
        is asked every ``DISCONNECT_POLL_S`` and, if so, the call is dropped (``ClientGone``). A call
        already running finishes (a network pass cannot be interrupted), but its result is not sent."""
        if limit and self.waiting >= self.max_waiting:
            raise QueueFull
        loop = asyncio.get_running_loop()
        future = self.executor.submit(function, *args)
        self.pending.add(future)
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(self.pending.discard, done))
        result = asyncio.wrap_future(future)
        try:
            while True:
                finished, _ = await asyncio.wait({result}, timeout=DISCONNECT_POLL_S)
                if finished:
                    return result.result()
                if disconnected is not None and not future.running() and await disconnected() and future.cancel():
                    raise ClientGone
        except asyncio.CancelledError:
            future.cancel()
            raise

    def close(self) -> None:
        """Drop queued calls and wait for the running one."""
        self.executor.shutdown(wait=True, cancel_futures=True)
