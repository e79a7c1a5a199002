"""A deterministic synthetic chain: the same seed always yields the same stream.

Every slot is computed from ``(seed, slot)`` alone, so any range can be produced
or predicted without walking the chain from the start, and a test can compute
exactly what a complete session must deliver (:meth:`Chain.expected`).
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import json
import random
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

FIRST_SLOT = 400_000_000
ADDRESS_COUNT = 6
SKIP_RATE = 0.1  # about one slot in ten has no produced block, as on mainnet
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# Every transaction invokes one of these programs, the first most often: a discovery
# filter on the last one (about one transaction in ten) pauses at a few blocks in
# three, on the first at nearly every block.
PROGRAM_WEIGHTS = (0.6, 0.3, 0.1)
# A block runs as batches (entries) of 1 to MAX_BATCH transactions.
MAX_BATCH = 3
# The local simulator's own transaction encoding (a real server decodes Solana
# transactions): what user_transaction() writes, so that an injected transaction can
# name the accounts it mentions and so reach a subscription.
USER_TX_MAGIC = b"simtx1:"


_CHUNK_DIGITS = 10
_CHUNK = 58**_CHUNK_DIGITS


def b58(data: bytes) -> str:
    """Base58 (Bitcoin alphabet); big-int division in chunks of ten digits for speed."""
    n = int.from_bytes(data, "big")
    chunks: list[str] = []
    while n:
        n, rem = divmod(n, _CHUNK)
        digits = []
        for _ in range(_CHUNK_DIGITS):
            rem, d = divmod(rem, 58)
            digits.append(_B58[d])
        chunks.append("".join(reversed(digits)))
    text = "".join(reversed(chunks)).lstrip("1")
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + text


# Signatures are 88 base58 characters, like Solana's, made by mapping base64 output
# onto the base58 alphabet: C speed (a true base58 encoding costs ~100 us each).
_B64_TO_B58 = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    (_B58 + _B58[:6]).encode(),
)


def _digest(*parts: object, size: int = 32) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=size).digest()


@attrs.frozen
class AccountDiff:
    account: str
    pre: int
    post: int


@attrs.frozen
class Tx:
    signature: str
    mentions: tuple[str, ...]
    diffs: tuple[AccountDiff, ...]


@attrs.frozen
class Expected:
    """What a complete session over a range must deliver.

    ``discoveries``: the ``(slot, batch_index)`` of every batch a discovery filter
    matches, in order: where a run that pauses before each one stops.
    """

    slots: list[int]
    signatures: list[str]
    diff_keys: list[tuple[str, str]]  # (signature, account)
    discoveries: list[tuple[int, int]] = attrs.field(factory=list)
    # (place in CreateSession.actions, slot of the block it ran after), in the order run.
    actions: list[tuple[int, int]] = attrs.field(factory=list)


@attrs.frozen
class Batch:
    """One batch (entry) of a block: transactions ``start..stop`` of the block."""

    index: int
    start: int
    stop: int


def user_transaction(mentions: Sequence[str], note: str = "") -> str:
    """A transaction for the local simulator to inject (base64): it mentions
    ``mentions`` (so a transaction subscription on one of them sees it); ``note``
    makes two otherwise equal transactions differ."""
    body = json.dumps({"mentions": list(mentions), "note": note}).encode()
    return base64.b64encode(USER_TX_MAGIC + body).decode()


def user_transaction_mentions(transaction: str) -> tuple[str, ...]:
    """The accounts an injected transaction mentions: those of :func:`user_transaction`'s
    encoding, none for any other bytes (run, but seen by no subscription)."""
    try:
        raw = base64.b64decode(transaction, validate=True)
    except ValueError:
        return ()
    if not raw.startswith(USER_TX_MAGIC):
        return ()
    try:
        mentions = json.loads(raw[len(USER_TX_MAGIC):]).get("mentions", [])
    except (ValueError, AttributeError):
        return ()
    return tuple(m for m in mentions if isinstance(m, str))


def injected_signature(transaction: str, slot: int, batch_index: int) -> str:
    """The signature an injected transaction gets where it ran: the same bytes injected
    at two pauses are two executions, each seen once."""
    raw = _digest("injected", transaction, slot, batch_index, size=64) + b"in"
    return base64.b64encode(raw).translate(_B64_TO_B58).decode()


class Chain:
    """``slots`` slot numbers from ``first_slot``; about 10 % are skipped (no block)."""

    def __init__(self, seed: int = 0, slots: int = 2000, *, first_slot: int = FIRST_SLOT,
                 txs_per_slot: int = 4) -> None:
        if slots < 1:
            raise ValueError(f"slots: expected >= 1, got {slots}")
        self.seed = seed
        self.first_slot = first_slot
        self.last_slot = first_slot + slots - 1
        self.txs_per_slot = txs_per_slot
        self.addresses = tuple(b58(_digest(seed, "address", i)) for i in range(ADDRESS_COUNT))
        self.programs = tuple(b58(_digest(seed, "program", i))
                              for i in range(len(PROGRAM_WEIGHTS)))
        rng = random.Random(f"{seed}:skips")
        # The first slot always has a block so that a range starting there is valid.
        self.produced: list[int] = [
            s for s in range(first_slot, self.last_slot + 1)
            if s == first_slot or rng.random() >= SKIP_RATE
        ]
        self.produced_set = frozenset(self.produced)

    def available_range(self) -> tuple[int, int]:
        """``(first, last)`` slot of the chain."""
        return self.first_slot, self.last_slot

    def produced_in(self, start: int, end: int) -> list[int]:
        """Produced slots in ``start..=end``."""
        lo = bisect.bisect_left(self.produced, start)
        hi = bisect.bisect_right(self.produced, end)
        return self.produced[lo:hi]

    @functools.lru_cache(maxsize=128)  # noqa: B019 - one Chain per simulator, bounded
    def block(self, slot: int) -> tuple[Tx, ...]:
        """The transactions of ``slot``'s block (computed from the seed, cached)."""
        # Dense chains need millions of transactions, so the random material for a
        # whole block is drawn in a few C-level calls rather than per transaction.
        rng = random.Random(f"{self.seed}:{slot}")
        count = rng.randint(max(1, self.txs_per_slot // 2), self.txs_per_slot * 3 // 2 or 1)
        signatures = base64.b64encode(rng.randbytes(66 * count)).translate(_B64_TO_B58).decode()
        picks = rng.randbytes(3 * count)
        lamports = struct.unpack(f">{2 * count}I", rng.randbytes(8 * count))
        addresses, n_addr = self.addresses, len(self.addresses)
        txs = []
        for i in range(count):
            first = addresses[picks[3 * i] % n_addr]
            second = addresses[picks[3 * i + 1] % n_addr]
            mentions = (first,) if picks[3 * i + 2] & 1 or first == second else (first, second)
            diffs = tuple(
                AccountDiff(account, lamports[2 * i + k] + 5000, lamports[2 * i + k])
                for k, account in enumerate(mentions)
            )
            txs.append(Tx(signatures[88 * i:88 * i + 88], mentions, diffs))
        return tuple(txs)

    # Drawn from their own random streams, so the blocks (signatures, accounts) are
    # the same as before programs and batches existed.
    @functools.lru_cache(maxsize=256)  # noqa: B019 - one Chain per simulator, bounded
    def programs_of(self, slot: int) -> tuple[str, ...]:
        """The program each transaction of ``slot``'s block invokes."""
        rng = random.Random(f"{self.seed}:{slot}:programs")
        return tuple(rng.choices(self.programs, PROGRAM_WEIGHTS, k=len(self.block(slot))))

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one Chain per simulator, bounded
    def batches(self, slot: int) -> tuple[Batch, ...]:
        """The batches ``slot``'s block executes in, in order (none for a skipped slot)."""
        if slot not in self.produced_set:
            return ()
        rng = random.Random(f"{self.seed}:{slot}:batches")
        count, start = len(self.block(slot)), 0
        out: list[Batch] = []
        while start < count:
            stop = min(count, start + rng.randint(1, MAX_BATCH))
            out.append(Batch(len(out), start, stop))
            start = stop
        return tuple(out)

    def batch_matches(self, slot: int, batch: Batch, programs: Sequence[str]) -> list[str]:
        """The programs of ``programs`` that transactions of ``batch`` invoke, in the
        order given."""
        invoked = set(self.programs_of(slot)[batch.start:batch.stop])
        return [p for p in programs if p in invoked]

    def discoveries(self, start_slot: int, end_slot: int, programs: Sequence[str]
                    ) -> list[tuple[int, int]]:
        """``(slot, batch_index)`` of every batch in the executed slots of the range that
        invokes one of ``programs``."""
        return [(slot, batch.index) for slot in self.produced_in(start_slot + 1, end_slot)
                for batch in self.batches(slot) if self.batch_matches(slot, batch, programs)]

    def expected(self, start_slot: int, end_slot: int, *,
                 transactions: Iterable[str] = (), account_diffs: Iterable[str] = (),
                 discover: Sequence[str] = (), inject: Sequence[str] = (),
                 actions: Sequence[Any] = ()) -> Expected:
        """The anchor slot, then every produced slot in ``(start_slot, end_slot]``.

        Transactions and diffs come only from executed blocks (after the anchor),
        each once, in slot order, whatever number of addresses it matches.
        ``discover`` (program ids): the batches a run with those discovery filters
        pauses before (``Expected.discoveries``). ``inject``: transactions such a
        run injects at each pause; each runs right before the paused-at batch and
        is expected where it mentions a subscribed address (:func:`user_transaction`).
        ``actions`` (``ScheduledAction`` values): ``.actions``, where each one runs.
        """
        tx_filter, diff_filter = set(transactions), set(account_diffs)
        executed = self.produced_in(start_slot + 1, end_slot)
        discoveries = self.discoveries(start_slot, end_slot, discover) if discover else []
        pauses = {point for point in discoveries} if inject else set()
        signatures: list[str] = []
        diff_keys: list[tuple[str, str]] = []
        for slot in executed:
            txs = self.block(slot)
            for batch in self.batches(slot):
                if (slot, batch.index) in pauses:
                    signatures.extend(
                        injected_signature(tx, slot, batch.index) for tx in inject
                        if tx_filter.intersection(user_transaction_mentions(tx)))
                for tx in txs[batch.start:batch.stop]:
                    if tx_filter.intersection(tx.mentions):
                        signatures.append(tx.signature)
                    diff_keys.extend((tx.signature, d.account) for d in tx.diffs
                                     if d.account in diff_filter)
        ran: list[tuple[int, int]] = []
        for index, action in sorted(enumerate(actions), key=lambda p: (p[1].slot, p[0])):
            at = next((s for s in executed if s >= action.slot), executed[-1] if executed else None)
            if at is not None:
                ran.append((index, at))
        ran.sort(key=lambda p: (p[1], actions[p[0]].slot, p[0]))  # as the session runs them
        return Expected([start_slot, *executed], signatures, diff_keys, discoveries, ran)
