"""A deterministic synthetic chain: the same seed always yields the same stream.

Every slot is computed from ``(seed, slot)`` alone, so any range can be produced
or predicted without walking the chain from the start, and a test can compute
exactly what a complete session must deliver (:meth:`Chain.expected`).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import random
from collections.abc import Iterable

import attrs

FIRST_SLOT = 400_000_000
ADDRESS_COUNT = 6
SKIP_RATE = 0.1  # about one slot in ten has no produced block, as on mainnet
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


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
    """What a complete session over a range must deliver."""

    slots: list[int]
    signatures: list[str]
    diff_keys: list[tuple[str, str]]  # (signature, account)


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
        rng = random.Random(f"{seed}:skips")
        # The first slot always has a block so that a range starting there is valid.
        self.produced: list[int] = [
            s for s in range(first_slot, self.last_slot + 1)
            if s == first_slot or rng.random() >= SKIP_RATE
        ]

    def available_range(self) -> tuple[int, int]:
        return self.first_slot, self.last_slot

    def produced_in(self, start: int, end: int) -> list[int]:
        """Produced slots in ``start..=end``."""
        lo = bisect.bisect_left(self.produced, start)
        hi = bisect.bisect_right(self.produced, end)
        return self.produced[lo:hi]

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one Chain per simulator, bounded
    def block(self, slot: int) -> tuple[Tx, ...]:
        rng = random.Random(f"{self.seed}:{slot}")
        count = rng.randint(max(1, self.txs_per_slot // 2), self.txs_per_slot * 3 // 2 or 1)
        txs = []
        for i in range(count):
            signature = b58(_digest(self.seed, slot, i, size=64))
            mentions = tuple(rng.sample(self.addresses, rng.randint(1, 2)))
            diffs = tuple(
                AccountDiff(account, pre := rng.randint(1, 10**9), pre + rng.randint(-5000, 5000))
                for account in mentions
            )
            txs.append(Tx(signature, mentions, diffs))
        return tuple(txs)

    def expected(self, start_slot: int, end_slot: int, *,
                 transactions: Iterable[str] = (), account_diffs: Iterable[str] = ()
                 ) -> Expected:
        """The anchor slot, then every produced slot in ``(start_slot, end_slot]``.

        Transactions and diffs come only from executed blocks (after the anchor),
        each once, in slot order, whatever number of addresses it matches.
        """
        tx_filter, diff_filter = set(transactions), set(account_diffs)
        executed = self.produced_in(start_slot + 1, end_slot)
        signatures: list[str] = []
        diff_keys: list[tuple[str, str]] = []
        for slot in executed:
            for tx in self.block(slot):
                if tx_filter.intersection(tx.mentions):
                    signatures.append(tx.signature)
                diff_keys.extend((tx.signature, d.account) for d in tx.diffs
                                 if d.account in diff_filter)
        return Expected([start_slot, *executed], signatures, diff_keys)
