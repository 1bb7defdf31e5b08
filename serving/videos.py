"""Video jobs of the service: an uploaded video is counted frame by frame in the background, each frame
taking its turn on the network with the pictures, while clients poll its progress and counts."""
import asyncio
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from inference.outputs import video_header, video_row
from inference.video_io import VIDEO_SUFFIXES, VideoError, VideoSource
from util.script import error_line

from .uploads import ApiError
from .work import InferenceQueue, QueueFull

# Finished jobs whose counts stay available; older ones are forgotten first.
KEPT_FINISHED = 32


@dataclass
class VideoJob:
    """One uploaded video: its settings, progress and the counts of the frames counted so far (``rows``:
    ``{"frame", "time_s", "count", "zones"}`` each)."""

    id: str
    name: str
    threshold: float
    zones: dict
    exclude: dict
    stride: int
    frames_total: int = None
    fps: float = None
    state: str = "waiting"
    error: str = None
    rows: list = field(default_factory=list)
    finished_at: float = None
    task: asyncio.Task = None
    release: object = None

    def summary(self, since: int = 0) -> dict:
        """The job as the API shows it, with the counted frames from the ``since``-th on."""
        return {"id": self.id, "name": self.name, "state": self.state, "error": self.error,
                "frames_done": len(self.rows), "frames_total": self.frames_total, "fps": self.fps,
                "threshold": self.threshold, "zones": list(self.zones), "since": since,
                "counts": [{**row, "time_s": round(row["time_s"], 3)} for row in self.rows[since:]]}

    def counts_csv_rows(self) -> list:
        """``counts.csv`` as ``run_test.py`` writes it for a video: the header, then a row per frame."""
        return [video_header(self.zones)] + [video_row(row["frame"], row["time_s"], row, self.zones)
                                             for row in self.rows]


class VideoJobs:
    """The service's video jobs: at most ``max_active`` waiting or counting at once (more: ``QueueFull``)."""

    def __init__(self, counter, queue: InferenceQueue, max_active: int):
        self.counter, self.queue, self.max_active = counter, queue, max_active
        self.jobs = {}

    @property
    def active(self) -> int:
        return sum(1 for job in self.jobs.values() if job.state in ("waiting", "counting"))

    def get(self, job_id: str) -> VideoJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no video job {job_id[:40]!r} (finished jobs are kept for the last {KEPT_FINISHED})")
        return job

    async def start(self, data: bytes, filename: str, threshold: float, zones: dict, exclude: dict,
                    stride: int) -> VideoJob:
        """Keep ``data`` in a temporary folder of its own (removed when the job ends), open it as a video
        (``ApiError`` if it is none) and start counting it in the background."""
        if self.active >= self.max_active:
            raise QueueFull
        suffix = Path(filename).suffix.lower()
        # The client's name never becomes a path: only a known video suffix is kept, for the demuxer.
        suffix = suffix if suffix in VIDEO_SUFFIXES else ""
        path = Path(tempfile.mkdtemp(prefix="dehaze-p2pnet-video-")) / f"upload{suffix}"
        try:
            await asyncio.to_thread(path.write_bytes, data)
            source = await asyncio.to_thread(VideoSource, path, stride, self.counter.max_pixels)
        except VideoError as error:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise ApiError(400, f"{filename}: {error.reason}") from None
        except BaseException:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        job = VideoJob(id=secrets.token_urlsafe(9), name=filename, threshold=threshold, zones=zones, exclude=exclude,
                       stride=stride, fps=source.fps,
                       frames_total=-(-source.frame_count // stride) if source.frame_count else None)
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self.count(job, source, path.parent))
        return job

    async def count(self, job: VideoJob, source: VideoSource, folder: Path) -> None:
        frames = iter(source)
        try:
            job.state = "counting"
            while True:
                row = await self.queue.run(self.count_next_frame, job, frames, limit=False)
                if row is None:
                    break
                job.rows.append(row)
            job.state = "done"
            if source.ended_early:
                job.error = (f"the video ended after {source.frames_read} of the {source.frame_count} frames its "
                             "file declares (a truncated file?)")
        except asyncio.CancelledError:
            job.state, job.error = "cancelled", "cancelled"
            raise
        except Exception as error:
            job.state, job.error = "failed", error_line(error)
        finally:
            job.finished_at = time.monotonic()
            self.forget_oldest()
            # On the network's thread, after the frame it may still be counting when the job is cancelled.
            job.release = self.queue.executor.submit(release, source, folder)

    def count_next_frame(self, job: VideoJob, frames):
        """On the network's thread: decode and count the next frame of ``job``; ``None`` at the end."""
        item = next(frames, None)
        if item is None:
            return None
        index, time_s, rgb = item
        result = self.counter.predict(rgb, zones=job.zones, exclude=job.exclude, threshold=job.threshold)
        return {"frame": index, "time_s": time_s, "count": result["count"], "zones": result["zones"]}

    def cancel(self, job: VideoJob) -> None:
        if job.task is not None and not job.task.done():
            job.task.cancel()

    def forget_oldest(self) -> None:
        finished = sorted((job for job in self.jobs.values() if job.finished_at is not None),
                          key=lambda job: job.finished_at)
        for job in finished[:max(0, len(finished) - KEPT_FINISHED)]:
            del self.jobs[job.id]

    async def close(self) -> None:
        """Cancel every unfinished job (their temporary folders are removed as they end)."""
        tasks = [job.task for job in self.jobs.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        releases = [asyncio.wrap_future(job.release) for job in self.jobs.values() if job.release is not None]
        await asyncio.gather(*releases, return_exceptions=True)


def release(source: VideoSource, folder: Path) -> None:
    """Close a job's video and remove its temporary folder."""
    source.close()
    shutil.rmtree(folder, ignore_errors=True)
