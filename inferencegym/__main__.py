"""``python -m inferencegym COMMAND ...`` is ``inferencegym COMMAND ...``."""

from inferencegym.cli import main

raise SystemExit(main())
