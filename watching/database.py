"""The history's database: its tables (see ``watching.history`` for the schema and why) and how a file path
or a ``postgresql://`` URL becomes an SQLAlchemy engine with them created."""
import os
import stat
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

NAME_LENGTH = 200  # characters of a camera or zone name
CHECKPOINT_LENGTH = 1000  # characters of a checkpoint name
BUSY_TIMEOUT_S = 30  # how long an SQLite writer waits for another's lock
CONNECT_TIMEOUT_S = 10  # how long opening a PostgreSQL connection may take

# SQLite makes only an INTEGER PRIMARY KEY an automatic row id.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
METADATA = sa.MetaData()
COUNTS = sa.Table(
    "watch_counts", METADATA,
    sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("ms", sa.BigInteger(), nullable=False),
    sa.Column("count", sa.Float(), nullable=False),
    sa.Column("threshold", sa.Float(), nullable=False),
    sa.Column("checkpoint", sa.String(CHECKPOINT_LENGTH), nullable=False),
    # Holds the count too, so that averaging a range reads the index alone.
    sa.Index("watch_counts_camera_ms", "camera", "ms", "count"),
)
ZONE_COUNTS = sa.Table(
    "watch_zone_counts", METADATA,
    sa.Column("count_id", ROW_ID, sa.ForeignKey("watch_counts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("camera", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("ms", sa.BigInteger(), nullable=False),
    sa.Column("zone", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("count", sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint("count_id", "zone"),
    sa.Index("watch_zone_counts_camera_ms", "camera", "ms", "zone", "count"),
)
ALERTS = sa.Table(
    "watch_alerts", METADATA,
    sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("zone", sa.String(NAME_LENGTH), nullable=True),
    sa.Column("above", sa.Float(), nullable=False),
    sa.Column("raised_ms", sa.BigInteger(), nullable=False),
    sa.Column("cleared_ms", sa.BigInteger(), nullable=True),
    sa.Column("peak", sa.Float(), nullable=False),
    sa.Index("watch_alerts_raised", "raised_ms"),
)
# The names that have history, one index step per camera (a loose index scan; DISTINCT would read every row).
CAMERAS_SQL = sa.text(
    "WITH RECURSIVE names(name) AS (SELECT MIN(camera) FROM watch_counts UNION ALL "
    "SELECT (SELECT MIN(camera) FROM watch_counts WHERE camera > names.name) FROM names "
    "WHERE names.name IS NOT NULL) SELECT name FROM names WHERE name IS NOT NULL")


def sqlite_engine(where) -> sa.Engine:
    path = Path(str(where).removeprefix("sqlite:///")).expanduser()
    if path.is_dir():
        raise OSError(f"history database {path}: is a folder, not a file")
    # In WAL mode SQLite keeps two more files beside the database: its folder must be writable.
    try:
        problem = ("is not a folder" if not stat.S_ISDIR(path.parent.stat().st_mode) else
                   None if os.access(path.parent, os.W_OK | os.X_OK) else "is not writable")
    except FileNotFoundError:
        problem = "does not exist"
    except OSError as error:
        problem = f"cannot be reached ({error.strerror})"
    if problem:
        raise OSError(f"history database {path}: its folder {path.parent} {problem}")
    engine = sa.create_engine(sa.URL.create("sqlite", database=str(path)),
                              connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S})
    sa.event.listen(engine, "connect", sqlite_settings)
    return engine


def sqlite_settings(connection, _record) -> None:
    # WAL: readers never wait for the writer, and a commit is one append to the log. synchronous=NORMAL
    # keeps every commit across a crash of the process; only a power cut may lose the last ones.
    cursor = connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"busy_timeout={BUSY_TIMEOUT_S * 1000}"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def postgresql_engine(where: str) -> tuple:
    """``(engine, the URL as shown, its password)`` for a ``postgresql://`` URL, driven by psycopg 3."""
    try:
        url = sa.make_url(where)
    except (ArgumentError, ValueError):  # their message holds the whole URL, password and all
        raise ValueError(f"history database: ...@{where.split('@')[-1]} is not a database URL") from None
    shown = url.render_as_string(hide_password=True)
    if url.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError(f"history database {shown}: give a file path or a postgresql:// URL")
    url = url.set(drivername="postgresql+psycopg")
    # pool_pre_ping: a connection the server dropped (restart, failover) is replaced, not handed out.
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    return engine, shown, url.password


def create_tables(engine: sa.Engine) -> None:
    """Create the missing tables, never drop one. Services starting together may both try to create one
    (PostgreSQL then refuses the second); trying again finds it there."""
    with engine.connect():
        pass  # an unreachable server or unwritable file fails here, once, not three times below
    for attempt in range(3):
        try:
            METADATA.create_all(engine, checkfirst=True)
            return
        except SQLAlchemyError:
            if attempt == 2:
                raise
