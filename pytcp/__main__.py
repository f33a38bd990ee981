"""``python -m pytcp``: the same command line as the ``pytcp`` console script."""

from pytcp.cli import main

raise SystemExit(main())
