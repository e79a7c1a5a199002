"""``python -m actors.cli``: the same as the ``backtest-actors`` command."""

from .run import main

raise SystemExit(main())
