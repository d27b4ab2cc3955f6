"""The fuzz package's fixture: one broker per test module, watched by a ``Harness``.

The harness itself (the broker, the pika client that must keep working, the log watch and the
checks run after every example) is in ``harness``; only the fixture lives here, so pytest finds it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.fuzz.harness import Harness, running_harness


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    """A broker for the whole module; each example checks it survived (``Harness.example``)."""
    with running_harness() as running:
        yield running
