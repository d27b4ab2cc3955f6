"""The ``leveret`` command: ``serve`` runs the broker; ``hash-password`` helps write config files.

User errors (a taken port, a bad config file) are one line on stderr and exit status 1 or 2,
never a traceback. ``serve`` prints one line to stdout when it accepts connections, and on
SIGTERM or Ctrl-C closes every connection with 320 CONNECTION_FORCED and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import signal
import sys
from pathlib import Path

from leveret import __version__
from leveret.amqp.auth import hash_password
from leveret.broker import Broker, ListenError, new_event_loop
from leveret.config import LOG_LEVELS, Settings, load_settings
from leveret.errors import ConfigError
from leveret.store.base import StoreError

log = logging.getLogger("leveret")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leveret", description="An AMQP 0-9-1 message broker.")
    parser.add_argument("--version", action="version", version=f"leveret {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the broker")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 5672; 0 picks a free one)")
    serve.add_argument("--data-dir", type=Path, help="where durable state is kept")
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    serve.add_argument("--config", type=Path, help="TOML config file (users, vhosts, limits)")

    hasher = commands.add_parser("hash-password",
                                 help="print a password hash for a config file's password_hash")
    hasher.add_argument("password", nargs="?", help="read from the terminal when omitted")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "hash-password":
        password = args.password if args.password is not None else getpass.getpass()
        print(hash_password(password))
        return 0
    try:
        settings = load_settings(
            {"host": args.host, "port": args.port, "data_dir": args.data_dir,
             "log_level": args.log_level},
            config_file=args.config,
        )
    except ConfigError as err:
        print(f"leveret: error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    tune_garbage_collector()
    loop = new_event_loop()
    try:
        return loop.run_until_complete(serve(settings))
    finally:
        loop.close()


def tune_garbage_collector() -> None:
    """Collect cyclic garbage less often: a broker allocates a few objects per message, nearly
    all freed by reference counting, and with CPython's default thresholds (a young collection
    every 700 allocations) the collector took about a tenth of the broker's time under load
    (scenario A of bench/compare.py: 0.19 s of 1.7 s). What start-up built is frozen out of
    the collector's sight. Only `leveret serve` does this: an embedded broker leaves its host
    process's settings alone."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def serve(settings: Settings) -> int:
    broker = Broker(settings=settings)
    try:
        await broker.start()
    except (ListenError, StoreError) as err:
        print(f"leveret: error: {err}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def shut_down(signame: str) -> None:
        if not stopping:
            log.info("received %s, shutting down", signame)
            stopping.append(loop.create_task(broker.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shut_down, sig.name)
    storage = ("messages in memory only" if settings.data_dir is None
               else f"data dir {settings.data_dir}")
    print(f"leveret {__version__} ready: amqp://{settings.host}:{broker.port} "
          f"(vhosts: {', '.join(broker.vhosts)}; {storage})", flush=True)
    await broker.wait_stopped()
    return 0
