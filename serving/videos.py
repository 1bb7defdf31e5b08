"""Video jobs of the service: an uploaded video is counted frame by frame in the background, each frame
taking its turn on the network with the pictures (in a lane of its own, so that pictures are never
starved), while clients poll its progress and counts. Everything a job holds is bounded: how many run
at once, how long a video may be, and how long a finished job's counts are kept."""
import asyncio
import math
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from inference.job import CountingOptions, FrameCount
from inference.outputs import video_header, video_row
from inference.video_io import VIDEO_SUFFIXES, VideoError, VideoSource
from util.script import error_line

from .models import VideoJobAnswer
from .scratch import ScratchFolder
from .uploads import ApiError, shown_name
from .work import QueueFull, WorkQueue

# Finished jobs whose counts stay available; older ones are forgotten first.
KEPT_FINISHED = 32
# Counted frames per second of video at most, so that a file declaring an absurd frame rate cannot grow a
# job's rows without bound within --max_video_s.
MAX_COUNTED_FPS = 120


@dataclass(frozen=True)
class VideoLimits:
    """How many jobs may wait or count at once (``active``), the longest video counted in seconds
    (``max_seconds``), and how long a finished job is kept in seconds (``ttl_s``)."""

    active: int = 2
    max_seconds: float = 600.0
    ttl_s: float = 3600.0


@dataclass
class VideoJob:
    """One uploaded video: how it is counted (``options``: its threshold, zones, exclusions and frame stride),
    its progress and the counts of the frames counted so far (``rows``, a ``FrameCount`` each)."""

    id: str
    name: str
    options: CountingOptions
    frames_total: int = None
    fps: float = None
    state: str = "waiting"
    error: str = None
    rows: list = field(default_factory=list)
    finished_at: float = None
    task: asyncio.Task = None
    release: object = None

    def summary(self, since: int = 0) -> VideoJobAnswer:
        """The job as the API shows it, with the counted frames from the ``since``-th on."""
        return VideoJobAnswer.model_construct(
            id=self.id, name=self.name, state=self.state, error=self.error, frames_done=len(self.rows),
            frames_total=self.frames_total, fps=self.fps, threshold=self.options.threshold,
            zones=list(self.options.zones), since=since, counts=[frame_answer(row) for row in self.rows[since:]])

    def counts_csv_rows(self) -> list:
        """``counts.csv`` as ``run_test.py`` writes it for a video: the header, then a row per frame."""
        return [video_header(self.options.zones)] + [video_row(row) for row in self.rows]


def frame_answer(row: FrameCount) -> dict:
    """A counted frame as a job's answer lists it (``FrameCountAnswer``'s fields: a plain dict, as a long
    video has tens of thousands), its time rounded to milliseconds."""
    return {"frame": row.frame, "time_s": round(row.time_s, 3), "count": row.count, "zones": row.zones}


class VideoJobs:
    """The service's video jobs, within ``limits`` (``VideoLimits``; more active jobs: ``QueueFull``). The
    uploads live in a scratch folder of this process's, removed at the next start if the process is killed."""

    def __init__(self, counter, queue: WorkQueue, limits: VideoLimits):
        self.counter, self.queue, self.limits = counter, queue, limits
        self.jobs = {}
        self.scratch = ScratchFolder()

    @property
    def active(self) -> int:
        return sum(1 for job in self.jobs.values() if job.state in ("waiting", "counting"))

    @property
    def full(self) -> bool:
        return self.active >= self.limits.active

    def get(self, job_id: str) -> VideoJob:
        self.forget_expired()
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no video job {shown_name(job_id)!r} (finished jobs are kept for "
                                f"{self.limits.ttl_s:g} s, the last {KEPT_FINISHED} at most; serve.py --job_ttl_s)")
        return job

    async def start(self, data: bytes, filename: str, options: CountingOptions) -> VideoJob:
        """Keep ``data`` in a temporary folder of its own (removed when the job ends), open it as a video
        (``ApiError`` if it is none or too long) and start counting every ``options.frame_stride``-th frame
        in the background."""
        self.forget_expired()
        if self.full:
            raise QueueFull
        # Registered before the first await, so that uploads arriving together cannot all pass the check.
        job = VideoJob(id=secrets.token_urlsafe(9), name=filename, options=options)
        self.jobs[job.id] = job
        stride = options.frame_stride
        suffix = Path(filename).suffix.lower()
        # The client's name never becomes a path: only a known video suffix is kept, for the demuxer.
        folder = Path(tempfile.mkdtemp(prefix="video-", dir=self.scratch.path))
        path = folder / f"upload{suffix if suffix in VIDEO_SUFFIXES else ''}"
        try:
            await asyncio.to_thread(path.write_bytes, data)
            source = await asyncio.to_thread(VideoSource, path, stride, self.counter.max_pixels)
            self.check_length(source)
        except BaseException as error:
            del self.jobs[job.id]
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(error, VideoError):
                raise ApiError(400, f"{filename}: {error.reason}") from None
            raise
        job.fps = source.fps
        job.frames_total = -(-source.frame_count // stride) if source.frame_count else None
        job.task = asyncio.create_task(self.count(job, source, folder))
        return job

    def check_length(self, source: VideoSource) -> None:
        """``VideoError`` when the file declares more than ``max_seconds`` of video (it closes ``source``)."""
        if source.fps and source.frame_count and source.frame_count / source.fps > self.limits.max_seconds:
            source.close()
            raise VideoError(f"the video lasts {source.frame_count / source.fps:.0f} s, over the limit of "
                             f"{self.limits.max_seconds:g} s (serve.py --max_video_s)")

    def frame_limit(self, source: VideoSource) -> int:
        """The index of the first frame past ``max_seconds``, from the declared rate (at most ``MAX_COUNTED_FPS``)."""
        return math.ceil(self.limits.max_seconds * min(source.fps or MAX_COUNTED_FPS, MAX_COUNTED_FPS))

    async def count(self, job: VideoJob, source: VideoSource, folder: Path) -> None:
        frames = iter(source)
        last_frame = self.frame_limit(source)
        try:
            job.state = "counting"
            while True:
                row = await self.queue.run(self.count_next_frame, job, frames, last_frame, lane="frames",
                                           limit=False)
                if row is None:
                    break
                job.rows.append(row)
            job.state = "done"
            if source.frames_read > last_frame:
                job.error = (f"counted the first {self.limits.max_seconds:g} s only (serve.py --max_video_s): the "
                             "file holds more frames than it declares")
            elif source.ended_early:
                job.error = (f"the video ended after {source.frames_read} of the {source.frame_count} frames its "
                             "file declares (a truncated file?)")
        except asyncio.CancelledError:
            job.state, job.error = "cancelled", "cancelled"
            raise
        except Exception as error:
            job.state, job.error = "failed", error_line(error)
        finally:
            job.finished_at = time.monotonic()
            self.forget_expired()
            # On the network's thread, after the frame it may still be counting when the job is cancelled.
            job.release = self.queue.submit(release, source, folder, lane="frames", limit=False)

    def count_next_frame(self, job: VideoJob, frames, last_frame: int):
        """On the network's thread: decode and count the next frame of ``job``; ``None`` at the end or past
        ``last_frame``."""
        item = next(frames, None)
        if item is None or item[0] >= last_frame:
            return None
        index, time_s, rgb = item
        return FrameCount.of(index, time_s, self.counter.predict(rgb, job.options))

    def cancel(self, job: VideoJob) -> None:
        if job.task is not None and not job.task.done():
            job.task.cancel()

    def forget_expired(self) -> None:
        """Forget finished jobs older than ``ttl_s``, and all but the newest ``KEPT_FINISHED`` finished ones."""
        now = time.monotonic()
        finished = sorted((job for job in self.jobs.values() if job.finished_at is not None),
                          key=lambda job: job.finished_at)
        for index, job in enumerate(finished):
            if now - job.finished_at > self.limits.ttl_s or index < len(finished) - KEPT_FINISHED:
                del self.jobs[job.id]

    async def close(self) -> None:
        """Cancel every unfinished job and remove the scratch folder once their files are closed."""
        tasks = [job.task for job in self.jobs.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        releases = [asyncio.wrap_future(job.release) for job in self.jobs.values() if job.release is not None]
        await asyncio.gather(*releases, return_exceptions=True)
        self.scratch.remove()


def release(source: VideoSource, folder: Path) -> None:
    """Close a job's video and remove its temporary folder."""
    source.close()
    shutil.rmtree(folder, ignore_errors=True)
