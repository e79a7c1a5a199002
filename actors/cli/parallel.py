"""``run --parallel``: the range as one parallel session, its sub-sessions driven at once.

The server splits the range (``ManagedParallelSession``); this runs each
sub-session as ``run`` runs a session (:class:`~actors.cli.run.Run`: its events
journaled, continues written ahead, the delivery checked on the embedded
simulator), at most ``--concurrency`` at a time, over the one control socket.
A sub-session that fails is reported with its range; the others go on. The exit
code is 1 when any failed.

``--out DIR``: one journal per sub-session (``DIR/sub-<i>.jsonl``) and a manifest
(``DIR/parallel.json``: the control session, the sub-sessions, their journals).
``run --resume DIR`` re-attaches every sub-session still running from its
journal, over one new control socket, and goes on; one that completed stays done.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from protocol import CreateSession, ReconnectPolicy, Timing, backtest_ws_url
from protocol.codec import dump_document, load_document
from protocol.simulator import LocalSimulator

from ..decisions.cursor import Cursor
from ..decisions.pacer import DEFAULT_MAX_RUN_AHEAD, LostContinuePolicy
from ..events import ManagedSessionError
from ..frontdoors.parallel import ManagedParallelSession, ParallelSubSession
from .journal import JournalError, JournalState, read_journal
from .progress import PLAIN_PROGRESS_EVERY
from .run import Run

MANIFEST = "parallel.json"
LOCK = "parallel.lock"
MANIFEST_FORMAT = "backtest-actors-parallel"


def is_parallel_journal(path: str) -> bool:
    """``--resume PATH`` names a parallel run's directory (it holds the manifest)."""
    return (Path(path) / MANIFEST).is_file()


class ParallelRun:
    def __init__(self, console: Console, url: str, api_key: str, create: CreateSession,
                 timing: Timing, policy: ReconnectPolicy, tx_addrs: list[str],
                 diff_addrs: list[str], advance: int, out_dir: str | None, concurrency: int,
                 seed: int, *, simulator: LocalSimulator | None = None, quiet: bool = False,
                 json_summary: bool = False, knobs: dict[str, float] | None = None,
                 start_timeout: float | None = None, resume_dir: str | None = None,
                 max_run_ahead: int = DEFAULT_MAX_RUN_AHEAD,
                 on_lost_continue: LostContinuePolicy = "resend") -> None:
        self.console, self.url, self.api_key, self.create = console, url, api_key, create
        self.timing, self.policy, self.seed = timing, policy, seed
        self.tx_addrs, self.diff_addrs, self.advance = tx_addrs, diff_addrs, advance
        self.out_dir, self.concurrency, self.simulator = out_dir, concurrency, simulator
        self.quiet, self.json_summary, self.knobs = quiet, json_summary, knobs or {}
        self.start_timeout, self.resume_dir = start_timeout, resume_dir
        self.max_run_ahead, self.on_lost_continue = max_run_ahead, on_lost_continue
        self.reports: dict[int, dict[str, Any]] = {}
        self.runs: dict[int, Run] = {}  # the sub-sessions being driven, for progress
        self._span = 0  # slots of every sub-session driven
        self._journals: dict[str, str] = {}  # sub-session id -> its journal
        self._lock = threading.Lock()

    # --- starting ------

    def run(self) -> int:
        directory = self.resume_dir or self.out_dir
        if directory is not None:
            # One process at a time on a run's directory: a second resume would rewrite
            # journals the first is writing.
            try:
                os.makedirs(directory, exist_ok=True)
                self._dir_lock = open(Path(directory) / LOCK, "a")  # noqa: SIM115 - held to the end
                fcntl.flock(self._dir_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                sys.stderr.write(f"backtest-actors run: {directory}: another process is "
                                 f"running or resuming this parallel run\n")
                return 1
            except OSError as exc:
                sys.stderr.write(f"backtest-actors run: {directory}: {exc}\n")
                return 2
        try:
            parallel, subs, states = self._open()
        except (ManagedSessionError, JournalError, OSError, ValueError) as exc:
            what = "cannot be resumed" if self.resume_dir else "not created"
            sys.stderr.write(f"backtest-actors run: parallel session {what}: "
                             f"{' '.join(str(exc).split())}\n")
            return 1
        try:
            codes = self._drive(subs, states)
        finally:
            parallel.shutdown()
        return self._summary(parallel.control_session_id, subs, codes)

    def _open(self) -> tuple[ManagedParallelSession, list[ParallelSubSession],
                             list[JournalState | None]]:
        common: dict[str, Any] = {"timing": self.timing, "policy": self.policy,
                                  "start_timeout": self.start_timeout,
                                  "max_run_ahead": self.max_run_ahead,
                                  "on_lost_continue": self.on_lost_continue}
        if self.resume_dir is None:
            parallel = ManagedParallelSession.start(self.url, self.api_key, self.create,
                                                    **common)
            subs = parallel.take_sub_sessions()
            if self.out_dir is not None:
                self._write_manifest(parallel, subs)
                self._journals = {s.info.session_id: str(Path(self.out_dir) / f"sub-{i}.jsonl")
                                  for i, s in enumerate(subs)}
            return parallel, subs, [None] * len(subs)
        manifest = self._read_manifest()
        self.tx_addrs = list(manifest.get("transactions", []))
        self.diff_addrs = list(manifest.get("accountDiffs", []))
        self.advance = int(manifest.get("advance", 1))
        cursors: list[Cursor] = []
        states: list[JournalState | None] = []
        for entry in manifest["subSessions"]:
            journal = str(Path(self.resume_dir) / entry["journal"])
            self._journals[entry["sessionId"]] = journal
            if not os.path.exists(journal):
                # Never driven before the run stopped (beyond --concurrency): from the
                # start, with a journal of its own.
                cursors.append(Cursor(manifest["url"], entry["sessionId"],
                                      entry["rpcEndpoint"], entry["startSlot"],
                                      entry["endSlot"]))
                states.append(None)
                continue
            state = read_journal(journal)
            if not state.completed:
                cursors.append(state.cursor)
                states.append(state)
        parallel = ManagedParallelSession.attach(self.url, self.api_key,
                                                 manifest["controlSessionId"], cursors,
                                                 **common)
        # A completed sub-session stays done: only the others are attached and driven.
        return parallel, parallel.take_sub_sessions(), states

    def _write_manifest(self, parallel: ManagedParallelSession,
                        subs: list[ParallelSubSession]) -> None:
        assert self.out_dir is not None
        os.makedirs(self.out_dir, exist_ok=True)
        doc = {"format": MANIFEST_FORMAT, "url": backtest_ws_url(self.url),
               "controlSessionId": parallel.control_session_id,
               "transactions": self.tx_addrs, "accountDiffs": self.diff_addrs,
               "advance": self.advance,
               "subSessions": [{"sessionId": s.info.session_id, "startSlot": s.range[0],
                                "endSlot": s.range[1], "rpcEndpoint": s.info.rpc_endpoint,
                                "journal": f"sub-{i}.jsonl"}
                               for i, s in enumerate(subs)]}
        (Path(self.out_dir) / MANIFEST).write_text(dump_document(doc) + "\n")

    def _read_manifest(self) -> dict[str, Any]:
        assert self.resume_dir is not None
        try:
            doc = load_document((Path(self.resume_dir) / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise JournalError(f"{MANIFEST}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not all(
                isinstance(e, dict) and isinstance(e.get("journal"), str)
                for e in doc.get("subSessions", [None])):
            raise JournalError(f"{MANIFEST}: not a parallel run's manifest")
        return doc

    # --- driving ------

    def _drive(self, subs: list[ParallelSubSession], states: list[JournalState | None]
               ) -> list[int]:
        """Each sub-session as a Run, ``concurrency`` at a time; exit codes in order.

        Progress: on a terminal one live line per sub-session, in a pipe one combined
        line every few seconds (``--quiet``/``--json``: none)."""
        self._span = sum(s.range[1] - s.range[0] + 1 for s in subs)
        live = None if self.quiet or not self.console.is_terminal else Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=20),
            TextColumn("{task.completed}/{task.total} slots"), TextColumn("{task.fields[note]}"),
            console=self.console, transient=False)
        tasks = {} if live is None else {
            i: live.add_task(f"{s.range[0]}..={s.range[1]}", total=s.range[1] - s.range[0] + 1,
                             note="waiting") for i, s in enumerate(subs)}
        with ThreadPoolExecutor(max_workers=self.concurrency,
                                thread_name_prefix="parallel-run") as pool:
            futures: list[Future[int]] = [
                pool.submit(self._one, index, sub, state)
                for index, (sub, state) in enumerate(zip(subs, states, strict=True))]
            pending = set(futures)
            if live is not None:
                live.start()
            try:
                while pending:
                    _, pending = wait(pending, return_when=FIRST_COMPLETED, timeout=(
                        PLAIN_PROGRESS_EVERY if live is None else 0.25))
                    if live is not None:
                        for index, run in list(self.runs.items()):
                            live.update(tasks[index], completed=run._done(),
                                        note=f"{run.counts['events']} events, "
                                             f"{run.counts['reconnects']} reconnects")
                    elif not self.quiet:
                        self._progress(len(futures) - len(pending), len(futures))
            finally:
                if live is not None:
                    live.stop()
            return [f.result() for f in futures]

    def _one(self, index: int, sub: ParallelSubSession, state: JournalState | None) -> int:
        low, high = sub.range
        out = None
        journal = self._journals.get(sub.info.session_id)
        if state is None and journal is not None:
            out = open(journal, "x", encoding="utf-8")  # noqa: SIM115 - never over another
        expected = None if self.simulator is None else self.simulator.expected(
            low, high, transactions=self.tx_addrs, account_diffs=self.diff_addrs)
        run = Run(self.console, self.url, self.api_key, CreateSession(low, high),
                  self.timing, self.policy, self.tx_addrs, self.diff_addrs,
                  self.advance, out, None, self.seed, quiet=True,
                  embedded=self.simulator is not None, knobs=self.knobs,
                  expected=expected, resume=state,
                  resume_path=journal if state is not None else None,
                  opener=lambda: sub, report=lambda doc: self._report(index, sub, doc))
        self.runs[index] = run
        try:
            return run.run()
        finally:
            if out is not None:
                out.close()

    def _report(self, index: int, sub: ParallelSubSession, doc: dict[str, Any]) -> None:
        with self._lock:
            self.reports[index] = {**doc, "start_slot": sub.range[0], "end_slot": sub.range[1]}

    def _progress(self, done: int, total: int) -> None:
        """The combined line of a pipe: sub-sessions done, slots done of the range."""
        slots = sum(run._done() for run in list(self.runs.values()))
        span = self._span
        sys.stderr.write(f"parallel: {done}/{total} sub-sessions done, {slots}/{span} "
                         f"slots\n")
        sys.stderr.flush()

    # --- the summary ------

    def _summary(self, control_session_id: str, subs: list[ParallelSubSession],
                 codes: list[int]) -> int:
        rows = [self.reports.get(i, {"result": "failed", "error": "no summary",
                                     "start_slot": s.range[0], "end_slot": s.range[1]})
                for i, s in enumerate(subs)]
        failed = [r for r, code in zip(rows, codes, strict=True) if code != 0]
        if self.json_summary:
            sys.stdout.write(dump_document({
                "control_session_id": control_session_id,
                "result": "failed" if failed else "completed",
                "failures": [{"start_slot": r["start_slot"], "end_slot": r["end_slot"],
                              "error": r.get("error")} for r in failed],
                "sub_sessions": rows}) + "\n")
            return 1 if failed else 0
        table = Table(title=f"parallel {control_session_id}", show_header=True)
        table.add_column("range", no_wrap=True)  # never cut: it is what names a failure
        for column in ("result", "blocks", "txs", "diffs", "delivery"):
            table.add_column(column)
        for row in rows:
            delivery = row.get("delivery")
            table.add_row(f"{row['start_slot']}..={row['end_slot']}", str(row["result"]),
                          str(row.get("blocks_executed", "")), str(row.get("transactions", "")),
                          str(row.get("account_diffs", "")),
                          "" if delivery is None else "exact" if delivery == "exact"
                          else "differs")
        Console().print(table)
        for row in failed:
            sys.stderr.write(f"backtest-actors run: slots {row['start_slot']}..="
                             f"{row['end_slot']} failed: {row.get('error')}\n")
        return 1 if failed else 0
