"""The simulator's parallel sessions over a bare socket: a parallel create splits the
range, multiplexes sub-session events with their own sequences, takes per-session
continues, re-attaches from per-session cursors and refuses unknown sub-sessions."""

from __future__ import annotations

from collections import defaultdict

import pytest

from protocol import (
    AttachParallel,
    BacktestError,
    CloseSession,
    Completed,
    ContinueParams,
    ContinueSession,
    CreateSession,
    Error,
    ParallelAttached,
    ReadyForContinue,
    Resume,
    SessionCreated,
    SessionEvent,
    SessionsCreated,
    SlotNotification,
    Success,
    decode_response,
    encode_request,
)
from protocol.simulator import LocalSimulator
from tests.support.wire import control

pytestmark = pytest.mark.backtest_simulator(seed=21, slots=700, parallel_split=120)


def _events(ws, until: int, counts: dict[str, int]) -> list[SessionEvent]:  # type: ignore[no-untyped-def]
    """Read sessionEventV2 frames until ``until`` readies/completions in total."""
    out = []
    while sum(counts.values()) < until:
        _, msg = decode_response(ws.recv())
        assert isinstance(msg, SessionEvent), msg
        out.append(msg)
        if isinstance(msg.event, ReadyForContinue | Completed):
            counts[msg.session_id] += 1
    return out


def test_parallel_create_continue_and_reattach(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 499
    ws = control(sim)
    ws.send(encode_request(CreateSession(first, end, parallel=True)))
    created = [decode_response(ws.recv())[1] for _ in range(5)]
    assert all(isinstance(m, SessionCreated) for m in created)
    _, summary = decode_response(ws.recv())
    assert isinstance(summary, SessionsCreated)
    assert summary.session_ids == tuple(m.session_id for m in created)  # type: ignore[union-attr]
    assert summary.start_slots == (first, first + 120, first + 240, first + 360, first + 480)
    assert summary.end_slots == (first + 119, first + 239, first + 359, first + 479, end)
    ids = summary.session_ids
    answers: dict[str, int] = defaultdict(int)
    seen = _events(ws, len(ids), answers)
    for sid in ids:  # each sub-session: anchor then ready, numbered 1, 2 in its own sequence
        mine = [e for e in seen if e.session_id == sid]
        assert [e.seq_id for e in mine] == [1, 2]
        assert isinstance(mine[0].event, SlotNotification)
    for sid in ids:
        ws.send(encode_request(ContinueSession(sid, ContinueParams(3))))
    seen = _events(ws, 2 * len(ids), answers)
    last = {sid: max(e.seq_id or 0 for e in seen if e.session_id == sid) for sid in ids}
    # A sub-session unknown to the group is refused, never a crash; the others go on.
    ws.send(encode_request(ContinueSession("backtest_nope", ContinueParams(1))))
    _, refusal = decode_response(ws.recv())
    assert isinstance(refusal, Error) and "unknown sub-session" in str(refusal.error)
    ws.close()
    # Re-attach with a cursor for all but the last: only what came after is replayed.
    ws = control(sim)
    cursors = {sid: last[sid] - 2 for sid in ids[:-1]}
    ws.send(encode_request(AttachParallel(summary.control_session_id, cursors)))
    _, attached = decode_response(ws.recv())
    assert isinstance(attached, ParallelAttached) and attached.session_ids == ids
    ws.send(encode_request(Resume()))
    replay = []
    while True:
        _, msg = decode_response(ws.recv())
        if isinstance(msg, Success):
            break
        assert isinstance(msg, SessionEvent)
        replay.append(msg)
    for sid in ids[:-1]:
        assert [e.seq_id for e in replay if e.session_id == sid] == [
            last[sid] - 1, last[sid]]
    assert [e.seq_id for e in replay if e.session_id == ids[-1]] == list(
        range(1, last[ids[-1]] + 1))  # no cursor: its whole buffer
    ws.send(encode_request(CloseSession(ids[0])))
    _, closed = decode_response(ws.recv())
    assert closed == SessionEvent(ids[0], None, Success())
    ws.send(encode_request(ContinueSession(ids[0], ContinueParams(1))))
    _, refusal = decode_response(ws.recv())  # said to that sub-session, unsequenced
    assert refusal == SessionEvent(ids[0], None, Error(BacktestError(
        "sessionNotFound", {"session_id": ids[0]})))
    ws.close()
    for sid in ids[1:]:
        assert sim.session_stats(sid).blocks_executed == 3
