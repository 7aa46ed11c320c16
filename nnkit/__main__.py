"""``python -m nnkit ...`` = the ``nnkit`` command."""

from nnkit.cli import main

raise SystemExit(main())
