"""``python -m medfocal.cli ...``: the same as the ``medfocal`` command."""

from __future__ import annotations

from medfocal.cli import main

raise SystemExit(main())
