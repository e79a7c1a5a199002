"""SessionStats: typed counters; matched addresses named on each transaction, and
duplicates split into replays and address repeats."""

from __future__ import annotations

import re

import attrs
import pytest

from actors import (
    GetStats,
    SessionStats,
    Transaction,
)
from protocol.simulator import LocalSimulator
from tests.support import ROOT
from tests.support.harness import FAST, check_exact, drive, no_leaks, start


def _repeats(sim: LocalSimulator, start: int, end: int, addresses: tuple[str, ...]) -> int:
    return sum(max(0, len(set(tx.mentions) & set(addresses)) - 1)
               for slot in sim.chain.produced_in(start + 1, end)
               for tx in sim.chain.block(slot))


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_transactions_name_every_matched_address_and_duplicates_are_split(
        sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 120
    subscribed = sim.addresses[1:5]  # 4 of the 6 addresses
    expected = sim.expected(first, end, transactions=subscribed)
    with no_leaks(FAST.graceful_close + 1):
        # The reconnects are counted exactly: only the three drops may cause one, so the
        # keepalive is not the 250 ms of FAST, which a loaded machine can miss (a
        # dropped socket is seen at once whatever the deadline).
        session = start(sim, first, end, timing=attrs.evolve(
            FAST, keepalive_interval=0.5, keepalive_deadline=5.0))
        session.subscribe_transactions(subscribed)
        # Reconnects on the subscription: replays come again and must count as replays.
        slots = expected.slots
        for slot in (slots[20], slots[50], slots[80]):
            sim.faults.drop("transactions", at_slot=slot,
                            session_id=session.session_info.session_id)
        events = drive(session, advance=3)
        stats = session.stats()
        session.shutdown()
    check_exact(events, expected)
    mentions = {tx.signature: tx.mentions for slot in sim.chain.produced_in(first + 1, end)
                for tx in sim.chain.block(slot)}
    txs = [e for e in events if isinstance(e, Transaction)]
    for tx in txs:
        assert tx.matched == tuple(a for a in subscribed if a in mentions[tx.signature])
    repeats = _repeats(sim, first, end, subscribed)
    assert repeats == sum(len(tx.matched) - 1 for tx in txs) > 0
    assert isinstance(stats, SessionStats)
    assert stats.reconnects == {"control": 0, "transactions": 3}
    assert stats.address_repeats_dropped == repeats  # exact, whatever the replays
    assert stats.replays_dropped > 0
    assert stats.duplicates_dropped == stats.replays_dropped + stats.address_repeats_dropped
    # The dict reads that stats() always offered still work, key for key.
    assert stats["reconnects"] is stats.reconnects and stats.get("nope", 7) == 7
    assert set(stats.as_dict()) == set(stats.keys()) == {
        f.name for f in attrs.fields(SessionStats)}
    with pytest.raises(KeyError):
        stats["nope"]


@pytest.mark.backtest_simulator(seed=14, slots=400)
def test_a_clean_run_has_no_replays_only_address_repeats(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 60
    with start(sim, first, end) as session:
        session.subscribe_transactions(sim.addresses)
        drive(session, advance=10)
        stats = session.supervisor.ask(GetStats())
    assert isinstance(stats, SessionStats)
    assert stats.replays_dropped == 0
    assert stats.address_repeats_dropped == _repeats(sim, first, end, sim.addresses)


def test_every_documented_stats_key_is_a_field() -> None:
    """The Stats table of actors/supervision/FAULTS.md names exactly SessionStats' fields."""
    guide = (ROOT / "actors" / "supervision" / "FAULTS.md").read_text()
    section = guide[guide.index("## Stats"):]
    key_cells = re.findall(r"^\| (`.*?) \|", section, re.M)
    documented = {name for cell in key_cells for name in re.findall(r"`([a-z_]+)`", cell)}
    assert documented == {f.name for f in attrs.fields(SessionStats)}
