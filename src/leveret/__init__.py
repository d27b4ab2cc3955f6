"""Leveret: an AMQP 0-9-1 message broker in Python.

Public API: `Broker` (an embeddable server) and `__version__`. Everything else is internal.
"""

__version__ = "0.1.0"

from leveret.broker import Broker

__all__ = ["Broker", "__version__"]
