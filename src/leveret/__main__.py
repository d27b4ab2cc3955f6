"""``python -m leveret`` is the ``leveret`` command."""

from leveret.cli import main

raise SystemExit(main())
