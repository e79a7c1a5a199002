"""SessionStats: a session's counters as one typed, frozen value.

``session.stats()`` and ``ask(GetStats())`` answer with it. It is also read
like the dict it replaced (``stats["reconnects"]``, ``stats.get(key)``,
``stats.as_dict()``), so code written against the dict keeps working; new code
reads attributes and gets them checked by a type checker.

Not to be confused with :class:`protocol.simulator.SessionStats`: that one is
the *server's* view of a session (what the local simulator received and ran).
"""

from __future__ import annotations

from typing import Any

import attrs

from .decisions.pacer import ContinueState


@attrs.frozen
class SessionStats:
    """Counters of one session, taken at one moment (``session.stats()``).

    Delivery: ``events_delivered`` (events handed to the application),
    ``held`` (waiting for it now), ``peak_held`` (most ever waiting; bounded by
    ``max_queue``).

    Duplicates, by what they are (none of them reaches the application):
    ``replays_dropped`` counts what came again after a reconnect (control
    responses replayed after the last ``seqId``, subscription items replayed
    from ``replayFromSlot``); ``address_repeats_dropped`` counts the second and
    later notifications of one transaction that mentions several subscribed
    addresses (the server notifies it once per matching subscription; the
    session delivers it once, its ``Transaction.matched`` names them all), so a
    clean run with no reconnect can show some. ``duplicates_dropped`` is their
    sum. ``stale_seq_dropped``: control frames whose ``seqId`` went backwards
    (logged: a reordering server or proxy).

    Connections: ``reconnects`` (name -> restarts made), ``paused`` (name ->
    its reader is paused because the application is behind),
    ``malformed_frames`` (frames that were not the protocol; logged, skipped).

    Continues: ``continues_written`` / ``continues_refused`` (yours: written;
    refused because one was outstanding or the session was over);
    ``chunks_written`` (pieces a large continue was split into),
    ``chunk_holds`` (times a chunk waited for a barrier), ``barriers_sent``;
    ``lost_continues``, ``continues_resent`` and ``double_advances`` (see
    ``ContinueLost``); ``gaps`` / ``gap_slots`` (``Gap`` events and the executed
    slots they cover); ``last_seq`` (the last control ``seqId`` seen) and
    ``continue_state`` (``idle``, ``pending``, ``handed`` or ``outstanding``).
    """

    events_delivered: int = 0
    held: int = 0
    peak_held: int = 0
    duplicates_dropped: int = 0
    replays_dropped: int = 0
    address_repeats_dropped: int = 0
    stale_seq_dropped: int = 0
    malformed_frames: int = 0
    reconnects: dict[str, int] = attrs.field(factory=dict)
    paused: dict[str, bool] = attrs.field(factory=dict)
    continues_written: int = 0
    continues_refused: int = 0
    chunks_written: int = 0
    chunk_holds: int = 0
    barriers_sent: int = 0
    gaps: int = 0
    gap_slots: int = 0
    lost_continues: int = 0
    continues_resent: int = 0
    double_advances: int = 0
    last_seq: int | None = None
    continue_state: ContinueState = "idle"

    @classmethod
    def from_counters(cls, counters: dict[str, Any]) -> SessionStats:
        """Built by the supervisor from its parts' counter dicts (unknown keys are a bug)."""
        return cls(**counters)

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (JSON-ready; the keys are the attribute names)."""
        return attrs.asdict(self)

    def __getitem__(self, key: str) -> Any:
        """``stats["reconnects"]``: the dict-style read ``stats()`` always offered."""
        if key not in attrs.fields_dict(SessionStats):
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in attrs.fields_dict(SessionStats)

    def get(self, key: str, default: Any = None) -> Any:
        """``stats.get(key, default)``, as on the dict ``stats()`` used to return."""
        return self[key] if key in self else default

    def keys(self) -> list[str]:
        """The counter names, as on the dict ``stats()`` used to return."""
        return list(attrs.fields_dict(SessionStats))
