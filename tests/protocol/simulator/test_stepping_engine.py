"""The simulator's precise stepping, without sockets: batches, discovery announcements,
``continueTo`` and ``paused``, injection at a pause, and ``expected()`` for such runs."""

from __future__ import annotations

from collections.abc import Iterator

from protocol import (
    BacktestError,
    Completed,
    ContinueParams,
    ContinueToParams,
    CreateSession,
    DiscoveryBatch,
    DiscoveryFilter,
    Paused,
    ReadyForContinue,
)
from protocol.simulator import Chain
from protocol.simulator.chain import FIRST_SLOT, user_transaction
from protocol.simulator.engine import Session, SlotStep, Step

START, END = FIRST_SLOT, FIRST_SLOT + 120


def _open(chain: Chain, programs: tuple[str, ...]) -> Session:
    session, error = Session.open(
        CreateSession(START, END, discoveries=[DiscoveryFilter(p) for p in programs]),
        "k", chain)
    assert session is not None, error
    return session


class _Run:
    """Collects what a session's steps would put on the wire."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.slots: list[int] = []
        self.signatures: list[str] = []
        self.discoveries: list[DiscoveryBatch] = []
        self.pauses: list[tuple[int, int | None]] = []
        self.last: object = None

    def take(self, steps: Iterator[Step]) -> object:
        for step in steps:
            if isinstance(step, SlotStep):
                for tx, _ in step.executed.entries[step.start:]:
                    if self.address in tx.mentions:
                        self.signatures.append(tx.signature)
                if step.complete:
                    self.slots.append(step.executed.slot)
            elif isinstance(step, DiscoveryBatch):
                self.discoveries.append(step)
            elif isinstance(step, Paused):
                self.pauses.append((step.slot, step.batch_index))
            self.last = step
        return self.last


def test_pausing_before_every_discovery_matches_expected_with_injection() -> None:
    chain = Chain(seed=3, slots=400)
    program = chain.programs[-1]
    address = chain.addresses[0]
    inject = [user_transaction([address], "probe")]
    session = _open(chain, (program,))
    run = _Run(address)
    last = run.take(session.startup())
    assert isinstance(last, ReadyForContinue)
    transactions: tuple[str, ...] = ()
    while True:
        nxt = next((d for d in run.discoveries
                    if not run.pauses or (d.slot, d.batch_index) > run.pauses[-1]), None)
        if nxt is None:
            assert session.check_continue() is None
            last = run.take(session.run_continue(ContinueParams(10_000, transactions)))
            break
        params = ContinueToParams(nxt.slot, nxt.batch_index, transactions)
        assert session.check_continue_to(params) is None
        last = run.take(session.run_continue_to(params))
        assert isinstance(last, Paused)
        transactions = tuple(inject)
    assert isinstance(last, Completed)
    expected = chain.expected(START, END, transactions=[address], discover=[program],
                              inject=inject)
    assert len(expected.discoveries) >= 5  # the test means something on this chain
    assert [(d.slot, d.batch_index) for d in run.discoveries] == expected.discoveries
    assert run.pauses == expected.discoveries
    assert [START, *run.slots] == expected.slots
    assert run.signatures == expected.signatures
    assert len(set(run.signatures)) == len(run.signatures)
    # Every pause injected once, and the probe mentions the subscribed address.
    assert len(expected.signatures) == len(
        chain.expected(START, END, transactions=[address]).signatures) + len(
        expected.discoveries)
    assert session.blocks_executed == len(expected.slots) - 1
    assert all(d.matched == (DiscoveryFilter(program),) for d in run.discoveries)


def test_continue_to_refusals_leave_the_session_where_it_was() -> None:
    chain = Chain(seed=3, slots=400)
    session = _open(chain, ())
    run = _Run(chain.addresses[0])
    run.take(session.startup())
    first = session.pending_slots[0]
    batches = len(chain.batches(first))
    cases = {
        ContinueToParams(START, 0): "not ahead",
        ContinueToParams(END + 1, 0): "past the session's end slot",
        ContinueToParams(first, batches): f"batch_index {batches} is out of range",
    }
    for params, words in cases.items():
        refusal = session.check_continue_to(params)
        assert isinstance(refusal, BacktestError) and words in refusal.fields["error"], refusal
    assert session.ready and session.pending_slots[0] == first
    # Pausing where the session stands is allowed (it pauses at once), then refused again.
    here = ContinueToParams(first, 0)
    assert session.check_continue_to(here) is None
    assert isinstance(run.take(session.run_continue_to(here)), Paused)
    assert "not ahead" in session.check_continue_to(here).fields["error"]  # type: ignore[union-attr]


def test_a_continue_from_a_pause_finishes_the_paused_block_first() -> None:
    chain = Chain(seed=5, slots=300)
    slot = next(s for s in chain.produced[1:] if len(chain.batches(s)) >= 2)
    session = _open(chain, ())
    run = _Run(chain.addresses[0])
    run.take(session.startup())
    run.take(session.run_continue_to(ContinueToParams(slot, 1)))
    assert run.pauses == [(slot, 1)] and slot not in run.slots
    assert session.blocks_executed == len(chain.produced_in(START + 1, slot - 1))
    run.take(session.run_continue(ContinueParams(1)))
    assert run.slots[-1] == slot
    assert session.blocks_executed == len(chain.produced_in(START + 1, slot))


def test_notification_indices_follow_execution_order_with_injections() -> None:
    """A client sorts a resume's replay by (slot, index): an injected transaction needs
    its place in the slot, or a replay would move it before the batches that ran
    before it (seen once in a killed-and-resumed --discover run)."""
    import json

    chain = Chain(seed=5, slots=300)
    slot = next(s for s in chain.produced[1:] if len(chain.batches(s)) >= 2)
    address = chain.addresses[0]
    session = _open(chain, ())
    run = _Run(address)
    run.take(session.startup())
    run.take(session.run_continue_to(ContinueToParams(slot, 1)))
    run.take(session.run_continue(ContinueParams(1, [user_transaction([address])])))
    executed = next(e for e in session.buffer if e.slot == slot)
    subs = {("transactions", a): [1] for a in chain.addresses}
    seen: dict[str, int] = {}
    for _, result, _ in executed.notifications(subs):
        body = json.loads(result)
        body = body.get("value", body)
        seen.setdefault(body["signature"], body["index"])
    indices = list(seen.values())  # one per transaction, in the order they were sent
    assert indices == list(range(len(executed.entries)))
    injected_at = next(i for i, (_, index) in enumerate(executed.entries) if index is None)
    assert injected_at == chain.batches(slot)[1].start  # right before batch 1


def test_a_continue_to_a_slot_without_a_block_is_judged_from_where_the_client_rests() -> None:
    """Resting right after the block before a skipped slot S, ``continueTo(S, 0)`` is
    ahead (nothing runs; it pauses at S), as the client's own check says; it was refused
    against the next block's slot, a position the client was never told (hostile review)."""
    chain = Chain(seed=3, slots=400)
    skipped = next(s for s in range(START + 2, END) if s not in chain.produced_set
                   and s - 1 in chain.produced_set)
    session = _open(chain, ())
    run = _Run(chain.addresses[0])
    run.take(session.startup())
    run.take(session.run_continue(ContinueParams(len(chain.produced_in(START + 1, skipped)))))
    assert session.last_executed == skipped - 1
    params = ContinueToParams(skipped, 0)
    assert session.check_continue_to(params) is None
    assert isinstance(run.take(session.run_continue_to(params)), Paused)
    assert run.pauses == [(skipped, 0)]
    assert "not ahead" in session.check_continue_to(params).fields["error"]  # type: ignore[union-attr]
    assert session.check_continue_to(ContinueToParams(skipped - 1, 0)) is not None
