"""An --output_dir that cannot be written stops run_test.py and train.py with one line and exit code 1,
before any work. Tests run as root in CI, where file modes do not stop anyone, so the scripts run as
an unprivileged user there: in a forked child that gives up root before calling ``main``."""
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

import run_test
import train

NOBODY = 65534


def run_unprivileged(main, argv, timeout: float = 120) -> tuple:
    """``(exit code, stderr)`` of ``main(argv)`` run as user and group ``nobody`` when this process is
    root, else as this user. Everything ``main`` needs before its first check is imported already. A
    child that cannot drop root, or fails otherwise, writes why to that stderr (exit code 99); one
    still running after ``timeout`` seconds is killed and the test fails saying so."""
    import selectors
    import signal
    import time
    import traceback

    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        code = 99
        try:
            os.dup2(write_end, 2)
            sys.stderr = os.fdopen(2, "w", closefd=False)
            if os.getuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 98)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as pipe, selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        else:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            pytest.fail(f"{main.__module__}.main{tuple(argv)} still ran after {timeout} s; killed")
    return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), b"".join(chunks).decode(errors="replace")


@pytest.fixture
def shared_folder():
    """A folder every user may enter and read (pytest's own tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="output-folders-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def read_only(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return folder


@pytest.mark.parametrize("script", ["run_test", "train"])
def test_folders_that_cannot_be_written_stop_before_any_work(shared_folder, script):
    locked = read_only(shared_folder / "locked")
    sub_folder = "vis" if script == "run_test" else "tensorboard"
    (shared_folder / "partly").mkdir()
    (shared_folder / "partly").chmod(0o777)
    read_only(shared_folder / "partly" / sub_folder)
    cases = {locked: locked, locked / "new" / "run": locked,
             shared_folder / "partly": shared_folder / "partly" / sub_folder}
    for output_dir, culprit in cases.items():
        if script == "run_test":
            main, argv = run_test.main, ["--weight_path", str(shared_folder / "model.pth"), "--input",
                                         str(shared_folder), "--output_dir", str(output_dir)]
        else:
            main, argv = train.main, ["--dataset_file", "Custom", "--data_root", str(shared_folder), "--train_list",
                                      "train.list", "--test_list", "test.list", "--output_dir", str(output_dir)]
        code, err = run_unprivileged(main, argv)
        assert code == 1, err
        assert err.strip() == f"error: --output_dir {output_dir}: {culprit} is not writable", err
    assert sorted(path.name for path in shared_folder.rglob("*")) == ["locked", "partly", sub_folder]
