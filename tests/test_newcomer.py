"""What a newcomer stumbled on in the Python API (issue 14), against the local simulator."""

from __future__ import annotations

import inspect
import math
import pydoc
import re
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

import attrs
import pykka
import pytest

import actors
import protocol
import protocol.simulator
from actors import (
    Closed,
    Completed,
    ConnectionChanged,
    ContinueRefused,
    GetStats,
    ListenerAttached,
    ManagedBacktestSession,
    ManagedEvent,
    ManagedSessionError,
    ReadyForContinue,
    Reconnecting,
    SessionListener,
    SessionStats,
    Slot,
    SubscribeStream,
    Transaction,
    UnsubscribeStream,
)
from protocol import (
    ContinueParams,
    CreateSession,
    ReconnectPolicy,
    Timing,
)
from protocol.simulator import DEFAULT_API_KEY, LocalSimulator, ServerLimits, ServerLiveness
from protocol.simulator.chain import Chain
from protocol.simulator.faults import TARGETS
from tests.support.harness import FAST, QUICK_RETRY, check_exact, drive, no_leaks, start, wait_for

PACKAGES = (actors, protocol, protocol.simulator)


pytestmark = pytest.mark.backtest_simulator(seed=14, slots=400)


# --- documentation ---------------------------------------------------------------------


def _own_doc(obj: Any) -> str:
    return (vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__) or ""


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_public_name_has_a_docstring(package: ModuleType) -> None:
    """``import actors, protocol, protocol.simulator; help(name)`` shows a docstring for
    every name in ``__all__`` and for the public methods and properties of each class.
    Constants and type aliases cannot carry one: the package docstring describes them."""
    missing = []
    for name in package.__all__:
        obj = getattr(package, name)
        if inspect.isclass(obj):
            if not _own_doc(obj).strip():
                missing.append(name)
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                func = value.fget if isinstance(value, property) else getattr(
                    value, "__func__", value)
                if (callable(func) or isinstance(value, property)) and not (
                        getattr(func, "__doc__", None) or "").strip():
                    missing.append(f"{name}.{attr}")
            assert _own_doc(obj).strip().split("\n")[0] in pydoc.render_doc(obj), name
        elif inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                missing.append(name)
        elif not re.search(rf"``{name}``[^\n]*\S", package.__doc__ or ""):
            missing.append(name)
    assert missing == []


def _default_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        return f"{value:g}" if not isinstance(value, int) else str(value)
    if isinstance(value, str):
        return repr(value).replace("'", '"')
    if value == () or value == {}:
        return repr(value)
    raise AssertionError(f"no text for default {value!r}")


@pytest.mark.parametrize("cls", [Timing, ReconnectPolicy, CreateSession, ContinueParams,
                                 ServerLiveness, ServerLimits])
def test_every_knob_is_documented_with_its_default(cls: type) -> None:
    doc = _own_doc(cls)
    for field in attrs.fields(cls):
        if field.name in ("start_slot", "end_slot"):
            assert field.name in doc
            continue
        default = field.default.factory() if isinstance(
            field.default, attrs.Factory) else field.default  # type: ignore[call-arg]
        assert f"``{field.name}={_default_text(default)}``" in doc or (
            f"``{field.name}={_default_text(default)}``" in " ".join(doc.split())), (
            cls.__name__, field.name)


def test_start_documents_every_keyword_with_its_default() -> None:
    doc = " ".join((ManagedBacktestSession.start.__doc__ or "").split())
    for name, param in inspect.signature(ManagedBacktestSession.start).parameters.items():
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            assert f"``{name}={_default_text(param.default)}``" in doc, name
        elif name != "cls":
            assert f"``{name}``" in doc, name


def test_help_of_local_simulator_shows_faults_targets_and_every_argument() -> None:
    text = pydoc.render_doc(LocalSimulator)
    assert "faults" in text and "timing" in text and "policy" in text
    for target in TARGETS:
        assert f'"{target}"' in text
    doc = _own_doc(LocalSimulator)
    for name in inspect.signature(LocalSimulator.__init__).parameters:
        if name != "self":
            assert f"``{name}``" in doc, name


def test_the_python_help_command_shows_the_docstrings() -> None:
    """What the issue runs: ``python -c "import actors, protocol, protocol.simulator;
    help(...)"``, one name of each package."""
    code = ("import actors, protocol, protocol.simulator; help(actors.SessionStats); "
            "help(protocol.Timing); help(protocol.simulator.LocalSimulator)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, env={"PAGER": "cat", "TERM": "dumb"})
    assert result.returncode == 0, result.stderr
    for line in ("Counters of one session", "keepalive_deadline=45",
                 "A backtest server on ``host:port``"):
        assert line in result.stdout


# --- typed stats, matched addresses, duplicates by kind ----------------------------------


def _repeats(sim: LocalSimulator, start: int, end: int, addresses: tuple[str, ...]) -> int:
    return sum(max(0, len(set(tx.mentions) & set(addresses)) - 1)
               for slot in sim.chain.produced_in(start + 1, end)
               for tx in sim.chain.block(slot))


def test_transactions_name_every_matched_address_and_duplicates_are_split(
        sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 120
    subscribed = sim.addresses[1:5]  # 4 of the 6 addresses
    expected = sim.expected(first, end, transactions=subscribed)
    with no_leaks(FAST.graceful_close + 1):
        session = start(sim, first, end)
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


def test_every_readme_stats_key_is_a_field() -> None:
    from tests.docs.test_readme import README

    section = README[README.index("## Stats"):README.index("## How it behaves")]
    key_cells = re.findall(r"^\| (`.*?) \|", section, re.M)
    documented = {name for cell in key_cells for name in re.findall(r"`([a-z_]+)`", cell)}
    assert documented == {f.name for f in attrs.fields(SessionStats)}


# --- conveniences --------------------------------------------------------------------


def test_for_event_in_session_ends_with_completed(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 80
    events: list[ManagedEvent] = []
    with start(sim, first, end) as session:
        session.subscribe_transactions(sim.addresses[:2])
        for event in session:
            events.append(event)
            if isinstance(event, ReadyForContinue):
                session.send_continue(ContinueParams(advance_count=7))
    assert isinstance(events[-1], Completed)
    check_exact(events, sim.expected(first, end, transactions=sim.addresses[:2]))
    assert sum(isinstance(e, ReadyForContinue) for e in events) == math.ceil(
        (len(sim.expected(first, end).slots) - 1) / 7)


def test_run_drives_to_the_end_and_injects_what_on_event_returns(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 90
    tx = "AQ" + "A" * 86  # base64 of 65 bytes: a placeholder for a signed transaction
    events: list[ManagedEvent] = []

    def on_event(event: ManagedEvent) -> ContinueParams | None:
        events.append(event)
        readies = sum(isinstance(e, ReadyForContinue) for e in events)
        if isinstance(event, ReadyForContinue) and readies == 2:
            return ContinueParams(advance_count=4, transactions=[tx])
        return None

    with start(sim, first, end) as session:
        session.subscribe_transactions(sim.addresses[:3])
        done = session.run(advance=4, on_event=on_event, timeout=10)
        server = sim.session_stats(session.session_info.session_id)
    assert done is events[-1] and isinstance(done, Completed)
    assert done.summary is not None
    check_exact(events, sim.expected(first, end, transactions=sim.addresses[:3]))
    blocks = len(sim.expected(first, end).slots) - 1
    assert server.continues_received == math.ceil(blocks / 4)
    assert server.user_transactions == 1 and server.injected_transactions == (tx,)


def test_run_refuses_bad_arguments_before_anything_is_sent(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    with start(sim, first, first + 10) as session:
        with pytest.raises(ValueError, match="advance: expected an integer >= 1"):
            session.run(advance=0)
        with pytest.raises(TypeError, match="on_event: expected a callable"):
            session.run(on_event=5)  # type: ignore[arg-type]
        assert session.stats().continues_written == 0


def test_unsubscribe_delivers_what_ran_before_and_nothing_after(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 150
    addresses = sim.addresses[:3]
    blocks = sim.expected(first, end).slots
    with no_leaks(FAST.graceful_close + 1):
        session = start(sim, first, end)
        session.subscribe_transactions(addresses)
        session.subscribe_account_diffs(addresses)
        sid = session.session_info.session_id
        events: list[ManagedEvent] = []
        readies = 0
        unsubscribed_after = resubscribed_after = None
        while not isinstance(event := session.next_event(timeout=10), Completed):
            events.append(event)
            if not isinstance(event, ReadyForContinue):
                continue
            readies += 1
            if readies == 10:  # 9 continues of 5 blocks ran, maybe with items in flight
                session.unsubscribe("transactions", timeout=10)
                unsubscribed_after = max(e.slot for e in events if isinstance(e, Slot))
                wait_for(lambda: sim.session_stats(sid).subscribers == 1, 10,
                         "the server to see one subscriber left")
            if readies == 20:
                session.subscribe_transactions(addresses[:1])
                resubscribed_after = max(e.slot for e in events if isinstance(e, Slot))
            session.send_continue(ContinueParams(advance_count=5), timeout=10)
        events.append(event)
        stats = session.stats()
        session.shutdown()
    assert unsubscribed_after == blocks[9 * 5] and resubscribed_after == blocks[19 * 5]
    txs = [e for e in events if isinstance(e, Transaction)]
    before = sim.expected(first, unsubscribed_after, transactions=addresses).signatures
    after = sim.expected(resubscribed_after, end, transactions=addresses[:1]).signatures
    assert [t.signature for t in txs] == before + after
    closed_at = events.index(ConnectionChanged("transactions", Closed()))
    assert max(i for i, e in enumerate(events) if isinstance(e, Transaction)
               and e.slot <= unsubscribed_after) < closed_at
    # The diffs went on untouched, every one of them.
    check_exact([e for e in events if not isinstance(e, Transaction)],
                sim.expected(first, end, account_diffs=addresses))
    assert stats.reconnects == {"control": 0, "account_diffs": 0, "transactions": 0}


def test_unsubscribe_refuses_what_is_not_subscribed(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    with start(sim, first, first + 10) as session:
        with pytest.raises(ValueError, match="kind: transactions is not subscribed"):
            session.unsubscribe("transactions", timeout=5)
        with pytest.raises(ValueError, match="kind: expected one of"):
            session.unsubscribe("trades", timeout=5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"addresses\[0\]"):
            SubscribeStream.transactions(["ADDR"])
        assert SubscribeStream.account_diffs(list(sim.addresses[:2])).addresses == (
            sim.addresses[:2])
        with pytest.raises(ValueError, match="kind: expected one of"):
            UnsubscribeStream("trades")  # type: ignore[arg-type]


class Recorder(SessionListener):
    """Drives the session from the first event, with no ref handed over by hand."""

    def __init__(self, done: pykka.ThreadingFuture[list[Any]], advance: int) -> None:
        super().__init__()
        self.done, self.advance = done, advance
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        self.seen.append(message)  # every message, in the order it came
        return super().on_receive(message)

    def on_event(self, event: ManagedEvent) -> None:
        if isinstance(event, ReadyForContinue):
            self.send_continue(ContinueParams(advance_count=self.advance))
        elif isinstance(event, Completed):
            self.done.set(self.seen)


def test_a_session_listener_drives_from_the_first_event(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 100
    with no_leaks(FAST.graceful_close + 1):
        done: pykka.ThreadingFuture[list[Any]] = pykka.ThreadingFuture()
        listener = Recorder.start(done, 6)
        # Subscribed with the create: the listener may answer the first Ready at once,
        # and the first continue still waits for the subscription.
        session = ManagedBacktestSession.start(
            sim.url, DEFAULT_API_KEY, CreateSession(first, end), timing=FAST,
            policy=QUICK_RETRY, listener=listener, transactions=list(sim.addresses[:2]))
        try:
            seen = done.get(timeout=30)
        finally:
            session.shutdown()
            listener.stop()
    assert isinstance(seen[0], ListenerAttached)
    assert seen[0].supervisor == session.supervisor
    events = seen[1:]
    assert not any(isinstance(e, ListenerAttached | ContinueRefused) for e in events)
    check_exact(events, sim.expected(first, end, transactions=sim.addresses[:2]))


def test_start_subscribes_before_the_first_continue(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    end = first + 40
    with start(sim, first, end, transactions=iter(sim.addresses[:2]),
               account_diffs=sim.addresses[3:5]) as session:
        events = drive(session, advance=40)
        assert session.cursor().streams.keys() == {"transactions", "account_diffs"}
    check_exact(events, sim.expected(first, end, transactions=sim.addresses[:2],
                                     account_diffs=sim.addresses[3:5]))
    with pytest.raises(TypeError, match="transactions: expected a list of addresses"):
        start(sim, first, end, transactions=sim.addresses[0])
    with pytest.raises(ValueError, match=r"addresses\[0\]"):
        start(sim, first, end, account_diffs=["ADDR"])
    assert sim.upgrade_requests().get("control", 0) == 1  # the refused starts sent nothing


def test_local_simulator_timing_finds_a_silent_connection_in_about_a_second(
        sim: LocalSimulator) -> None:
    """The CLI's fast keepalive, from Python: ``timing=sim.timing``."""
    timing = sim.timing
    assert (timing.keepalive_interval, timing.keepalive_deadline) == (0.25, 1.0)
    first, _ = sim.available_range()
    session = ManagedBacktestSession.start(sim.url, DEFAULT_API_KEY,
                                           CreateSession(first, first + 300),
                                           timing=timing, policy=sim.policy)
    try:
        while not isinstance(session.next_event(timeout=10), ReadyForContinue):
            pass
        sim.faults.blackhole("control")
        silenced = time.monotonic()
        while not (isinstance(event := session.next_event(timeout=5), ConnectionChanged)
                   and isinstance(event.status, Reconnecting)):
            pass
        found = time.monotonic() - silenced
        assert found < timing.keepalive_deadline + timing.keepalive_interval + 0.5, found
    finally:
        session.shutdown()


def test_continue_lost_params_are_typed() -> None:
    field = attrs.fields_dict(actors.ContinueLost)["params"]
    assert field.type in (ContinueParams, "ContinueParams")


def test_injected_transactions_are_typed_in_the_signature() -> None:
    """``help(ContinueParams)`` said ``transactions: Any``: attrs shows the converter's
    parameter type, so the converter now says what a caller may pass."""
    parameters = inspect.signature(ContinueParams.__init__).parameters
    assert parameters["transactions"].annotation == "Iterable[str]"
    assert parameters["modify_account_states"].annotation == "dict[str, AccountData]"
    assert ContinueParams(transactions=iter(["AQID"])).transactions == ("AQID",)


def test_chain_addresses_are_what_the_simulator_lists() -> None:
    assert LocalSimulator(seed=3).addresses == Chain(3).addresses


def test_stats_are_refused_after_shutdown(sim: LocalSimulator) -> None:
    first, _ = sim.available_range()
    session = start(sim, first, first + 5)
    session.shutdown()
    with pytest.raises(ManagedSessionError, match="closed"):
        session.stats()


# --- the plain classes behind it ------------------------------------------------------


def test_outbox_tells_a_replay_from_an_address_repeat() -> None:
    from actors.decisions.outbox import Outbox
    from tests.actors.decisions.test_outbox import LOG, take, tx

    outbox = Outbox(window=64, log=LOG)
    outbox.add_stream("transactions", ("a", "b"))
    outbox.stream_items("transactions", [("a", tx(1, "s1")), ("b", tx(1, "s1"))], True)
    assert outbox.stats["address_repeats_dropped"] == 1 and outbox.stats["replays_dropped"] == 0
    # A resume replays slot 1 for both addresses: replays, however many addresses.
    outbox.stream_items("transactions", [("b", tx(1, "s1")), ("a", tx(1, "s1")),
                                         ("a", tx(2, "s2"))], True)
    assert take(outbox) == [tx(1, "s1"), tx(2, "s2")]
    assert outbox.stats["replays_dropped"] == 2
    assert outbox.stats["address_repeats_dropped"] == 1
    assert outbox.stats["duplicates_dropped"] == 3


def test_gate_unsubscribe_confirms_every_executed_block_then_closes() -> None:
    from tests.actors.decisions.test_pacer import run_chunk, up_gate

    gate = up_gate("transactions", "account_diffs", max_run_ahead=80)
    gate.submit(ContinueParams(advance_count=10), reply=None)
    run_chunk(gate, 1)
    assert gate.absorb(ReadyForContinue()) == ReadyForContinue()
    gate.unsubscribe("transactions")
    assert gate.streams_closed() == []  # 10 blocks not confirmed yet
    due = gate.barriers_due()
    assert [name for name, _ in due] == ["transactions"]  # at once, not at half the budget
    gate.submit(ContinueParams(advance_count=5), reply=None)
    assert gate.next_chunk() is None  # no block runs while it closes
    gate.barrier_reached("transactions", due[0][1])
    assert gate.streams_closed() == ["transactions"]
    assert gate.next_chunk() == ContinueParams(advance_count=5)  # then the session goes on
    assert not gate.closing("transactions")
