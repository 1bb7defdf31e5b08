"""What the scripts share around their ``main``: exit codes, one-line errors, glibc's malloc settings,
output folders, and ending quietly when the reader of their output goes away."""
import ctypes
import os
import sys
from pathlib import Path



def error_line(error: BaseException) -> str:
    """The message of ``error`` for a one-line report. An error raised in a DataLoader worker reaches
    the main process with the worker's whole traceback in its message; only the original message is
    kept, so that a bad file reads the same with any ``--num_workers``."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    return last.partition(": ")[2] or last


# The scripts' exit codes; 2 is argparse's, for a usage error.
EXIT_FAILED = 1  # one line on stderr says what went wrong
EXIT_SKIPPED = 3  # some inputs were skipped (unreadable, or with annotation problems), each named; the rest was done
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # SIGTERM: 128 + SIGTERM


# glibc's malloc settings for counting (see configure_malloc), in bytes.
MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 256 << 20


def configure_malloc() -> None:
    """Set glibc's malloc for counting: allocations of ``MMAP_THRESHOLD`` and more get memory maps of
    their own, which go back to the system when freed, and up to ``TRIM_THRESHOLD`` of freed memory at
    the top of the heap is kept for the next picture.

    By default glibc raises its map threshold whenever a large buffer is freed and then keeps freed
    activation maps in its heap, where they fragment and raise the peak. A low threshold bounds that,
    but every map above it is then page-faulted in afresh on every picture; these two values keep both
    small (docs/performance.md, "Why the code is as it is"). Nothing happens where the C library is not
    glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim_threshold, mmap_threshold = -1, -3  # M_TRIM_THRESHOLD and M_MMAP_THRESHOLD in glibc's malloc.h
    libc.mallopt(mmap_threshold, MMAP_THRESHOLD)
    libc.mallopt(trim_threshold, TRIM_THRESHOLD)


def run_script(main) -> None:
    """Exit with ``main()``'s code. Output piped into a program that stops reading early
    (``run_test.py … | head``) ends the script quietly instead of with a ``BrokenPipeError`` traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)


def check_output_dir(path: Path, subfolders=()) -> None:
    """Raise ``ValueError`` with one line when ``path`` cannot become the ``--output_dir``: it is a
    file, lies under a file, or it (or the nearest folder that exists above it, or one of its
    ``subfolders`` that exists) is not a writable folder. Scripts call this before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {path} is a file; expected a folder")
    existing = next(folder for folder in (path, *path.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise ValueError(f"--output_dir {path} lies under {existing}, which is a file, not a folder")
    for folder in (existing, *(path / name for name in subfolders if (path / name).exists())):
        if not folder.is_dir():
            raise ValueError(f"--output_dir {path}: {folder} is a file; expected a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"--output_dir {path}: {folder} is not writable")
