"""``serving/work.py``: calls run one at a time, lanes are taken in turns, a full lane refuses, and a waiting
call whose client left never runs."""
import asyncio
import threading

import pytest

from serving.work import ClientGone, QueueFull, WorkQueue


def test_lanes_are_taken_in_turns_so_a_backlog_never_starves_another_lane():
    queue = WorkQueue(max_waiting=10, lanes=("pictures", "frames"))
    gate, order = threading.Event(), []
    try:
        blocker = queue.submit(gate.wait, lane="frames", limit=False)
        while not blocker.running():
            threading.Event().wait(0.01)
        frames = [queue.submit(order.append, f"frame {index}", lane="frames", limit=False) for index in range(4)]
        pictures = [queue.submit(order.append, f"picture {index}", lane="pictures") for index in range(2)]
        assert queue.waiting_in("frames") == 4 and queue.waiting_in("pictures") == 2 and queue.busy
        gate.set()
        for future in [blocker, *frames, *pictures]:
            future.result(10)
    finally:
        queue.close()
    # After the blocking frame, the pictures' lane goes next, then the lanes alternate.
    assert order == ["picture 0", "frame 0", "picture 1", "frame 1", "frame 2", "frame 3"]


def test_a_full_lane_refuses_and_a_call_whose_client_left_never_runs():
    queue = WorkQueue(max_waiting=1, lanes=("pictures",))
    gate, ran = threading.Event(), []

    async def scenario():
        running = asyncio.ensure_future(queue.run(gate.wait, lane="pictures"))
        await asyncio.sleep(0.1)
        left = asyncio.Event()

        async def disconnected():
            return left.is_set()

        waiting = asyncio.ensure_future(queue.run(ran.append, "waiter", lane="pictures", disconnected=disconnected))
        await asyncio.sleep(0.1)
        with pytest.raises(QueueFull):
            await queue.run(ran.append, "one too many", lane="pictures")
        left.set()
        with pytest.raises(ClientGone):
            await waiting
        gate.set()
        await running

    try:
        asyncio.run(scenario())
    finally:
        queue.close()
    assert ran == [] and queue.waiting == 0
