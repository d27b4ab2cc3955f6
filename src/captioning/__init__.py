"""The video auto-captioning system: a client of any AMQP 0-9-1 broker (not built yet)."""
