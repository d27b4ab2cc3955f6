"""The connection layer over raw sockets: handshake, authentication, tuning, heartbeats,
framing errors and limits, and which scope each error closes."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from pathlib import Path

import pika
import pika.exceptions
import pytest
from pamqp import commands, heartbeat

from leveret import Broker
from leveret.config import load_settings
from tests.rawamqp import PROTOCOL_HEADER, Closed, RawClient


def raw(broker: Broker) -> RawClient:
    assert broker.port is not None
    return RawClient("127.0.0.1", broker.port)


def expect_connection_close(client: RawClient, code: int, text: str = "") -> None:
    close = client.expect(commands.Connection.Close)
    assert close.reply_code == code, close.reply_text
    assert text in close.reply_text
    client.send(0, commands.Connection.CloseOk())
    client.wait_closed()


def test_start_advertises_what_clients_check(broker: Broker) -> None:
    with raw(broker) as client:
        client.handshake()
        assert client.start is not None and client.tune is not None
        props = client.start.server_properties
        assert props["product"] == "Leveret"
        assert client.start.mechanisms == "PLAIN AMQPLAIN"
        assert all(props["capabilities"][name] for name in (
            "publisher_confirms", "basic.nack", "consumer_cancel_notify",
            "exchange_exchange_bindings", "connection.blocked", "authentication_failure_close",
            "per_consumer_qos"))
        tune = client.tune
        assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)


def test_wrong_protocol_header_gets_ours_back(broker: Broker) -> None:
    with raw(broker) as client:
        client.send_raw(b"HTTP/1.1 GET /\r\n")
        assert client.wait_closed() == PROTOCOL_HEADER


def start_ok(client: RawClient, response: str, *, failure_close: bool = True) -> None:
    client.send_raw(PROTOCOL_HEADER)
    client.expect(commands.Connection.Start)
    capabilities = {"authentication_failure_close": True} if failure_close else {}
    client.send(0, commands.Connection.StartOk(
        client_properties={"capabilities": capabilities}, mechanism="PLAIN", response=response,
    ))


def test_wrong_password_is_403_and_close(broker: Broker) -> None:
    with raw(broker) as client:
        start_ok(client, "\x00guest\x00wrong")
        expect_connection_close(client, 403, "Login was refused using authentication "
                                             "mechanism PLAIN")


def test_wrong_password_without_failure_close_capability_drops_the_socket(
    broker: Broker,
) -> None:
    with raw(broker) as client:
        start_ok(client, "\x00guest\x00wrong", failure_close=False)
        assert client.wait_closed() == b""  # as RabbitMQ: no frame the client did not ask for


def test_pika_reports_bad_credentials(broker: Broker) -> None:
    params = pika.ConnectionParameters("127.0.0.1", broker.port,
                                       credentials=pika.PlainCredentials("guest", "nope"))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params)


def test_amqplain_login(broker: Broker) -> None:
    with raw(broker) as client:
        client.send_raw(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        # AMQPLAIN: a field table without its length prefix.
        response = b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest"
        client.send(0, commands.Connection.StartOk(mechanism="AMQPLAIN",
                                                   response=response.decode()))
        client.expect(commands.Connection.Tune)


def test_unknown_vhost_is_530(broker: Broker) -> None:
    with raw(broker) as client, pytest.raises(AssertionError, match=r"Connection.Close"):
        client.handshake(vhost="nope")


def test_guest_is_refused_from_a_non_loopback_address() -> None:
    address = _non_loopback_address()
    settings = load_settings({"host": "0.0.0.0", "port": 0}, environ={})
    with Broker(settings=settings) as broker, RawClient(address, broker.port or 0) as client:
        start_ok(client, "\x00guest\x00guest")
        expect_connection_close(client, 403, "can only connect via localhost")


def test_configured_user_connects_from_anywhere(tmp_path: Path) -> None:
    config = tmp_path / "leveret.toml"
    config.write_text(
        'vhosts = ["/", "jobs"]\n'
        '[[users]]\nname = "app"\npassword = "s3cret"\n'
        '[users.permissions."jobs"]\nconfigure = "^app-"\nwrite = ".*"\nread = ".*"\n'
    )
    settings = load_settings({"host": "0.0.0.0", "port": 0}, config_file=config, environ={})
    with Broker(settings=settings) as broker:
        url = f"amqp://app:s3cret@{_non_loopback_address()}:{broker.port}/jobs"
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            ch.queue_declare("app-queue")
            with pytest.raises(pika.exceptions.ChannelClosedByBroker,
                               match=r"403.*configure access to queue 'other'.*refused"):
                ch.queue_declare("other")
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
            pika.BlockingConnection(pika.URLParameters(url.replace("/jobs", "/%2F")))


def _non_loopback_address() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent; this picks the outgoing address
        address: str = probe.getsockname()[0]
    finally:
        probe.close()
    assert not address.startswith("127."), "this test needs a non-loopback IPv4 address"
    return address


def test_frame_max_below_minimum_is_refused(broker: Broker) -> None:
    with raw(broker) as client:
        client.send_raw(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(0, commands.Connection.StartOk(response="\x00guest\x00guest"))
        client.expect(commands.Connection.Tune)
        client.send(0, commands.Connection.TuneOk(frame_max=1000))
        expect_connection_close(client, 530, "frame_max=1000 < 4096")


def test_oversized_frame_is_501(broker: Broker) -> None:
    with raw(broker) as client:
        client.handshake()
        client.open_channel()
        client.send_frame(1, 1, b"\x00" * 200_000)
        expect_connection_close(client, 501)


def test_bad_frame_end_is_501(broker: Broker) -> None:
    with raw(broker) as client:
        client.handshake()
        client.open_channel()
        client.send_frame(8, 0, b"", end=0x00)
        expect_connection_close(client, 501)


def test_channel_max_limits_open_channels_not_their_numbers(broker: Broker) -> None:
    # RabbitMQ counts open channels against channel_max (probed on 3.10).
    with raw(broker) as client:
        client.handshake(channel_max=2)
        client.open_channel(3000)
        client.open_channel(1)
        client.send(2, commands.Channel.Open())
        expect_connection_close(client, 530, "number of channels opened (2) has reached the "
                                             "negotiated channel_max (2)")


def test_method_on_unopened_channel_is_504(broker: Broker) -> None:
    with raw(broker) as client:
        client.handshake()
        client.send(5, commands.Queue.Declare(queue="q"))
        expect_connection_close(client, 504)


def test_content_header_without_publish_is_505(broker: Broker) -> None:
    with raw(broker) as client:
        client.handshake()
        client.open_channel()
        client.send_frame(2, 1, b"\x00\x3c\x00\x00" + (5).to_bytes(8, "big") + b"\x00\x00")
        expect_connection_close(client, 505)


def test_channel_error_leaves_connection_usable(broker: Broker) -> None:
    with raw(broker) as client:
        client.handshake()
        client.open_channel(1)
        client.send(1, commands.Queue.Declare(queue="missing", passive=True))
        close = client.expect(commands.Channel.Close)
        assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
        client.send(1, commands.Queue.Declare(queue="ignored-while-closing"))
        client.send(1, commands.Channel.CloseOk())
        client.open_channel(1)  # the id is free again
        client.send(1, commands.Queue.Declare(queue="fine"))
        assert client.expect(commands.Queue.DeclareOk).queue == "fine"


def test_server_sends_heartbeats_and_drops_a_silent_peer(broker: Broker) -> None:
    with raw(broker) as client:
        client.handshake(heartbeat_interval=1)
        client.open_channel(1)
        client.send(1, commands.Queue.Declare(queue="hb"))
        client.expect(commands.Queue.DeclareOk)
        client.publish(1, "", "hb", b"held")
        client.send(1, commands.Basic.Get(queue="hb"))
        client.expect(commands.Basic.GetOk)
        client.recv(), client.recv()  # its content header and body
        started = time.monotonic()
        assert isinstance(client.recv(timeout=2)[1], heartbeat.Heartbeat)
        with pytest.raises(Closed):  # we stay silent: dropped after two intervals
            while True:
                client.recv(timeout=5)
        assert 1.5 <= time.monotonic() - started < 4.5
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        method, _, body = conn.channel().basic_get("hb", auto_ack=True)
        assert (body, method.redelivered) == (b"held", True)


def test_silent_client_is_dropped_after_handshake_timeout() -> None:
    settings = replace(load_settings({"port": 0}, environ={}), handshake_timeout=0.3)
    with Broker(settings=settings) as broker, raw(broker) as client:
        client.send_raw(b"AMQP")
        assert client.wait_closed(timeout=3) == b""


def test_shutdown_closes_clients_with_320() -> None:
    broker = Broker(port=0)
    broker.__enter__()
    client = raw(broker)
    client.handshake()
    broker.__exit__(None, None, None)
    close = client.expect(commands.Connection.Close)
    client.close()
    assert close.reply_code == 320
    assert "CONNECTION_FORCED" in close.reply_text


def test_many_channels_on_one_connection(broker: Broker) -> None:
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        channels = [conn.channel() for _ in range(100)]
        for i, ch in enumerate(channels):
            ch.queue_declare(f"ch-{i}")
        assert len({ch.channel_number for ch in channels}) == 100
