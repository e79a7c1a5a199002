"""The live progress line on a real terminal (tmux): unbroken at 80 columns, and no
``nan`` anywhere, live or plain."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.harness import wait_for

TMUX = shutil.which("tmux")


@pytest.mark.skipif(TMUX is None, reason="tmux drives the terminal")
def test_an_80_column_terminal_shows_an_unbroken_progress_line(tmp_path: Path) -> None:
    assert TMUX is not None
    name, done = f"progress-{uuid.uuid4().hex[:8]}", tmp_path / "done"
    command = (f"cd {ROOT} && {sys.executable} -m actors.cli run --slot-count 1500 "
               f"--advance 1 > /dev/null; touch {done}; sleep 60")
    subprocess.run([TMUX, "new-session", "-d", "-s", name, "-x", "80", "-y", "30", command],
                   check=True, timeout=10)
    try:
        wait_for(done.exists, 90, "the run to end")
        screen = subprocess.run([TMUX, "capture-pane", "-p", "-t", name], check=True,
                                capture_output=True, text=True, timeout=10).stdout
    finally:
        subprocess.run([TMUX, "kill-session", "-t", name], timeout=10)
    lines = [line for line in screen.splitlines() if "slots" in line]
    assert lines, screen
    line = lines[-1].rstrip()
    assert len(line) <= 80, line
    assert re.fullmatch(r"…\w{8} ━+ 1500/1500 slots 100% \d+/s \d:\d\d:\d\d 0 reconnects",
                        line), line
    assert "nan" not in screen


def test_the_plain_line_says_unknown_before_the_rate_is_known() -> None:
    from actors.cli.progress import PlainProgress

    class Run:
        total, counts, stage, last_slot = 100, {"events": 0, "reconnects": 0}, "starting", None
        discover = False

        def _done(self) -> int:
            return 0

    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        PlainProgress(Run(), "backtest_0123456789")._line()  # type: ignore[arg-type]
    assert "ETA unknown" in err.getvalue() and "nan" not in err.getvalue()
