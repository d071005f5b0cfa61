"""Command line: `threadchat serve` runs the server, `threadchat connect` the terminal client."""

import argparse
import logging
import sys
from collections.abc import Sequence

from threadchat import __version__, config


def _serve(args: argparse.Namespace) -> int:
    from threadchat.app.server import (
        Server,
        StartupError,
        limit_malloc_arenas,
        raise_descriptor_limit,
        tune_garbage_collector,
    )
    from threadchat.app.startup import UnreachableError

    try:
        settings = config.load(args)
    except config.ConfigError as problem:
        print(f"threadchat: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Before Server() starts any thread: an arena is made when a thread first meets a busy one.
    limit_malloc_arenas()
    before, after = raise_descriptor_limit()
    if after != before:
        logging.getLogger("threadchat").info("open-file limit raised from %d to %d", before, after)
    try:
        server = Server(settings)
    except StartupError as problem:
        logging.getLogger("threadchat").error("cannot start: %s", problem)
        return 1
    server.stop_on_signals()
    try:
        server.start()
    except (OSError, StartupError) as problem:
        logging.getLogger("threadchat").error("cannot start: %s", problem)
        server.stop()
        # 2: a service it was told to use (PostgreSQL, Redis) cannot be reached, which a
        # supervisor may wait out, unlike a bad setting.
        return 2 if isinstance(problem, UnreachableError) else 1
    tune_garbage_collector()
    server.serve_forever()
    return 0


def _connect(args: argparse.Namespace) -> int:
    from threadchat.client.main import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="threadchat", description="A threaded chat server.")
    parser.add_argument("--version", action="version", version=f"threadchat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the chat server",
        description="Run the chat server. Every setting below can also be given as an "
        "environment variable THREADCHAT_<NAME> or as a key in the --config TOML file; "
        "flags win over the environment, which wins over the file.",
    )
    config.add_arguments(serve)
    serve.set_defaults(func=_serve)
    connect = commands.add_parser("connect", help="chat from the terminal")
    from threadchat.client.main import add_arguments

    add_arguments(connect)
    connect.set_defaults(func=_connect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
