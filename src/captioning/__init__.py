"""captioning: the video auto-captioning system built on an AMQP 0-9-1 broker.

A Video Service (`captioning.web`) takes uploads and publishes jobs; Captioner workers
(`captioning.worker`) consume them, run the plain-function pipeline (`captioning.pipeline`)
and store WebVTT captions. The package talks to its broker only over AMQP (aio-pika) and
imports `leveret` only in `captioning up`, to embed a broker.
"""

__version__ = "0.1.0"
