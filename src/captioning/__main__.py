"""`python -m captioning`: the same entry point as the `captioning` console script."""

from captioning.cli import main

raise SystemExit(main())
