"""The `captioning` command: `up` (everything on one machine), `web` and `worker`.

Flags map one to one onto `Settings` fields; `config.load_settings` merges them with the
environment. Nothing here does work beyond parsing, logging set-up and dispatch.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captioning import __version__
from captioning.config import ENGINES, ConfigError, data_dir_settings, load_settings


def _common(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--engine", choices=ENGINES, help="speech engine (default whisper; env CAPTIONING_ENGINE)")
    add("--model", help="Whisper model: tiny.en (bundled, offline), base.en, small... or a "
                        "directory (env CAPTIONING_MODEL)")
    add("--device", help="auto, cpu or cuda (env CAPTIONING_DEVICE)")
    add("--queue-prefix", help="queue name prefix (default captioning)")
    add("--queue-type", choices=("classic", "quorum"),
        help="declare quorum queues on a RabbitMQ cluster (env CAPTIONING_QUEUE_TYPE)")
    add("--log-level", choices=("debug", "info", "warning", "error"))


def _urls(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--broker", dest="broker_url", help="amqp://user:pass@host:port/vhost (env BROKER_URL)")
    add("--database", dest="database_url",
        help="sqlite:///path or postgresql://... (env DATABASE_URL)")
    add("--storage", dest="storage_url", help="file:///dir or s3://bucket/prefix (env STORAGE_URL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captioning", description=__doc__)
    parser.add_argument("--version", action="version", version=f"captioning {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="the whole system on one machine (embedded broker)")
    up.add_argument("--host", help="web address (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=8000, help="web port (default 8000)")
    up.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    up.add_argument("--data-dir", type=Path, default=Path("var"),
                    help="SQLite file and media folder (default ./var)")
    up.add_argument("--broker-port", type=int, default=0,
                    help="embedded broker port (default: any free port)")
    _common(up)

    web = commands.add_parser("web", help="the Video Service (upload API and pages)")
    web.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    web.add_argument("--port", type=int, help="port (default 8000; 0 = any free port)")
    web.add_argument("--max-upload-bytes", type=int, help="upload size limit (default 2 GiB)")
    _urls(web)
    _common(web)

    worker = commands.add_parser("worker", help="a Captioner: consume jobs and caption videos")
    worker.add_argument("--concurrency", type=int, help="jobs at once (prefetch; default 1)")
    _urls(worker)
    _common(worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags: dict[str, Any] = {k: v for k, v in vars(args).items()
                             if k not in ("command", "workers", "data_dir", "broker_port")}
    if args.command == "up":
        flags.update(data_dir_settings(args.data_dir))
    if getattr(args, "workers", 0) < 0:
        print("captioning: --workers must be 0 or more", file=sys.stderr)
        return 2
    try:
        settings = load_settings(flags)
    except ConfigError as err:
        print(f"captioning: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    from captioning import servers

    try:
        if args.command == "web":
            return asyncio.run(servers.web_main(settings))
        if args.command == "worker":
            return asyncio.run(servers.worker_main(settings))
        from captioning.up import up_main
        return asyncio.run(up_main(settings, args.workers, args.broker_port,
                                   args.data_dir.resolve() / "broker"))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    except Exception as err:
        logging.getLogger("captioning").critical("captioning %s failed: %s", args.command, err,
                                                 exc_info=True)
        return 1
