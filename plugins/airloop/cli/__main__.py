"""``python -m airloop.cli``: the same entry point as the ``airloop`` script."""

from airloop.cli import main

raise SystemExit(main())
