"""``python -m actors.cli``: the same as the ``backtest-actors`` command."""

from .parser import main

raise SystemExit(main())
