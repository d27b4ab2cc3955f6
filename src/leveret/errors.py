"""The error tree of the broker.

Every AMQP error carries its reply code and its scope: a channel error closes one channel and
leaves the connection usable; a connection error closes the connection. `core` raises these
domain errors; each front door translates them in exactly one place (`amqp.connection` sends
Channel.Close or Connection.Close with the code and text).

This module must not import anything from the broker: every layer imports it.
"""

from __future__ import annotations

from typing import ClassVar


class LeveretError(Exception):
    """Base of every error the broker raises on purpose."""


class ConfigError(LeveretError):
    """The configuration (flags, environment, config file) is invalid."""


class AMQPError(LeveretError):
    """An error with an AMQP reply code.

    The reply text follows RabbitMQ's shape, ``"NOT_FOUND - no queue 'q' in vhost '/'"``, because
    users search for those strings.
    """

    reply_code: ClassVar[int] = 541
    reply_name: ClassVar[str] = "INTERNAL_ERROR"
    connection_level: ClassVar[bool] = True

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    @property
    def reply_text(self) -> str:
        # Reply texts are shortstr on the wire: at most 255 bytes.
        full = f"{self.reply_name} - {self.text}"
        return full.encode()[:255].decode(errors="ignore")


class ChannelError(AMQPError):
    """Closes the channel; the connection stays open."""

    connection_level = False


class ContentTooLarge(ChannelError):
    reply_code, reply_name = 311, "CONTENT_TOO_LARGE"


class NoRoute(ChannelError):
    reply_code, reply_name = 312, "NO_ROUTE"


class NoConsumers(ChannelError):
    reply_code, reply_name = 313, "NO_CONSUMERS"


class AccessRefused(ChannelError):
    reply_code, reply_name = 403, "ACCESS_REFUSED"


class NotFound(ChannelError):
    reply_code, reply_name = 404, "NOT_FOUND"


class ResourceLocked(ChannelError):
    reply_code, reply_name = 405, "RESOURCE_LOCKED"


class PreconditionFailed(ChannelError):
    reply_code, reply_name = 406, "PRECONDITION_FAILED"


class ConnectionLevelError(AMQPError):
    """Closes the whole connection."""


class ConnectionForced(ConnectionLevelError):
    reply_code, reply_name = 320, "CONNECTION_FORCED"


class InvalidPath(ConnectionLevelError):
    reply_code, reply_name = 402, "INVALID_PATH"


class LoginRefused(ConnectionLevelError):
    """403 during the handshake: the one access error that closes the connection."""

    reply_code, reply_name = 403, "ACCESS_REFUSED"


class FrameError(ConnectionLevelError):
    reply_code, reply_name = 501, "FRAME_ERROR"


class SyntaxError_(ConnectionLevelError):  # noqa: N801 - the builtin name is taken
    reply_code, reply_name = 502, "SYNTAX_ERROR"


class CommandInvalid(ConnectionLevelError):
    reply_code, reply_name = 503, "COMMAND_INVALID"


class ChannelStateError(ConnectionLevelError):
    """504 CHANNEL_ERROR: a frame for a channel that is not open, or opened twice."""

    reply_code, reply_name = 504, "CHANNEL_ERROR"


class UnexpectedFrame(ConnectionLevelError):
    reply_code, reply_name = 505, "UNEXPECTED_FRAME"


class ResourceError(ConnectionLevelError):
    reply_code, reply_name = 506, "RESOURCE_ERROR"


class NotAllowed(ConnectionLevelError):
    reply_code, reply_name = 530, "NOT_ALLOWED"


class NotImplementedFeature(ConnectionLevelError):
    reply_code, reply_name = 540, "NOT_IMPLEMENTED"


class InternalError(ConnectionLevelError):
    reply_code, reply_name = 541, "INTERNAL_ERROR"
