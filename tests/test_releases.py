"""models/releases.py: released checkpoints by name, downloaded once into the cache folder from a real HTTP server
on 127.0.0.1: complete downloads only, one-line errors saying how to place the file by hand, an existing file before
a name; a recorded SHA-256 checked on each use, https or loopback http only, credentials never shown, a size cap."""
import base64
import hashlib
import http.server
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import run_test
import train
from helpers import SMALL_RUN, counting_checkpoint
from inference import Counter
from models import build_from_checkpoint, releases
from models.releases import ChecksumError, DownloadError, cached_path, download_url, resolve_checkpoint, sha256_path

HAZY_JHU_VIEW = "https://drive.google.com/file/d/18saECAlz6mc7_neo8_uLeBrc7xs5UKVf/view"
# What the cut connection sends before it closes, in bytes (its Content-Length is the whole file's).
CUT_AFTER_BYTES = 1 << 20
# Mode -> where it redirects to, followed by the file name.
REDIRECTS = {"to-http-elsewhere": "http://example.invalid/", "to-good": "/good/"}
ALLOWED_URLS = "https://, or plain http:// to this machine only (localhost, 127.0.0.0/8, ::1)"


class ReleaseServer(http.server.ThreadingHTTPServer):
    """Serves ``/<mode>/<file name>``: ``good`` the checkpoint, ``cut`` its first MiB under the whole
    file's Content-Length, ``html`` a web page, ``truncated`` half the checkpoint (announced as such),
    ``chunked`` the checkpoint without a length, ``REDIRECTS`` a 302; anything else is a 404. ``requests``
    lists the paths asked for, ``authorizations`` their Authorization headers (None without)."""

    daemon_threads = True

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint
        self.sha256 = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        self.requests = []
        self.authorizations = []
        super().__init__(("127.0.0.1", 0), ReleaseHandler)

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{mode}"

    def handle_error(self, request, client_address):
        # A client that stops reading (the Ctrl-C test) is expected; anything else is reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ReleaseHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        self.server.authorizations.append(self.headers.get("Authorization"))
        mode, _, file_name = self.path[1:].partition("/")
        if mode in REDIRECTS:
            self.send_response(302)
            self.send_header("Location", REDIRECTS[mode] + file_name)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "chunked":
            self.send_chunked(self.server.checkpoint.read_bytes())
            return
        content = self.server.checkpoint.read_bytes() if mode in ("good", "cut", "truncated") else b""
        if mode == "html":
            content = b"<!DOCTYPE html><html><body>Google Drive - Quota exceeded</body></html>"
        elif mode == "truncated":
            content = content[:len(content) // 2]
        elif mode not in ("good", "cut"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if mode == "html" else "application/octet-stream")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content[:CUT_AFTER_BYTES] if mode == "cut" else content)
        self.close_connection = True

    def send_chunked(self, content: bytes):
        self.protocol_version = "HTTP/1.1"  # chunked transfer is HTTP/1.1's
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        for start in range(0, len(content), CUT_AFTER_BYTES):
            part = content[start:start + CUT_AFTER_BYTES]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def log_message(self, *args):
        pass  # the tests' output shows only what the project prints


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp("served") / "checkpoint.pth"
    counting_checkpoint(checkpoint)
    release_server = ReleaseServer(checkpoint)
    thread = threading.Thread(target=release_server.serve_forever, daemon=True)
    thread.start()
    yield release_server
    release_server.shutdown()
    release_server.server_close()
    checkpoint.unlink()  # 72 MB


@pytest.fixture
def cache(tmp_path, monkeypatch, server):
    """An empty cache folder; the server forgets earlier requests."""
    monkeypatch.setenv("DEHAZE_P2PNET_CACHE", str(tmp_path / "cache"))
    server.requests.clear()
    server.authorizations.clear()
    return tmp_path / "cache"


@pytest.fixture
def only_loopback_lookups(monkeypatch):
    """Fails the test (an AssertionError, which no download code catches) if anything connects to, or even
    looks up, a host other than 127.0.0.1."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        assert host == "127.0.0.1", f"looked up {host}"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the probe is closed


def files_in(folder: Path) -> list:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_a_name_downloads_once_loads_strictly_and_later_uses_read_the_cache(cache, server, monkeypatch, capsys):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url("good"))
    by_name, _, _ = build_from_checkpoint("Hazy_JHU")
    target = cache / "weights" / "Hazy_JHU_best.pth"
    assert server.requests == ["/good/Hazy_JHU_best.pth"]
    assert files_in(cache / "weights") == ["Hazy_JHU_best.pth", "Hazy_JHU_best.pth.sha256"]
    assert target.read_bytes() == server.checkpoint.read_bytes()
    assert capsys.readouterr().err.splitlines() == [
        f"downloading Hazy_JHU_best.pth ({target.stat().st_size / 1e6:.1f} MB) from "
        f"{server.url('good')}/Hazy_JHU_best.pth into {target}"]
    by_path, _, _ = build_from_checkpoint(server.checkpoint)
    expected = by_path.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in by_name.state_dict().items())
    assert resolve_checkpoint("Hazy_JHU_best.pth") == target  # the full file name names it too
    build_from_checkpoint("Hazy_JHU")
    assert server.requests == ["/good/Hazy_JHU_best.pth"]  # read from the cache, not asked again
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_a_counter_loaded_by_name_counts_as_one_loaded_by_path(cache, server, monkeypatch):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url("good"))
    picture = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    by_name = Counter.from_checkpoint("Hazy_JHU", device="cpu", log=lambda message: None)(picture)
    by_path = Counter.from_checkpoint(server.checkpoint, device="cpu")(picture)
    assert 0 < by_path.count < 400  # a picture that neither counts nothing nor everything
    assert by_name.count == by_path.count
    np.testing.assert_array_equal(by_name.points, by_path.points)
    np.testing.assert_array_equal(by_name.scores, by_path.scores)
    assert server.requests == ["/good/Hazy_JHU_best.pth"]


def test_processes_resolving_at_once_share_one_download(cache, server, monkeypatch):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url("good"))
    results = [None] * 3

    def resolve(index):
        results[index] = resolve_checkpoint("DH_SHTA", log=lambda message: None)

    threads = [threading.Thread(target=resolve, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [cached_path("DH_SHTA")] * 3
    assert server.requests == ["/good/DH_SHTA_best.pth"]
    assert files_in(cache / "weights") == ["DH_SHTA_best.pth", "DH_SHTA_best.pth.sha256"]


def test_a_cut_connection_leaves_nothing_and_the_next_call_downloads_again(cache, server, monkeypatch):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url("cut"))
    size = server.checkpoint.stat().st_size
    with pytest.raises(DownloadError) as error:
        resolve_checkpoint("Hazy_JHU", log=lambda message: None)
    message = str(error.value)
    target = cache / "weights" / "Hazy_JHU_best.pth"
    assert message == (f"cannot download Hazy_JHU from {server.url('cut')}/Hazy_JHU_best.pth (the connection ended "
                       f"after {CUT_AFTER_BYTES} of {size} bytes): download it from {HAZY_JHU_VIEW} and save it as "
                       f"{target}, or give its path instead of the name")
    assert files_in(cache / "weights") == []
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url("good"))
    assert resolve_checkpoint("Hazy_JHU", log=lambda message: None) == target
    assert target.stat().st_size == size
    assert server.requests == ["/cut/Hazy_JHU_best.pth", "/good/Hazy_JHU_best.pth"]


def test_ctrl_c_during_a_download_leaves_nothing(cache, server, monkeypatch):
    class InterruptedBar(releases.tqdm):
        def update(self, n=1):
            raise KeyboardInterrupt  # as Ctrl-C arrives, after the first chunk is written

    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url("good"))
    monkeypatch.setattr(releases, "tqdm", InterruptedBar)
    with pytest.raises(KeyboardInterrupt):
        resolve_checkpoint("Hazy_JHU", log=lambda message: None)
    assert files_in(cache / "weights") == []


@pytest.mark.parametrize("mode, says", [
    ("html", "did not send a checkpoint (an HTML page, as Google Drive sends"),
    ("truncated", "did not send a checkpoint (not a readable PyTorch checkpoint"),
    ("missing", "(HTTP 404 Not Found): download it from " + HAZY_JHU_VIEW),
])
def test_a_page_a_truncated_file_or_a_404_is_refused_and_leaves_nothing(cache, server, monkeypatch, mode, says):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url(mode))
    with pytest.raises(DownloadError) as error:
        resolve_checkpoint("Hazy_JHU", log=lambda message: None)
    message = str(error.value)
    assert says in message and f"{server.url(mode)}/Hazy_JHU_best.pth" in message
    assert "\n" not in message and str(cache / "weights" / "Hazy_JHU_best.pth") in message
    assert files_in(cache / "weights") == []


def test_without_network_the_scripts_print_one_line_saying_where_to_put_the_file(cache, tmp_path, monkeypatch,
                                                                                  capsys):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", closed_port_url())
    target = cache / "weights" / "Rainy_SHTRGBD_best.pth"
    assert run_test.main(["--weight_path", "Rainy_SHTRGBD", "--input", str(tmp_path), "--device", "cpu"]) == 1
    printed = capsys.readouterr()
    assert printed.out == ""
    [line] = printed.err.splitlines()
    assert line.startswith("error: cannot download Rainy_SHTRGBD from ") and "Connection refused" in line
    assert f"https://drive.google.com/file/d/1Fqr7RqSJk-fSUw9YMpCg2MZnsBhynFWJ/view and save it as {target}," in line
    assert train.main(["--init_weights", "Rainy_SHTRGBD", "--dataset_file", "Demo_Hazy", "--epochs", "1",
                       "--output_dir", str(tmp_path / "run")] + SMALL_RUN) == 1
    printed = capsys.readouterr()
    assert printed.err == line + "\n"
    assert files_in(cache) == ["weights"]  # it stopped before making the demo dataset
    assert files_in(cache / "weights") == []


def test_an_existing_file_wins_over_a_name_and_an_unknown_name_lists_the_names(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", closed_port_url())  # any download would fail
    monkeypatch.chdir(tmp_path)
    for name in ("Hazy_JHU_best.pth", "DH_SHTB"):
        Path(name).write_bytes(b"a file of one's own")
        assert resolve_checkpoint(name) == Path(name)
    with pytest.raises(FileNotFoundError) as error:
        resolve_checkpoint("Hazy_JHUU")
    assert str(error.value) == ("checkpoint not found: Hazy_JHUU (released checkpoints can also be given by name: "
                                "Hazy_JHU, DH_SHTA, DH_SHTB, Hazy_SHTRGBD, Rainy_SHTRGBD)")
    with pytest.raises(FileNotFoundError, match="not found: weights/Hazy_JHU_best.pth"):
        resolve_checkpoint("weights/Hazy_JHU_best.pth")  # a path, not a name: never downloaded
    assert not cache.exists()


def test_without_a_mirror_the_authors_drive_file_is_downloaded(monkeypatch):
    monkeypatch.delenv("DEHAZE_P2PNET_WEIGHTS_URL", raising=False)
    assert download_url("DH_SHTB") == ("https://drive.usercontent.google.com/download?"
                                       "id=1Tu9VH0FmWyMTTwe8rqQt3gq_U2mUZGY3&export=download&confirm=t")
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", "https://mirror.example/weights/")
    assert download_url("DH_SHTB") == "https://mirror.example/weights/DH_SHTB_best.pth"


def manual(name: str = "Hazy_JHU") -> str:
    """The end of every download error: where the file comes from and where it goes."""
    view = releases.DRIVE_VIEW_URL.format(id=releases.RELEASED_CHECKPOINTS[name])
    return f"download it from {view} and save it as {cached_path(name)}, or give its path instead of the name"


def test_the_first_download_records_its_sha256_and_a_changed_cached_file_is_refused(cache, server, monkeypatch,
                                                                                   tmp_path, capsys):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url("good"))
    target = resolve_checkpoint("Hazy_JHU")
    record = cache / "weights" / "Hazy_JHU_best.pth.sha256"
    assert record.read_text() == f"{server.sha256}  Hazy_JHU_best.pth\n"  # sha256sum's format
    with target.open("ab") as file:
        file.write(b"\0")  # torch.load does not mind a byte past the end of its zip archive
    changed = hashlib.sha256(target.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError) as error:
        resolve_checkpoint("Hazy_JHU")
    assert str(error.value) == (f"{target}: its SHA-256 is {changed}, not {server.sha256} (recorded in {record} at "
                                "its first use); the file changed, delete it to download it again")
    capsys.readouterr()  # the download's line
    assert run_test.main(["--weight_path", "Hazy_JHU", "--input", str(tmp_path), "--device", "cpu"]) == 1
    assert capsys.readouterr().err == f"error: {error.value}\n"
    target.unlink()
    assert resolve_checkpoint("Hazy_JHU") == target
    assert server.requests == ["/good/Hazy_JHU_best.pth"] * 2
    assert record.read_text() == f"{server.sha256}  Hazy_JHU_best.pth\n"


def test_a_file_placed_by_hand_gets_its_sha256_recorded_at_its_first_use(cache, monkeypatch):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", closed_port_url())  # any download would fail
    target = cached_path("DH_SHTB")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"placed by hand")
    assert resolve_checkpoint("DH_SHTB") == target
    assert sha256_path(target).read_text() == f"{hashlib.sha256(b'placed by hand').hexdigest()}  DH_SHTB_best.pth\n"
    target.write_bytes(b"changed by hand")
    with pytest.raises(ChecksumError, match="the file changed, delete it to download it again$"):
        resolve_checkpoint("DH_SHTB")


def test_a_known_sha256_is_checked_on_the_first_download(cache, server, monkeypatch):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url("good"))
    monkeypatch.setitem(releases.KNOWN_SHA256, "Hazy_JHU", "0" * 64)
    with pytest.raises(DownloadError) as error:
        resolve_checkpoint("Hazy_JHU")
    assert str(error.value) == (f"cannot download Hazy_JHU from {server.url('good')}/Hazy_JHU_best.pth (it sent a "
                                f"file whose SHA-256 is {server.sha256}, not the released file's {'0' * 64}); "
                                f"nothing was kept: {manual()}")
    assert files_in(cache / "weights") == []
    monkeypatch.setitem(releases.KNOWN_SHA256, "Hazy_JHU", server.sha256)
    assert resolve_checkpoint("Hazy_JHU") == cached_path("Hazy_JHU")
    assert sha256_path(cached_path("Hazy_JHU")).read_text() == f"{server.sha256}  Hazy_JHU_best.pth\n"


@pytest.mark.parametrize("url", ["https://mirror.example/w", "HTTPS://user:pw@mirror.example", "http://localhost/w",
                                 "http://127.0.0.1:8000/w", "http://127.9.8.7/w", "http://user:pw@[::1]:8000/w"])
def test_https_or_plain_http_to_this_machine_is_allowed(url):
    assert releases.is_allowed_url(url)


@pytest.mark.parametrize("url", ["http://mirror.example/w", "http://10.0.0.1/w", "http://[::2]/w", "file:///srv/w",
                                 "http://localhost.mirror.example/w", "http://localhost@mirror.example/w",
                                 "ftp://mirror.example/w", "http://[::1/w"])
def test_anything_else_is_not(url):
    assert not releases.is_allowed_url(url)


def test_a_mirror_over_plain_http_to_another_machine_is_refused_before_connecting(cache, monkeypatch,
                                                                                 only_loopback_lookups):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", "http://mirror.example/weights")
    with pytest.raises(DownloadError) as error:
        resolve_checkpoint("Hazy_JHU")
    assert str(error.value) == ("cannot download Hazy_JHU from http://mirror.example/weights/Hazy_JHU_best.pth "
                                f"($DEHAZE_P2PNET_WEIGHTS_URL must be {ALLOWED_URLS}): {manual()}")
    assert not cache.exists()


def test_a_redirect_to_plain_http_on_another_machine_is_refused_before_following_it(cache, server, monkeypatch,
                                                                                   only_loopback_lookups):
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url("to-http-elsewhere"))
    with pytest.raises(DownloadError) as error:
        resolve_checkpoint("Hazy_JHU")
    assert str(error.value) == (f"cannot download Hazy_JHU from {server.url('to-http-elsewhere')}/Hazy_JHU_best.pth "
                                "(redirected to http://example.invalid/Hazy_JHU_best.pth, refused: a download must use "
                                f"{ALLOWED_URLS}): {manual()}")
    assert server.requests == ["/to-http-elsewhere/Hazy_JHU_best.pth"]
    assert files_in(cache / "weights") == []


def test_credentials_in_the_mirror_url_go_to_the_mirror_alone_and_are_never_shown(cache, server, monkeypatch,
                                                                                 tmp_path, capsys):
    with_credentials = server.url("to-good").replace("http://", "http://alice:s3cr%40t@")
    shown = server.url("to-good").replace("http://", "http://***@")
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", with_credentials)
    target = resolve_checkpoint("Hazy_JHU")
    assert server.requests == ["/to-good/Hazy_JHU_best.pth", "/good/Hazy_JHU_best.pth"]  # a redirect here is followed
    assert server.authorizations == ["Basic " + base64.b64encode(b"alice:s3cr@t").decode(), None]  # and not given them
    assert capsys.readouterr() == ("", f"downloading Hazy_JHU_best.pth ({target.stat().st_size / 1e6:.1f} MB) from "
                                       f"{shown}/Hazy_JHU_best.pth into {target}\n")
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", with_credentials.replace("to-good", "missing"))
    with pytest.raises(DownloadError) as error:
        resolve_checkpoint("DH_SHTA")
    assert str(error.value) == (f"cannot download DH_SHTA from {shown.replace('to-good', 'missing')}/DH_SHTA_best.pth "
                                f"(HTTP 404 Not Found): {manual('DH_SHTA')}")
    assert run_test.main(["--weight_path", "DH_SHTA", "--input", str(tmp_path), "--device", "cpu"]) == 1
    assert capsys.readouterr() == ("", f"error: {error.value}\n")


@pytest.mark.parametrize("mode", ["good", "chunked"])
def test_a_download_over_the_size_limit_is_refused_and_leaves_nothing(cache, server, monkeypatch, mode):
    monkeypatch.setattr(releases, "MAX_DOWNLOAD_BYTES", CUT_AFTER_BYTES)
    monkeypatch.setenv("DEHAZE_P2PNET_WEIGHTS_URL", server.url(mode))
    logged = []
    with pytest.raises(DownloadError) as error:
        resolve_checkpoint("Hazy_JHU", log=logged.append)
    size = server.checkpoint.stat().st_size / 2**20
    says = f"it announced {size:.1f} MiB, over" if mode == "good" else "it sent more than"
    assert str(error.value) == (f"cannot download Hazy_JHU from {server.url(mode)}/Hazy_JHU_best.pth ({says} the 1 MiB "
                                f"limit for a checkpoint (MAX_DOWNLOAD_BYTES)): {manual()}")
    assert len(logged) == (0 if mode == "good" else 1)  # a declared size is refused before the body is read
    assert files_in(cache / "weights") == []
