"""Serve a web page and an HTTP API that count people in pictures and videos with one checkpoint.

    python serve.py --weight_path Hazy_JHU                      # http://127.0.0.1:8000/, API docs at /docs
    python serve.py --weight_path Hazy_JHU --host 0.0.0.0 --token SECRET

The network is loaded once and runs one picture or frame at a time; see docs/serving.md.
"""
import asyncio
import os
import socket
import sys
from pathlib import Path

from inference import Counter
from models.checkpoint import CheckpointError
from util.addresses import is_loopback
from util.distributed import resolve_device
from options import add_counting_arguments, add_input_norm_argument, add_runtime_arguments, counter_options
from util.values import at_least, new_parser, positive_float
from util.script import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, configure_malloc, error_line, run_script
from util.signals import Terminated, stop_on_sigterm

# The environment variable a token may come from, so that it need not show in the process list.
TOKEN_ENV_VAR = "DEHAZE_P2PNET_TOKEN"


def build_parser():
    parser = new_parser("Serve a web page (drop pictures and videos on it) and an HTTP API (documented at /docs) "
                        "that count people with a checkpoint. Stop it with Ctrl-C.")
    add_input_norm_argument(parser, " (default: as stored in the checkpoint)")
    add_counting_arguments(add_runtime_arguments(parser))
    group = parser.add_argument_group("service")
    group.add_argument("--weight_path", required=True,
                       help="checkpoint to count with: a file (.pth from train.py, a released or an original "
                            "P2PNet one, or an .onnx export) or a released checkpoint's name (Hazy_JHU, ...)")
    group.add_argument("--host", default="127.0.0.1",
                       help="address to listen on: 127.0.0.1 serves this machine only; 0.0.0.0 every network "
                            "(then --token or --no_auth is required)")
    group.add_argument("--port", type=at_least(0), default=8000, help="port to listen on (0: any free port)")
    group.add_argument("--token", default=None,
                       help="a secret the API's clients must send as 'Authorization: Bearer TOKEN' (the page "
                            f"asks for it); --token_file or ${TOKEN_ENV_VAR} keep it out of the process list")
    group.add_argument("--token_file", default=None,
                       help="read the token from the first line of this file instead")
    group.add_argument("--allowed_hosts", nargs="+", default=(), metavar="NAME",
                       help="other names clients reach this server by (a DNS name, a proxy's); requests naming "
                            "any other Host are refused, so that web pages cannot reach it by DNS rebinding")
    group.add_argument("--no_auth", action="store_true",
                       help="serve on an address other than 127.0.0.1 without a token: anyone who reaches it "
                            "can use it")
    group.add_argument("--max_upload_mb", type=positive_float, default=50.0,
                       help="uploads over this many megabytes are refused while they arrive")
    group.add_argument("--max_queue", type=at_least(1), default=16,
                       help="requests that may wait for the network; beyond that they are answered 503 with "
                            "Retry-After")
    cameras = parser.add_argument_group("cameras (docs/serving.md, \"Watching cameras\")")
    cameras.add_argument("--site", default=None, metavar="FILE",
                         help="a site file (TOML) of cameras to count around the clock, each every every_s "
                              "seconds, per zone, with history and alerts")
    cameras.add_argument("--database", default=None, metavar="URL",
                         help="with --site: where the history is kept: a SQLite file, or postgresql://user@host/db "
                              "to share one history between several servers (default: <site>.history.db "
                              "beside the site file)")
    cameras.add_argument("--webhook", default=None, metavar="URL",
                         help="with --site: POST each alert raised or cleared as JSON to this URL")
    cameras.add_argument("--keep_days", type=positive_float, default=None, metavar="N",
                         help="with --site: delete history older than N days (default: keep everything)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--client_timeout_s", type=positive_float, default=15.0,
                        help="seconds a client may take to send a request's head, or leave its upload without "
                             "progress, before its connection is closed")
    limits.add_argument("--max_connections", type=at_least(1), default=512,
                        help="connections served at once; requests on more are answered 503")
    limits.add_argument("--max_videos", type=at_least(1), default=2,
                        help="video jobs waiting or counting at once")
    limits.add_argument("--max_video_s", type=positive_float, default=600.0,
                        help="longest video counted, in seconds of video")
    limits.add_argument("--job_ttl_s", type=positive_float, default=3600.0,
                        help="seconds a finished video job's counts stay available")
    return parser


def read_token(args, parser) -> str | None:
    """The token from --token, --token_file or the environment (in that order), or ``None``."""
    if args.token is not None and args.token_file is not None:
        parser.error("give --token or --token_file, not both")
    token, source = args.token, "--token"
    if args.token_file is not None:
        try:
            token, source = Path(args.token_file).read_text(encoding="utf-8").partition("\n")[0], "--token_file"
        except (OSError, UnicodeDecodeError) as error:
            parser.error(f"--token_file {args.token_file}: cannot read it ({getattr(error, 'strerror', error)})")
    elif token is None and os.environ.get(TOKEN_ENV_VAR) is not None:
        token, source = os.environ[TOKEN_ENV_VAR], f"${TOKEN_ENV_VAR}"
    if token is not None and not token.strip():
        parser.error(f"{source} is empty; give a secret, or leave it out on 127.0.0.1")
    return token.strip() if token is not None else None


def service_settings(args, token: str | None, port: int):
    """The ``serving.app.ServiceSettings`` the flags describe, for a server that got ``port``."""
    from serving.app import ServiceSettings
    from serving.guards import allowed_hosts
    from serving.videos import VideoLimits

    from watching.site import read_site

    videos = VideoLimits(active=args.max_videos, max_seconds=args.max_video_s, ttl_s=args.job_ttl_s)
    site = read_site(args.site) if args.site else None
    database = args.database or (str(Path(args.site).with_suffix(".history.db")) if args.site else None)
    return ServiceSettings(name=args.weight_path, token=token, max_upload_mb=args.max_upload_mb,
                           max_queue=args.max_queue, allowed_hosts=allowed_hosts(args.host, port, args.allowed_hosts),
                           client_timeout_s=args.client_timeout_s, videos=videos, site=site, database=database,
                           webhook=args.webhook, keep_days=args.keep_days)


def raise_open_file_limit(connections: int) -> None:
    """Let the process hold ``connections`` sockets and its own files (the soft limit is often 1024)."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or ``OSError`` with one line naming them."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as error:
        raise OSError(f"--host {host} --port {port}: cannot listen there ({error.strerror or error})") from None


def announce(args, token, counter, server_socket) -> None:
    """The line saying where the service is, who may use it, and how to stop it."""
    host, port = server_socket.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if token is not None:
        access = "the API needs the token (Authorization: Bearer ...)"
    elif is_loopback(args.host):
        access = "no token: bound to this machine only"
    else:
        access = "WARNING: no token (--no_auth): anyone who reaches this address can use it"
    mode = "fast mode" if args.amp else "exact mode"
    print(f"serving {args.weight_path} ({counter.device}, {mode}) on http://{shown}:{port}/ (API docs at /docs); "
          f"{access}. Ctrl-C stops.", flush=True)


def stopping_server(uvicorn, config, on_stop):
    """uvicorn's server, telling the service (``on_stop``, on the event loop) as soon as a signal asks it to
    stop: open event streams end then, rather than holding the stop for the grace period."""
    class StoppingServer(uvicorn.Server):
        async def serve(self, sockets=None):
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets=sockets)

        def handle_exit(self, sig, frame):
            # A signal handler interrupts the loop anywhere: the service is told from the loop itself.
            if getattr(self, "loop", None) is not None:
                self.loop.call_soon_threadsafe(on_stop)
            super().handle_exit(sig, frame)

    return StoppingServer(config)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    token = read_token(args, parser)
    if args.site is None and (args.database or args.webhook or args.keep_days):
        parser.error("--database, --webhook and --keep_days are for the cameras of a site file: give --site")
    if not is_loopback(args.host) and token is None and not args.no_auth:
        parser.error(f"--host {args.host} serves beyond this machine: give --token SECRET (clients then send "
                     "'Authorization: Bearer SECRET'), or --no_auth to let anyone who reaches it count")
    configure_malloc()
    try:
        # Imported here: the web framework is only needed once arguments are known to be good.
        import uvicorn

        from serving.app import create_app
        from serving.guards import head_deadline_protocol

        raise_open_file_limit(args.max_connections)
        server_socket = listen(args.host, args.port)
        stop_on_sigterm()
        # The site file first: a mistake in it is found before the checkpoint takes its seconds to load.
        settings = service_settings(args, token, server_socket.getsockname()[1])
        counter = Counter.from_checkpoint(args.weight_path, device=resolve_device(args.device), **counter_options(args))
        app = create_app(counter, settings, on_ready=lambda: announce(args, token, counter, server_socket))
    except (OSError, ValueError, CheckpointError, RuntimeError) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    except Terminated:
        print("stopped before serving", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("stopped before serving", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        # uvicorn's own handlers stop it gracefully on Ctrl-C and SIGTERM once it runs.
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5,
                                limit_concurrency=args.max_connections, timeout_keep_alive=5,
                                http=head_deadline_protocol(args.client_timeout_s))
        stopping_server(uvicorn, config, on_stop=app.service.begin_stop).run(sockets=[server_socket])
    except (KeyboardInterrupt, Terminated):
        pass
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    run_script(main)
