"""Work off the event loop, one call at a time per worker thread, behind queues of bounded length.

The service has two such workers: the network's (pictures and video frames) and one for the other
CPU-heavy steps (recounts, density layers, long answers), so that the event loop only moves bytes and
``/api/health`` answers at once whatever runs. A request that waits and whose client disconnects
leaves its queue and costs nothing."""
import asyncio
import threading
from collections import deque
from concurrent.futures import Future

# How often a waiting request checks whether its client is still there (seconds).
DISCONNECT_POLL_S = 0.2


class QueueFull(Exception):
    """``max_waiting`` calls already wait in that lane."""


class ClientGone(Exception):
    """The client disconnected while its request waited; nothing was run."""


class WorkQueue:
    """Runs functions one at a time on one worker thread. Calls wait in named ``lanes``, first come first
    served within a lane; when several lanes have calls waiting, the worker takes them in turns, so that a
    lane with a long backlog (a video's frames) never starves another (pictures people wait for).

    ``run`` and ``submit`` refuse with ``QueueFull`` when ``max_waiting`` calls already wait in that lane
    (the running one not counted); ``limit=False`` skips that check, for a video's next frame, of which
    each job has at most one waiting."""

    def __init__(self, max_waiting: int, lanes: tuple = ("default",), name: str = "work"):
        self.max_waiting = max_waiting
        self.lanes = {lane: deque() for lane in lanes}
        self.turn = 0
        self.running = None
        self.closed = False
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self.work, name=name, daemon=True)
        self.thread.start()

    def waiting_in(self, lane: str) -> int:
        """Calls waiting in ``lane``, not yet started."""
        with self.condition:
            return sum(1 for future, _, _ in self.lanes[lane] if not future.cancelled())

    @property
    def waiting(self) -> int:
        """Calls waiting in every lane."""
        return sum(self.waiting_in(lane) for lane in self.lanes)

    @property
    def busy(self) -> bool:
        return self.running is not None

    def full(self, lane: str) -> bool:
        return self.waiting_in(lane) >= self.max_waiting

    def submit(self, function, *args, lane: str = "default", limit: bool = True) -> Future:
        """Queue ``function(*args)`` in ``lane``; its ``concurrent.futures.Future``."""
        future = Future()
        with self.condition:
            if self.closed:
                raise RuntimeError("the service is stopping")
            if limit and self.full(lane):  # the condition's lock is re-entrant
                raise QueueFull
            self.lanes[lane].append((future, function, args))
            self.condition.notify()
        return future

    async def run(self, function, *args, lane: str = "default", disconnected=None, limit: bool = True):
        """``function(*args)`` on the worker thread; its result, or its exception raised here.

        ``disconnected``: an async callable that says whether the client is gone; while the call waits it
        is asked every ``DISCONNECT_POLL_S`` and, if so, the call is dropped (``ClientGone``). A call
        already running finishes (a network pass cannot be interrupted), but its result is not sent."""
        future = self.submit(function, *args, lane=lane, limit=limit)
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

    def next_call(self):
        """The next call to run, taking the lanes in turns; ``None`` once closed. Called with the lock held."""
        names = list(self.lanes)
        while True:
            for step in range(len(names)):
                lane = self.lanes[names[(self.turn + step) % len(names)]]
                while lane:
                    call = lane.popleft()
                    if call[0].set_running_or_notify_cancel():
                        self.turn = (self.turn + step + 1) % len(names)
                        return call
            if self.closed:
                return None
            self.condition.wait()

    def work(self) -> None:
        while True:
            with self.condition:
                call = self.next_call()
                if call is None:
                    return
                self.running = call[0]
            future, function, args = call
            try:
                future.set_result(function(*args))
            except BaseException as error:  # handed to the caller, which raises it
                future.set_exception(error)
            finally:
                self.running = None

    def close(self) -> None:
        """Drop the waiting calls, let the running one and those submitted from it finish, and stop the thread."""
        with self.condition:
            self.closed = True
            for lane in self.lanes.values():
                for future, _, _ in lane:
                    future.cancel()
            self.condition.notify_all()
        self.thread.join()
