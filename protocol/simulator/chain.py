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
import random
import struct
from collections.abc import Iterable

import attrs

FIRST_SLOT = 400_000_000
ADDRESS_COUNT = 6
SKIP_RATE = 0.1  # about one slot in ten has no produced block, as on mainnet
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


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
