"""Fixtures for the captioning tests: generated media, loaded engines, running processes.

Expensive things are session-scoped (media generated once, each model loaded once). Processes
are real: `captioning web` and `captioning worker` started as subprocesses against a real
broker (the embedded Leveret, or RabbitMQ where a test needs TTL and dead-lettering).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from captioning.asr import Engine, load_engine
from captioning.db import Database, Video
from leveret import Broker
from tests.captioning.media import KNOWN_TEXT, SHORT_TEXT, make_video, speak

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Media:
    speech_mp4: Path
    speech_webm: Path
    short_mp4: Path
    long_mp4: Path
    no_audio_mp4: Path
    truncated_mp4: Path
    truncated_webm: Path
    text_file: Path
    empty_file: Path


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    root = tmp_path_factory.mktemp("media")
    speech = speak(KNOWN_TEXT, root / "speech.wav")
    short = speak(SHORT_TEXT, root / "short.wav")
    long_wav = speak(" ".join([KNOWN_TEXT] * 3), root / "long.wav")
    speech_mp4 = make_video(root / "speech.mp4", speech)
    speech_webm = make_video(root / "speech.webm", speech, container="webm")
    truncated_mp4 = root / "truncated.mp4"
    truncated_mp4.write_bytes(speech_mp4.read_bytes()[: speech_mp4.stat().st_size // 2])
    truncated_webm = root / "truncated.webm"
    truncated_webm.write_bytes(speech_webm.read_bytes()[: speech_webm.stat().st_size // 2])
    text_file = root / "notes.mp4"  # a video's name, a text's content
    text_file.write_text("this is not a video\n" * 20)
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    return Media(speech_mp4, speech_webm, make_video(root / "short.mp4", short),
                 make_video(root / "long.mp4", long_wav),
                 make_video(root / "silent.mp4", None, seconds=2.0),
                 truncated_mp4, truncated_webm, text_file, empty)


@pytest.fixture(scope="session")
def whisper() -> Engine:
    return load_engine("whisper", "tiny.en", device="cpu")


@pytest.fixture(scope="session")
def sphinx() -> Engine:
    return load_engine("sphinx")


@pytest.fixture
def leveret_broker() -> Iterator[Broker]:
    """A fresh embedded Leveret on its own thread, for subprocesses and in-test clients."""
    with Broker(port=0) as running:
        yield running


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    """The RabbitMQ on 127.0.0.1:5672; a test that needs it fails if it is down."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as err:
        pytest.fail(f"RabbitMQ is not reachable on 127.0.0.1:5672 ({err})")
    return RABBITMQ_URL


@pytest.fixture
def prefix() -> str:
    """A queue-name prefix unique to this test, so parallel runs never share queues."""
    return f"captest-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A `python -m captioning ...` subprocess whose stdout lines are collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        self._stderr = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "captioning", *args], stdout=subprocess.PIPE,
            stderr=self._stderr, env=env, text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.popen.stdout:
            for line in self.popen.stdout:
                self.stdout.append(line.rstrip())
                self.lines.put(line.rstrip())

    def wait_for_line(self, start: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    break
                continue
            if line.startswith(start):
                return line
        pytest.fail(f"{' '.join(self.args[:1])} printed no line starting {start!r} "
                    f"(exit code {self.popen.poll()}); stderr:\n{self.stderr_tail()}")

    def stderr_tail(self, lines: int = 40) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(10)
        self._stderr.close()
        return self.popen.returncode


@dataclass
class System:
    """A running web service and workers sharing one broker, database and storage."""

    broker_url: str
    database_url: str
    storage_url: str
    prefix: str
    tmp: Path
    env: dict[str, str]
    web: Proc | None = None
    url: str = ""
    workers: list[Proc] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    _db: Database | None = None

    def flags(self) -> list[str]:
        return ["--broker", self.broker_url, "--database", self.database_url,
                "--storage", self.storage_url, "--queue-prefix", self.prefix]

    def start_web(self, *extra: str) -> str:
        self.web = self._spawn(["web", "--port", "0", *self.flags(), *extra], "web")
        self.url = self.web.wait_for_line("captioning web ready: ").split()[3]
        return self.url

    def start_workers(self, count: int = 1, *extra: str, wait: bool = True) -> list[Proc]:
        started = [self._spawn(["worker", *self.flags(), *extra], f"worker{len(self.procs)}")
                   for _ in range(count)]
        if wait:
            for proc in started:
                proc.wait_for_line("captioning worker ready: ", timeout=120)
        self.workers.extend(started)
        return started

    def _spawn(self, args: list[str], name: str) -> Proc:
        proc = Proc(args, self.env, self.tmp / f"{name}-{len(self.procs)}.log")
        self.procs.append(proc)
        return proc

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.database_url)
        return self._db

    def upload(self, path: Path, title: str | None = None) -> httpx.Response:
        data = {"title": title} if title is not None else {}
        with path.open("rb") as f:
            return httpx.post(f"{self.url}/api/videos", files={"file": (path.name, f)},
                              data=data, timeout=30)

    def video(self, video_id: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/api/videos/{video_id}", timeout=10)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def wait_for(self, video_id: str, statuses: tuple[str, ...] = ("done", "failed"),
                 timeout: float = 90, poll: float = 0.1) -> Video:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            video = self.db.find_video(video_id)
            if video is not None and video.status in statuses:
                return video
            time.sleep(poll)
        pytest.fail(f"video {video_id} not {statuses} after {timeout} s: "
                    f"{self.db.find_video(video_id)}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.args[0]} {p.pid}\n{p.stderr_tail(15)}" for p in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        if self._db is not None:
            self._db.close()


SystemFactory = Callable[..., System]


@pytest.fixture
def system_factory(tmp_path: Path, prefix: str) -> Iterator[SystemFactory]:
    """Builds Systems; stops every process they started at teardown."""
    made: list[System] = []

    def make(broker_url: str, database_url: str | None = None, storage_url: str | None = None,
             env: dict[str, str] | None = None) -> System:
        tmp = tmp_path / f"system{len(made)}"
        tmp.mkdir()
        system = System(
            broker_url=broker_url,
            database_url=database_url or f"sqlite:///{tmp / 'captioning.db'}",
            storage_url=storage_url or f"file://{tmp / 'media'}",
            prefix=prefix, tmp=tmp,
            env={**os.environ, "CAPTIONING_RETRY_DELAYS": "0.3,0.6",
                 "CAPTIONING_TMP_DIR": str(tmp), "CAPTIONING_CPU_THREADS": "1",
                 "PYTHONUNBUFFERED": "1", **(env or {})})
        made.append(system)
        return system

    yield make
    for system in made:
        system.close()


@pytest.fixture
def leveret_system(leveret_broker: Broker, system_factory: SystemFactory) -> System:
    """The default deployment: embedded Leveret, SQLite, a local folder; nothing started."""
    return system_factory(leveret_broker.url)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    env: dict[str, str]

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(s3={"addressing_style": "path"}))

    def new_bucket(self) -> str:
        name = f"captest-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto in server mode: an in-memory S3 on a free loopback port (no real S3 here).

    Sets the usual AWS variables for this process, as a deployment would."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield S3Server(f"http://127.0.0.1:{port}", env)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the `test` database on 127.0.0.1:5432, dropped afterwards; the URL
    selects it through libpq's `options`. Fails if PostgreSQL is down."""
    import psycopg

    schema = f"captest_{uuid.uuid4().hex[:10]}"
    last: Exception | None = None
    for user in ("postgres", "root"):
        url = f"postgresql://{user}@127.0.0.1:5432/test"
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            break
        except psycopg.OperationalError as err:
            last = err
    else:
        pytest.fail(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({last})")
    yield f"{url}?options=-csearch_path%3D{schema}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
