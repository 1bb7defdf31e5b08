"""A throw-away PostgreSQL server for tests: a new cluster in a temporary folder, made and started with
Debian's binaries (``/usr/lib/postgresql/<version>/bin/initdb`` and ``pg_ctl``, package ``postgresql``),
listening on 127.0.0.1 only, at a free port, with ``fsync`` off (its data is thrown away anyway), stopped
and removed at the end, also when a test fails.

PostgreSQL refuses to run as root: a root test process runs ``initdb`` and ``pg_ctl`` as user ``nobody``.
Without the binaries a test skips, and fails where ``CI`` is set (1/true/yes), so that the PostgreSQL tests
can never silently stop running there.

Use it in a test module as::

    from postgres import postgres_url  # noqa: F401  (a module-scoped fixture)

and ask for it by name (``request.getfixturevalue("postgres_url")`` keeps linters quiet), or enter
``throwaway_cluster()`` yourself."""
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

NOBODY = 65534
SEARCHED = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 30
# Settings for speed and a small footprint: nothing is kept, so nothing needs flushing.
SETTINGS = ("fsync=off", "full_page_writes=off", "synchronous_commit=off", "shared_buffers=16MB",
            "max_connections=40", "listen_addresses=127.0.0.1")


def server_binaries() -> Path | None:
    """The newest of Debian's PostgreSQL ``bin`` folders holding ``initdb`` and ``pg_ctl``, or ``None``."""
    def version(folder: str) -> tuple:
        number = Path(folder).parent.name
        return tuple(int(part) for part in number.split(".") if part.isdigit())

    for folder in sorted(glob.glob(SEARCHED), key=version, reverse=True):
        if all(os.access(Path(folder, name), os.X_OK) for name in ("initdb", "pg_ctl")):
            return Path(folder)
    return None


def require_binaries() -> Path:
    """``server_binaries()``, or skip the test (fail it under ``CI``) saying what is missing."""
    folder = server_binaries()
    if folder is None:
        line = f"needs PostgreSQL's initdb and pg_ctl (Debian package postgresql): none in {SEARCHED}"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL test under CI: {line}", pytrace=False)
        pytest.skip(line)
    return folder


@contextlib.contextmanager
def throwaway_cluster(database: str = "history"):
    """Yield ``postgresql://postgres@127.0.0.1:<port>/<database>`` of a new, empty server (trust
    authentication: any password is accepted); stop and remove it on leaving."""
    binaries = require_binaries()
    folder = Path(tempfile.mkdtemp(prefix="pg-cluster-"))
    data = folder / "data"
    try:
        if os.geteuid() == 0:
            os.chown(folder, NOBODY, NOBODY)
        _run(binaries / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
             "--no-sync", cwd=folder)
        port = _start(binaries, data=data, folder=folder)
        _create_database(port=port, database=database)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        if (data / "postmaster.pid").exists():
            _run(binaries / "pg_ctl", "stop", "-D", data, "-m", "immediate", "-w", cwd=folder, check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url():
    """The URL of a throw-away PostgreSQL database, one server per test module (starting one takes 2-4 s)."""
    with throwaway_cluster() as url:
        yield url


def _start(binaries: Path, data: Path, folder: Path) -> int:
    """Start the server on a free port (another process may take the port between our look and the
    server's start: then try another) and return the port."""
    for attempt in range(3):
        port = _free_port()
        # -k: the server's unix socket goes into our folder (nobody may not write the system's socket folder).
        options = " ".join(f"-c {setting}" for setting in SETTINGS) + f" -p {port} -k {folder}"
        done = _run(binaries / "pg_ctl", "start", "-D", data, "-l", folder / "server.log", "-w",
                    "-t", str(START_TIMEOUT_S), "-o", options, cwd=folder, check=False)
        if done.returncode == 0:
            return port
    log = (folder / "server.log").read_text(errors="replace") if (folder / "server.log").exists() else ""
    raise RuntimeError(f"PostgreSQL did not start: {done.stderr.strip()}\n{log[-2000:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _create_database(port: int, database: str) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{database}"')


def _run(*argv, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program, as ``nobody`` when we are root (which PostgreSQL refuses to run as)."""
    user = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    # The server started by pg_ctl writes to its log file; no pipe of ours stays open in it.
    done = subprocess.run([str(part) for part in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S + 30, **user)
    if check and done.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done
