"""The test session: the project on ``sys.path``, the markers that decide where a test runs (registered in
pyproject.toml), and ``counting_model``, one random counting checkpoint shared by the modules that serve it.

- ``reference_fixtures``: the test reads the reference fixtures (``inference.parity.fixtures_dir()``). Where
  they are absent (a clone from the code host) it skips with one reason line; where they must be present
  (``CI`` or ``REQUIRE_FIXTURES`` set to 1/true, as ``.ci/run`` does) their absence fails it, so that
  parity can never silently stop being checked. Their sha256 sums (``reference_fixtures.sha256``) are
  checked once per session: changed fixtures fail every test that reads them.
- ``cpu_kernels``: the result rests on the CPU's kernels (precision, Winograd, fast mode, ``--amp``,
  parity); ``.ci/run`` runs these again under an emulated AVX2-only CPU.
- ``browser``: the test drives the web page of ``serve.py`` in headless Chromium through Playwright. Without
  the ``playwright`` package or Debian's ``chromium`` it skips, and fails where ``CI`` is set (``.ci/run``
  installs both).
"""
import functools
import hashlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inference.parity import FIXTURES_HINT, fixtures_dir  # noqa: E402

MANIFEST = Path(__file__).with_name("reference_fixtures.sha256")


def fixtures_required() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes") for name in ("CI", "REQUIRE_FIXTURES"))


@functools.lru_cache(maxsize=None)
def fixture_problem() -> tuple:
    """``(None, False)`` when the fixtures are present and unchanged, else ``(message, fails)``."""
    folder = fixtures_dir()
    expected = [line.split(None, 1) for line in MANIFEST.read_text().splitlines() if line.strip()]
    missing = [name for _, name in expected if not (folder / name).is_file()]
    if missing:
        where = f"{folder} has no {missing[0]}" if folder.is_dir() else f"no folder {folder}"
        return f"needs the reference fixtures ({where}): {FIXTURES_HINT}", fixtures_required() or folder.is_dir()
    changed = [name for digest, name in expected
               if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest]
    if changed:
        return (f"the reference fixtures in {folder} are not the ones the tests were written for: "
                f"{', '.join(changed)} differ from {MANIFEST.name}"), True
    return None, False


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def browser_problem():
    """Why the browser tests cannot run here, or ``None``."""
    if importlib.util.find_spec("playwright") is None:
        return "needs the playwright package (pip install playwright==1.65.2)"
    if not shutil.which(CHROMIUM):
        return f"needs Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, through Playwright (for the tests marked ``browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def pytest_runtest_setup(item):
    if item.get_closest_marker("browser") and browser_problem():
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"browser test under CI: {browser_problem()}", pytrace=False)
        pytest.skip(browser_problem())
    if item.get_closest_marker("reference_fixtures"):
        message, fails = fixture_problem()
        if message and fails:
            pytest.fail(message, pytrace=False)
        if message:
            pytest.skip(message)


@pytest.fixture(scope="session")
def counting_model(tmp_path_factory):
    """One ``helpers.counting_checkpoint`` file (72 MB) for the modules that serve it, removed at the end."""
    from helpers import counting_checkpoint

    path = tmp_path_factory.mktemp("counting_model") / "model.pth"
    counting_checkpoint(path)
    yield path
    path.unlink()
