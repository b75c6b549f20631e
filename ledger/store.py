"""The ledger's public face: :class:`Ledger`.

Every authorization and reversal is ONE database round trip: a call of a
PL/pgSQL function (``ledger_authorize`` / ``ledger_reverse`` alone, or
``ledger_authorize_batch`` for a group commit) as the only statement of an
implicit SERIALIZABLE transaction (the pool's sessions default to
SERIALIZABLE). Serialization failures (40001) and deadlocks (40P01) are
retried with full-jitter exponential backoff, at most ``retries_max`` times;
each retry calls ``on_retry(reason)`` first. Operations on the same card from
this process are queued behind a per-card lock (one per card while an operation
on it is in flight), so they do not fight each other inside the database.

Raises (every public coroutine): :class:`~ledger.errors.LedgerUnavailable`,
:class:`~ledger.errors.RetriesExhausted`, :class:`~ledger.errors.LedgerError`;
provisioning and admin calls also :class:`~ledger.errors.ProvisioningError`;
``authorize``/``reverse`` also :class:`~ledger.errors.InvalidOperation`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar
from zoneinfo import ZoneInfo

import asyncpg

from ledger import verify as _verify
from ledger.batch import AuthorizeBatcher
from ledger.errors import (
    InvalidOperation,
    LedgerError,
    LedgerUnavailable,
    OutcomeUnknown,
    ProvisioningError,
    RetriesExhausted,
)
from ledger.model import (
    ACCOUNT_TYPES,
    AccountSpec,
    CardLimits,
    CardRecord,
    CardSpec,
    CardStatus,
    IdempotencyKey,
    Operation,
    OpKind,
    OriginalRef,
    Outcome,
    Result,
    ReversalOp,
    TerminalRecord,
    TerminalSpec,
)
from ledger.pan import PanVault
from ledger.pool import ConnectionPool

T = TypeVar("T")

RETRY_SQLSTATES: dict[str, str] = {"40001": "serialization", "40P01": "deadlock"}
BACKOFF_BASE_S = 0.002
BACKOFF_MAX_S = 0.100
FOLD_BATCH_MAX = 10_000
FOLD_BATCHES_MAX = 1_000
# Provisioning transactions read and insert the same system-account and code
# index pages, so concurrent ones conflict far more than authorizations do;
# they are rare and not latency-bound, so they get a larger retry bound.
PROVISIONING_RETRIES_MAX = 50
EXPIRE_BATCH_MAX = 1_000
EXPIRE_BATCHES_MAX = 1_000
_KINDS_WITH_FEE = (OpKind.WITHDRAWAL, OpKind.BALANCE_INQUIRY, OpKind.DEPOSIT, OpKind.TRANSFER)
_ACCOUNT_KIND_BY_TYPE = {"10": "savings", "20": "checking", "30": "credit"}
_TERMINAL_KEY_COLUMNS = {"tpk": "tpk", "tmk": "tmk", "tak": "tak"}

_AUTHORIZE_SQL = (
    "SELECT * FROM ledger_authorize($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
    "$14, $15, $16, $17, $18, $19)"
)
_REVERSE_SQL = "SELECT * FROM ledger_reverse($1, $2, $3, $4, $5, $6, $7)"
# A reversal travels in the batch as an authorization-shaped row: kind
# REVERSAL_KIND (REVERSAL_ADVICE_KIND for a 0420), key, digest, the original's
# key, terminal and RRN in their usual columns, and the amount dispensed in the
# amount column; the other columns are NULL. Negative, so never an OpKind.
REVERSAL_KIND = -1
REVERSAL_ADVICE_KIND = -2
# Group commit (ledger.batch): the batch's operations in arrival order, in one
# statement and so one SERIALIZABLE transaction. ledger_authorize_batch (migration
# 0012, 0015, 0016) decides and posts runs of plain withdrawals and balance inquiries in
# one statement per run and calls ledger_authorize or ledger_reverse (a row of kind
# REVERSAL_KIND/REVERSAL_ADVICE_KIND) for every other operation, after its run's
# statement and in arrival order with what that statement deferred; it returns one
# row per operation with its position ``n``.
# The columns of a group commit and their SQL types, in the function's order.
_BATCH_TYPES: Final = ("smallint", "text", "bytea", "bigint", "text", "text", "text",
                       "bigint", "text", "bigint", "text", "text", "integer", "text", "text",
                       "text", "date", "timestamptz", "text")
# Each column but the digests travels as one text, its values joined by a unit
# separator, and is split back by string_to_array. asyncpg encodes an array
# element by element with several isinstance checks each. Measured (client CPU
# per statement, 8 operations, one session): 185-245 µs as 19 arrays, 57-70 µs as
# texts, plus 40-70 µs to build the texts; a bare SELECT 1 costs 41-48 µs.
# Markers (control characters, which no value may hold): NULL, and the empty
# string (string_to_array makes an empty text an empty array, not {''}).
_SEP: Final = "\x1f"
_NULL: Final = "\x1e"
_EMPTY: Final = "\x1d"


def _batch_param(number: int, sql_type: str) -> str:
    if sql_type == "bytea":
        return f"${number}::bytea[]"
    split = f"string_to_array(${number}::text, chr({ord(_SEP)}), chr({ord(_NULL)}))"
    if sql_type == "text":
        return f"array_replace({split}, chr({ord(_EMPTY)}), '')"
    return f"{split}::{sql_type}[]"


_AUTHORIZE_MANY_SQL: Final = (
    "SELECT * FROM ledger_authorize_batch("  # noqa: S608 - fixed text: column types only
    + ", ".join(_batch_param(i, t) for i, t in enumerate(_BATCH_TYPES, start=1))
    + ") ORDER BY n"
)


def one_call(args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """One row of a group commit as a call of its own: the statement and its arguments."""
    kind = args[0]
    if kind >= 0:
        return _AUTHORIZE_SQL, args
    key, digest, dispensed, orig_key, orig_terminal, orig_rrn = (
        args[1], args[2], args[7], args[13], args[14], args[15])
    return _REVERSE_SQL, (key, digest, orig_key, orig_terminal, orig_rrn, dispensed,
                          kind == REVERSAL_ADVICE_KIND)


def batch_columns(batch: Sequence[tuple[Any, ...]]) -> list[Any]:
    """A group commit's rows as the parameters _AUTHORIZE_MANY_SQL takes.

    Raises InvalidOperation for a text holding a control character (it could be
    taken for a separator); the batcher then runs the operations one by one.
    """
    params: list[Any] = []
    for sql_type, column in zip(_BATCH_TYPES, zip(*batch, strict=True), strict=True):
        if sql_type == "bytea":
            params.append(list(column))
            continue
        if sql_type == "text":
            present: Sequence[str] = (column if None not in column
                                      else [v for v in column if v is not None])
            if not "".join(present).isprintable():
                raise InvalidOperation("a text of the operation holds a control character")
            if present is not column or "" in column:
                column = tuple(_NULL if v is None else v or _EMPTY for v in column)
            text = _SEP.join(column)
        elif sql_type in ("date", "timestamptz"):
            text = _SEP.join([_NULL if v is None else v.isoformat() for v in column])
        else:
            text = _SEP.join([_NULL if v is None else str(v) for v in column])
        params.append(text)
    return params


# A card with its account types, by PAN index; the batch form takes an array of
# indexes and returns the cards found, in any order. Card lookups that miss the
# switch's cache at the same time share one statement, as authorizations share a
# commit. Measured (one session): 120-130 µs per lookup alone, 45-47 µs per card
# in statements of 8; the array form costs 270 µs for one card, so one goes alone.
_CARD_SQL = (
    "SELECT c.*, coalesce(array_agg(ca.account_type ORDER BY ca.account_type) "
    "FILTER (WHERE ca.account_type IS NOT NULL), '{}') AS types, "
    "max(ca.account_type) FILTER (WHERE ca.is_default) AS default_type "
    "FROM cards c LEFT JOIN card_accounts ca ON ca.card_id = c.id "
    "WHERE c.pan_index = $1 GROUP BY c.id"
)
_CARDS_SQL = _CARD_SQL.replace("c.pan_index = $1", "c.pan_index = ANY($1::bytea[])")
assert _CARDS_SQL != _CARD_SQL
# Card lookups that miss the cache share one statement, one in flight at a time:
# lookups arriving meanwhile wait for it and go together in the next. Measured with
# every card a miss (as in production), closed loop, 32 ATMs, two interleaved pairs:
# 0.30-0.31 database transactions per request against 0.39 with two statements in
# flight, 8-9% more authorizations/s, 6-12% less CPU per authorization in the switch
# and PostgreSQL; each statement costs a wake-up of a sleeping backend, the dearest
# thing on a shared two-core VM (BENCHMARKS.md, 2026-12-03 late morning). A second
# statement goes only when the one in flight has taken CARD_READ_STALL_S (a hung
# session, a stalled backend), so one stuck read does not hold every lookup behind
# it until the call timeout.
CARD_READ_LANES = 2
CARD_READ_BATCH_MAX = 64
CARD_READ_STALL_S = 0.05


# Errors meaning "the database is not there (any more)": the outcome of the
# call in flight is unknown.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.CannotConnectNowError,
)


class HasDigits(Protocol):
    """A PAN wrapper (e.g. ``messages.fields.Pan``) giving its clear digits."""

    @property
    def digits(self) -> str: ...


OnRetry = Callable[[str], None]
OnBatch = Callable[[int], None]
OnSetWise = Callable[[int], None]
OnCommit = Callable[[float], None]
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _pan_digits(pan: str | HasDigits) -> str:
    digits = pan if isinstance(pan, str) else pan.digits
    if not (digits.isdigit() and 12 <= len(digits) <= 19):
        raise ProvisioningError("PAN must be 12 to 19 digits")
    return digits


_HALF_YEAR = timedelta(days=182)


def infer_year(transmission_dt: str, now: datetime) -> int:
    """The year that puts MMDDhhmmss nearest to ``now`` (field 7 carries no year).

    Raises InvalidOperation when no year makes it a real date and time.
    """
    month, day = int(transmission_dt[0:2]), int(transmission_dt[2:4])
    hour, minute, second = (int(transmission_dt[i:i + 2]) for i in (4, 6, 8))
    # The common case: this year, within half a year of now. Then no other year
    # can be nearer (the same date a year off is at least 365 days away).
    try:
        moment = datetime(now.year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        pass
    else:
        if abs(moment - now) <= _HALF_YEAR:
            return now.year
    best: tuple[float, int] | None = None
    for year in (now.year - 1, now.year, now.year + 1):
        try:
            moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:
            continue
        distance = abs((moment - now).total_seconds())
        if best is None or distance < best[0]:
            best = (distance, year)
    if best is None:
        raise InvalidOperation("transmission date/time is not a real date")
    return best[1]


def key_text(key: IdempotencyKey, now: datetime) -> str:
    """The stored form of an idempotency key, completed with the inferred year."""
    year = infer_year(key.transmission_dt, now)
    return f"{key.acquirer_id}|{key.terminal_id}|{key.stan}|{year:04d}{key.transmission_dt}"


def _key_texts(op: Operation | ReversalOp, now: datetime) -> tuple[str, OriginalRef, str | None]:
    """The operation's key as stored, its original reference, and the original's key
    as stored (None when the original is named by terminal + RRN only)."""
    ref = op.original or OriginalRef(key=None)
    return key_text(op.key, now), ref, key_text(ref.key, now) if ref.key is not None else None


def operation_digest(op: Operation, original_key: str | None) -> bytes:
    """The caller's digest bound to every field the ledger acts on (PIN verdict excluded:
    a repeat must replay whatever the PIN check said the second time)."""
    text = (f"op1|{int(op.kind)}|{op.card_id}|{op.from_account_type}|{op.to_account_type}|"
            f"{op.amount}|{op.currency}|{op.fee}|{original_key or ''}|")
    return hashlib.sha256(text.encode("ascii") + op.request_digest).digest()


def reversal_digest(op: ReversalOp, original_key: str | None) -> bytes:
    ref = op.original
    text = (f"rev1|{original_key or ''}|{ref.terminal_id or ''}|{ref.rrn or ''}|"
            f"{op.amount_dispensed or 0}|")
    return hashlib.sha256(text.encode("ascii") + op.request_digest).digest()


def _check_operation(op: Operation) -> None:
    """Programmer errors are assertions; data the switch could not vet raises InvalidOperation."""
    assert isinstance(op.kind, OpKind), op.kind
    assert op.pin_check in ("ok", "wrong", "none"), op.pin_check
    assert op.pin_tries_max >= 1, "pin_tries_max must be at least 1"
    if op.amount < 0 or op.fee < 0:
        raise InvalidOperation("amounts are never negative")
    if op.fee and op.kind not in _KINDS_WITH_FEE:
        raise InvalidOperation(f"no fee on {op.kind.name}")
    if not (len(op.currency) == 3 and op.currency.isdigit()):
        raise InvalidOperation("currency must be 3 digits (ISO 4217 numeric)")
    # Unknown account types are not an error here: the function answers
    # NO_SUCH_ACCOUNT for them, naming the type.
    if op.kind is OpKind.COMPLETION and op.original is None:
        raise InvalidOperation("a completion names its original (the 0100)")


class _CardLock:
    """The lock of one card and how many operations hold or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def _result(row: asyncpg.Record) -> Result:
    side = row["o_account_side"]
    assert side in (None, "from", "to"), side
    return Result(
        outcome=Outcome(row["o_outcome"]),
        replayed=bool(row["o_replayed"]),
        approval_code=row["o_approval_code"],
        account_type=row["o_account_type"],
        currency=row["o_currency"],
        ledger_balance=row["o_ledger_balance"],
        available_balance=row["o_available_balance"],
        authorization_id=row["o_auth_id"],
        suspense_amount=row["o_suspense_amount"] or 0,
        account_side=side,
    )


def _stored_result(row: asyncpg.Record, *, replayed: bool) -> Result:
    """A stored authorization (or reversal) row as the answer it was."""
    return Result(
        outcome=Outcome(row["outcome"]), replayed=replayed, approval_code=row["approval_code"],
        account_type=row["account_type"],
        currency=row["currency"] if row["ledger_balance"] is not None else None,
        ledger_balance=row["ledger_balance"], available_balance=row["available_balance"],
        authorization_id=row["id"], suspense_amount=row["suspense_amount"],
        account_side=row["account_side"],
    )


@dataclass(frozen=True, slots=True)
class _Settings:
    batch_max: int
    batch_lanes: int
    batch_lane_open_min: int
    batch_lane_stall_s: float
    retries_max: int
    call_timeout_s: float
    acquire_timeout_s: float
    hold_ttl_s: float
    business_tz: ZoneInfo


class Ledger:
    """See the module docstring. Create with :meth:`open`; always :meth:`close`."""

    def __init__(self, pool: ConnectionPool, vault: PanVault, settings: _Settings,
                 on_retry: OnRetry | None, clock: Clock,
                 read_pool: ConnectionPool | None = None,
                 on_batch: OnBatch | None = None,
                 on_set_wise: OnSetWise | None = None,
                 on_commit: OnCommit | None = None) -> None:
        self._pool = pool
        self._on_set_wise = on_set_wise
        self._read_pool = read_pool
        self._vault = vault
        self._settings = settings
        self._on_retry = on_retry
        self._clock = clock
        # Only the cards with an operation in flight have an entry (see authorize).
        self._card_locks: dict[int, _CardLock] = {}
        self._batcher = AuthorizeBatcher(
            self._authorize_many, self._apply_one,
            batch_max=settings.batch_max, lanes=settings.batch_lanes, on_batch=on_batch,
            lane_open_min=settings.batch_lane_open_min,
            lane_stall_s=settings.batch_lane_stall_s, on_commit=on_commit)
        self._card_reads = AuthorizeBatcher(
            self._cards_many, self._card_one, batch_max=CARD_READ_BATCH_MAX,
            lanes=CARD_READ_LANES, lane_open_min=CARD_READ_BATCH_MAX,
            lane_stall_s=CARD_READ_STALL_S)
        self.retries_total = 0

    @classmethod
    async def open(cls, dsn: str, *, data_key: bytes, pool_size_max: int = 20,
                   retries_max: int = 10, on_retry: OnRetry | None = None,
                   on_batch: OnBatch | None = None,
                   on_set_wise: OnSetWise | None = None,
                   on_commit: OnCommit | None = None,
                   business_tz: str = "UTC", hold_ttl_s: float = 7 * 86400,
                   call_timeout_s: float = 10.0, acquire_timeout_s: float = 5.0,
                   clock: Clock | None = None, batch_max: int = 32,
                   batch_lanes: int | None = None,
                   batch_lane_open_min: int | None = None,
                   batch_lane_stall_s: float = 0.05) -> Ledger:
        """Connect a pool of at most ``pool_size_max`` sessions.

        ``on_retry(reason)`` is called before each retry, reason being
        ``"serialization"`` or ``"deadlock"``; ``on_batch(size)`` once per group
        commit statement, with the number of operations it carried; ``on_set_wise(n)``
        after each group commit of two or more, with how many of its operations were
        decided set-wise (runs of plain ones, migration 0012); ``on_commit(seconds)``
        after each group commit (or operation alone) that returned its rows, with its
        round trip from its statement's issue (a batch re-run one by one is not timed).
        ``business_tz`` (IANA name) decides the business day of daily limits.
        ``batch_lane_open_min`` (default ``batch_max``) operations waiting open a further
        group-commit lane, and so does a batch in flight for ``batch_lane_stall_s``.
        Raises LedgerUnavailable.
        """
        assert pool_size_max >= 1 and retries_max >= 0
        # Fewer lanes than sessions: operations arriving while every lane is busy
        # share the next commit (ledger.batch). Defaults: an eighth of the pool (2 of
        # 16) in batches of up to 32, the second lane opening only once a full batch
        # waits. Up to that backlog one statement is in flight and the others gather
        # behind it: at 32 ATMs on two shared cores, batches of 14 instead of 8,
        # PostgreSQL's CPU per authorization down about a fifth and throughput up
        # 13-28% in five of six pairs against opening at 4, a draw in the sixth
        # (BENCHMARKS.md, 2026-12-03 midday); beyond it, 64 operations are in flight
        # as before.
        lanes = batch_lanes if batch_lanes is not None else max(1, pool_size_max // 8)
        open_min = batch_lane_open_min if batch_lane_open_min is not None else batch_max
        settings = _Settings(batch_max=batch_max, batch_lanes=lanes,
                             batch_lane_open_min=open_min,
                             batch_lane_stall_s=batch_lane_stall_s, retries_max=retries_max,
                             call_timeout_s=call_timeout_s,
                             acquire_timeout_s=acquire_timeout_s, hold_ttl_s=hold_ttl_s,
                             business_tz=ZoneInfo(business_tz))
        vault = PanVault(data_key)
        pool = ConnectionPool(dsn, size_max=pool_size_max, command_timeout_s=call_timeout_s,
                              server_settings={
                                  "default_transaction_isolation": "serializable",
                                  "application_name": "atm-switch-ledger",
                                  "jit": "off",
                                  # The batch statement's parameters are arrays whose
                                  # values never change its plan: planning it afresh
                                  # for each call was 2-3% of PostgreSQL's CPU.
                                  "plan_cache_mode": "force_generic_plan",
                              })
        # Lookups (card, terminal, stored results) run on sessions of their own whose
        # default is READ COMMITTED READ ONLY: one round trip each, no predicate
        # locks that could make a hot-path transaction fail.
        read_pool = ConnectionPool(dsn, size_max=max(2, pool_size_max // 4),
                                   command_timeout_s=call_timeout_s,
                                   server_settings={
                                       "default_transaction_isolation": "read committed",
                                       "default_transaction_read_only": "on",
                                       "application_name": "atm-switch-ledger-read",
                                       "jit": "off",
                                       # Key lookups only; the array form of the
                                       # card lookup was re-planned for every call.
                                       "plan_cache_mode": "force_generic_plan",
                                   })
        try:
            await pool.open()
            await read_pool.open()
        except _UNAVAILABLE as exc:
            await pool.close()
            raise LedgerUnavailable("cannot connect to the ledger database") from exc
        except asyncpg.PostgresError as exc:
            await pool.close()
            raise LedgerUnavailable(f"cannot open the ledger database ({exc.sqlstate})") from exc
        return cls(pool, vault, settings, on_retry, clock or _utc_now, read_pool, on_batch,
                   on_set_wise, on_commit)

    async def close(self) -> None:
        await self._pool.close()
        if self._read_pool is not None:
            await self._read_pool.close()

    # -- the hot path -------------------------------------------------------

    async def authorize(self, op: Operation) -> Result:
        """Apply (or replay) one operation in one round trip; see ledger.model.Operation."""
        args = self.operation_args(op)
        # One lock per card, not one per stripe of cards: with 1,024 stripes and 128
        # operations in flight on random cards, one in nine (1 - (1023/1024)^127)
        # would wait a whole group commit for an unrelated card on its stripe.
        locks = self._card_locks
        card = op.card_id
        held = locks.get(card)
        if held is None:
            held = locks[card] = _CardLock()
        held.users += 1
        try:
            async with held.lock:
                row = await self._batcher.submit(args)
        finally:
            held.users -= 1
            if not held.users:
                del locks[card]
        return _result(row)

    async def reverse(self, op: ReversalOp) -> Result:
        """Reverse (fully or partly) or void the original, at most once; see ReversalOp."""
        row = await self._batcher.submit(self.operation_args(op))
        return _result(row)

    def operation_args(self, op: Operation | ReversalOp) -> tuple[Any, ...]:
        """The operation as one row of a group commit (see _AUTHORIZE_MANY_SQL).
        Raises InvalidOperation."""
        if isinstance(op, ReversalOp):
            if op.amount_dispensed is not None and op.amount_dispensed < 0:
                raise InvalidOperation("amount dispensed is never negative")
        else:
            _check_operation(op)
        now = self._clock()
        key, ref, orig_key = _key_texts(op, now)
        if isinstance(op, ReversalOp):
            dispensed = op.amount_dispensed or None   # 0: nothing dispensed, full reversal
            kind = REVERSAL_ADVICE_KIND if op.is_advice else REVERSAL_KIND
            return (kind, key, reversal_digest(op, orig_key), None, None, None, None, dispensed,
                    None, None, None, None, None, orig_key, ref.terminal_id, ref.rrn, None,
                    None, None)
        return (
            int(op.kind), key, operation_digest(op, orig_key), op.card_id, op.key.terminal_id,
            op.from_account_type, op.to_account_type, op.amount, op.currency, op.fee, op.rrn,
            op.pin_check, op.pin_tries_max, orig_key, ref.terminal_id, ref.rrn,
            self._business_date(now), now + timedelta(seconds=self._settings.hold_ttl_s),
            op.pin_key if op.pin_check == "wrong" else None,
        )

    async def find_result(self, key: IdempotencyKey) -> Result | None:
        """The stored answer for ``key`` (an authorization or a reversal), or None.

        Used after LedgerUnavailable to learn whether the call committed.
        """
        text = key_text(key, self._clock())
        row = await self._read(
            """SELECT outcome, approval_code, account_type, currency, ledger_balance,
                      available_balance, id, suspense_amount, account_side, kind
                 FROM authorizations WHERE key = $1
               UNION ALL
               SELECT outcome, NULL, account_type, currency, ledger_balance,
                      available_balance, original_auth_id, 0, NULL, -1
                 FROM reversals WHERE key = $1""", text)
        if row is None or row["kind"] == 0:
            return None
        return _stored_result(row, replayed=False)

    async def stored_answer(self, op: Operation) -> Result | None:
        """What :meth:`authorize` would replay for ``op`` without calling it: the
        stored answer under its key (``replayed``), DUPLICATE_MISMATCH when a
        different request holds the key, or None for a new key (or a tombstone).
        A read; nothing is written. For declines decided before the ledger: the
        duplicate check comes first."""
        now = self._clock()
        key, _, orig_key = _key_texts(op, now)
        row = await self._read(
            """SELECT outcome, approval_code, account_type, currency, ledger_balance,
                      available_balance, id, suspense_amount, account_side, kind, digest
                 FROM authorizations WHERE key = $1""", key)
        if row is None or row["kind"] == 0:
            return None
        if bytes(row["digest"] or b"") != operation_digest(op, orig_key):
            return Result(outcome=Outcome.DUPLICATE_MISMATCH, replayed=False,
                          approval_code=None, account_type=None, currency=None,
                          ledger_balance=None, available_balance=None, authorization_id=None)
        return _stored_result(row, replayed=True)

    # -- caches' sources ------------------------------------------------------

    async def card_by_pan(self, pan: str | HasDigits) -> CardRecord | None:
        """The card, read at READ COMMITTED; lookups made while others are in
        flight share one statement (one in flight, the others waiting for the next;
        a second only once the first has stalled for CARD_READ_STALL_S)."""
        row = await self._card_reads.submit((self._vault.index(_pan_digits(pan)),))
        if row is None:
            return None
        return CardRecord(
            card_id=row["id"], expiry=row["expiry"], status=CardStatus(row["status"]),
            pin_method=row["pin_method"], pvv=row["pvv"], pvki=row["pvki"],
            pin_offset=row["pin_offset"], pin_tries=row["pin_tries"],
            account_types=tuple(row["types"]), default_account_type=row["default_type"],
            limits=CardLimits(txn_amount_max=row["txn_amount_max"],
                              daily_amount_max=row["daily_amount_max"],
                              daily_count_max=row["daily_count_max"]),
        )

    async def terminal(self, terminal_id: str) -> TerminalRecord | None:
        row = await self._read("SELECT * FROM terminals WHERE terminal_id = $1", terminal_id)
        if row is None:
            return None
        return TerminalRecord(
            terminal_id=row["terminal_id"], acquirer_id=row["acquirer_id"],
            status=row["status"], tpk=row["tpk"], tmk=row["tmk"], tak=row["tak"],
            pin_block_format=row["pin_block_format"],
            sign_on_required=row["sign_on_required"], mac_required=row["mac_required"],
            profile=row["profile"], currency=row["currency"], location=row["location"],
        )

    async def pan_of(self, card_id: int) -> str | None:
        """The clear PAN of a card (for tools that must show it; never logged)."""
        row = await self._read("SELECT pan_sealed FROM cards WHERE id = $1", card_id)
        return None if row is None else self._vault.open(row["pan_sealed"], card_id)

    # -- provisioning and admin -----------------------------------------------

    async def upsert_terminal(self, spec: TerminalSpec) -> None:
        """Create or update a terminal and its cash account (loaded once, on creation)."""
        _check_currency(spec.currency)
        if spec.status not in ("active", "inactive", "blocked"):
            raise ProvisioningError(f"unknown terminal status {spec.status!r}")
        if spec.cash_opening < 0:
            raise ProvisioningError("cash_opening is never negative")

        async def work(conn: asyncpg.Connection) -> None:
            await _ensure_system_accounts(conn, spec.currency)
            cash_id = await conn.fetchval(
                """INSERT INTO accounts (code, kind, currency, hot)
                   VALUES ($1, 'atm_cash', $2, true) ON CONFLICT (code) DO NOTHING RETURNING id""",
                f"ATM:{spec.terminal_id}", spec.currency)
            if cash_id is not None and spec.cash_opening > 0:
                settlement = await _system_account(conn, "SETTLEMENT", spec.currency)
                await _journal(conn, "funding", spec.currency, [cash_id, settlement],
                               [spec.cash_opening, -spec.cash_opening], [True, True])
            if cash_id is None:
                cash_id, currency = await conn.fetchrow(
                    "SELECT id, currency FROM accounts WHERE code = $1", f"ATM:{spec.terminal_id}")
                if currency != spec.currency:
                    raise ProvisioningError("a terminal's currency cannot change")
            await conn.execute(
                """INSERT INTO terminals (terminal_id, acquirer_id, location, status, currency,
                       cash_account_id, tpk, tmk, tak, pin_block_format, sign_on_required,
                       mac_required, profile)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                   ON CONFLICT (terminal_id) DO UPDATE SET
                       acquirer_id = EXCLUDED.acquirer_id, location = EXCLUDED.location,
                       status = EXCLUDED.status, currency = EXCLUDED.currency,
                       tpk = coalesce(EXCLUDED.tpk, terminals.tpk),
                       tmk = coalesce(EXCLUDED.tmk, terminals.tmk),
                       tak = coalesce(EXCLUDED.tak, terminals.tak),
                       pin_block_format = EXCLUDED.pin_block_format,
                       sign_on_required = EXCLUDED.sign_on_required,
                       mac_required = EXCLUDED.mac_required, profile = EXCLUDED.profile,
                       updated_at = now()""",
                spec.terminal_id, spec.acquirer_id, spec.location, spec.status, spec.currency,
                cash_id, spec.tpk, spec.tmk, spec.tak, spec.pin_block_format,
                spec.sign_on_required, spec.mac_required, spec.profile)

        await self._transaction(work)

    async def upsert_card(self, spec: CardSpec) -> int:
        """Create or update a card and its accounts; return the card id.

        Idempotent: an account's opening balance is posted (a funding journal
        from settlement) only when the account is created.
        """
        pan = _pan_digits(spec.pan)
        _check_card_spec(spec)
        index = self._vault.index(pan)

        async def work(conn: asyncpg.Connection) -> int:
            card_id: int | None = await conn.fetchval(
                "SELECT id FROM cards WHERE pan_index = $1", index)
            fields = (spec.expiry, spec.status.value, spec.pin_method, spec.pvv, spec.pvki,
                      spec.pin_offset, spec.limits.txn_amount_max, spec.limits.daily_amount_max,
                      spec.limits.daily_count_max)
            if card_id is None:
                card_id = await conn.fetchval("SELECT nextval('cards_id_seq')")
                assert card_id is not None
                await conn.execute(
                    """INSERT INTO cards (id, pan_index, pan_sealed, expiry, status, pin_method,
                           pvv, pvki, pin_offset, txn_amount_max, daily_amount_max,
                           daily_count_max)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
                    card_id, index, self._vault.seal(pan, card_id), *fields)
            else:
                await conn.execute(
                    """UPDATE cards SET expiry = $2, status = $3, pin_method = $4, pvv = $5,
                           pvki = $6, pin_offset = $7, txn_amount_max = $8,
                           daily_amount_max = $9, daily_count_max = $10, updated_at = now()
                       WHERE id = $1""", card_id, *fields)
            default_type = next((a.account_type for a in spec.accounts if a.is_default),
                                spec.accounts[0].account_type)
            for account in spec.accounts:
                account_id = await _upsert_account(conn, account)
                await conn.execute(
                    """INSERT INTO card_accounts (card_id, account_type, account_id, is_default)
                       VALUES ($1, $2, $3, $4)
                       ON CONFLICT (card_id, account_type) DO UPDATE SET
                           account_id = EXCLUDED.account_id, is_default = EXCLUDED.is_default""",
                    card_id, account.account_type, account_id,
                    account.account_type == default_type)
            await conn.execute(
                "DELETE FROM card_accounts WHERE card_id = $1 AND NOT account_type = ANY($2)",
                card_id, [a.account_type for a in spec.accounts])
            return card_id

        return await self._transaction(work)

    async def set_card_status(self, pan: str | HasDigits, status: CardStatus | str) -> None:
        await self._update_card(pan, "UPDATE cards SET status = $2, updated_at = now() "
                                     "WHERE pan_index = $1", CardStatus(status).value)

    async def reset_pin_tries(self, pan: str | HasDigits) -> None:
        await self._update_card(pan, "UPDATE cards SET pin_tries = 0, updated_at = now() "
                                     "WHERE pan_index = $1")

    async def set_card_limits(self, pan: str | HasDigits, limits: CardLimits) -> None:
        for value in (limits.txn_amount_max, limits.daily_amount_max, limits.daily_count_max):
            if value is not None and value < 0:
                raise ProvisioningError("limits are never negative")
        await self._update_card(
            pan, """UPDATE cards SET txn_amount_max = $2, daily_amount_max = $3,
                        daily_count_max = $4, updated_at = now() WHERE pan_index = $1""",
            limits.txn_amount_max, limits.daily_amount_max, limits.daily_count_max)

    async def set_terminal_key(self, terminal_id: str, usage: str, wrapped_text: str) -> None:
        """Store a new working key (wrapped-key text) for ``usage`` tpk, tmk or tak."""
        column = _TERMINAL_KEY_COLUMNS.get(usage.lower())
        if column is None:
            raise ProvisioningError(f"unknown terminal key usage {usage!r}")

        async def work(conn: asyncpg.Connection) -> str:
            status: str = await conn.execute(
                f"UPDATE terminals SET {column} = $2, updated_at = now() "  # noqa: S608 (column from a fixed table)
                "WHERE terminal_id = $1", terminal_id, wrapped_text)
            return status

        if await self._transaction(work) != "UPDATE 1":
            raise ProvisioningError("unknown terminal")

    # -- jobs -------------------------------------------------------------------

    async def fold_hot_accounts(self) -> int:
        """Fold queued hot-account postings into their balances; return how many."""
        total = 0
        for _ in range(FOLD_BATCHES_MAX):
            folded = await self._job("SELECT ledger_fold_hot($1)", FOLD_BATCH_MAX)
            total += folded
            if folded < FOLD_BATCH_MAX:
                break
        return total

    async def expire_holds(self, now: datetime | None = None) -> int:
        """Release holds whose expiry is before ``now``; return how many."""
        moment = now or self._clock()
        total = 0
        for _ in range(EXPIRE_BATCHES_MAX):
            released = await self._job("SELECT ledger_expire_holds($1, $2)", moment,
                                       EXPIRE_BATCH_MAX)
            total += released
            if released < EXPIRE_BATCH_MAX:
                break
        return total

    async def verify(self) -> _verify.VerifyReport:
        """Check every ledger invariant in one read-only snapshot (see ledger.verify).

        Runs on a connection of its own, outside the pool: the pool's sessions
        bound each statement by ``call_timeout_s``, and the checks read every
        posting, which takes minutes on a ledger of millions of postings.
        """
        return await _verify.verify_dsn(self._pool.dsn)

    # -- internals --------------------------------------------------------------

    def _connection(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        return self._pool.connection(timeout_s=self._settings.acquire_timeout_s)

    def _business_date(self, now: datetime) -> date:
        return now.astimezone(self._settings.business_tz).date()

    def _backoff_s(self, attempt: int) -> float:
        ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)

    def _note_retry(self, sqlstate: str, attempt: int, retries_max: int | None = None) -> None:
        if attempt > (self._settings.retries_max if retries_max is None else retries_max):
            raise RetriesExhausted(attempt, sqlstate)
        self.retries_total += 1
        if self._on_retry is not None:
            self._on_retry(RETRY_SQLSTATES[sqlstate])

    async def _apply_one(self, args: tuple[Any, ...]) -> asyncpg.Record:
        """One batch row alone (a batch of one, or the one-by-one fallback)."""
        return await self._call(*one_call(args))

    async def _card_one(self, args: tuple[Any, ...]) -> asyncpg.Record | None:
        return await self._read(_CARD_SQL, *args)

    async def _cards_many(self, batch: Sequence[tuple[Any, ...]]) -> list[asyncpg.Record]:
        """One row per lookup, in order (None for an unknown PAN)."""
        indexes = [index for (index,) in batch]
        found = {bytes(row["pan_index"]): row for row in await self._read_many(_CARDS_SQL, indexes)}
        rows: list[Any] = [found.get(bytes(index)) for index in indexes]
        return rows

    async def _authorize_many(self, batch: Sequence[tuple[Any, ...]]) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._call(_AUTHORIZE_MANY_SQL, batch_columns(batch),
                                                      many=True)
        if self._on_set_wise is not None:
            self._on_set_wise(sum(1 for row in rows if row["o_set_wise"]))
        return rows

    async def _call(self, sql: str, args: Sequence[Any], *, many: bool = False) -> Any:
        """One statement (one row, or every row with ``many``), retried on
        serialization failure/deadlock."""
        attempt = 0
        while True:
            attempt += 1
            try:
                conn = await self._pool.acquire(timeout_s=self._settings.acquire_timeout_s)
            except asyncpg.PostgresError as exc:   # e.g. 57P03 while the server recovers
                raise LedgerUnavailable(f"cannot connect ({exc.sqlstate})") from exc
            except _UNAVAILABLE as exc:
                raise LedgerUnavailable("ledger database unreachable") from exc
            try:
                # The session's command_timeout bounds the call.
                if many:
                    rows = await conn.fetch(sql, *args)
                else:
                    row = await conn.fetchrow(sql, *args)
            except asyncpg.PostgresError as exc:
                self._pool.release(conn, broken=isinstance(exc, _UNAVAILABLE))
                if isinstance(exc, _UNAVAILABLE):
                    raise OutcomeUnknown("connection lost during a ledger call") from exc
                if exc.sqlstate not in RETRY_SQLSTATES:
                    raise _translate(exc) from exc
                self._note_retry(exc.sqlstate, attempt)
                await asyncio.sleep(self._backoff_s(attempt))
                continue
            except BaseException as exc:
                self._pool.release(conn, broken=True)
                if isinstance(exc, _UNAVAILABLE):
                    raise OutcomeUnknown("connection lost during a ledger call") from exc
                raise
            self._pool.release(conn)
            if many:
                return rows
            assert row is not None, "ledger functions always return a row"
            return row

    async def _transaction(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """A multi-statement SERIALIZABLE transaction (provisioning/admin), retried."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._connection() as conn, \
                        conn.transaction(isolation="serializable"):
                    return await work(conn)
            except asyncpg.PostgresError as exc:
                # A unique violation here is a concurrent provisioning of the same
                # object: the retry finds it and updates it.
                if exc.sqlstate not in RETRY_SQLSTATES and exc.sqlstate != "23505":
                    raise _translate(exc) from exc
                self._note_retry(exc.sqlstate if exc.sqlstate in RETRY_SQLSTATES else "40001",
                                 attempt, max(self._settings.retries_max,
                                              PROVISIONING_RETRIES_MAX))
                await asyncio.sleep(self._backoff_s(attempt))
            except _UNAVAILABLE as exc:
                raise LedgerUnavailable("ledger database unreachable") from exc

    async def _read(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """A lookup at READ COMMITTED: it takes no predicate locks, so it never
        makes a hot-path transaction fail."""
        rows = await self._read_many(sql, *args)
        return rows[0] if rows else None

    async def _read_many(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Every row of a lookup at READ COMMITTED (see _read)."""
        try:
            if self._read_pool is not None:
                async with self._read_pool.connection(
                        timeout_s=self._settings.acquire_timeout_s) as conn:
                    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                    return rows
            async with self._connection() as conn:
                async with conn.transaction(isolation="read_committed", readonly=True):
                    rows = await conn.fetch(sql, *args)
                    return rows
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from exc
        except _UNAVAILABLE as exc:
            raise LedgerUnavailable("ledger database unreachable") from exc

    async def _job(self, sql: str, *args: Any) -> int:
        try:
            async with self._connection() as conn:
                async with conn.transaction(isolation="read_committed"):
                    value = await conn.fetchval(sql, *args)
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from exc
        except _UNAVAILABLE as exc:
            raise LedgerUnavailable("ledger database unreachable") from exc
        return int(value)

    async def _update_card(self, pan: str | HasDigits, sql: str, *args: Any) -> None:
        index = self._vault.index(_pan_digits(pan))

        async def work(conn: asyncpg.Connection) -> str:
            status: str = await conn.execute(sql, index, *args)
            return status

        if await self._transaction(work) != "UPDATE 1":
            raise ProvisioningError("unknown card")


def _translate(exc: asyncpg.PostgresError) -> LedgerError:
    if isinstance(exc, _UNAVAILABLE):
        return LedgerUnavailable("ledger database unreachable")
    if exc.sqlstate in ("23514", "23502", "22003"):
        return ProvisioningError(f"rejected by a database constraint ({exc.sqlstate})")
    return LedgerError(f"ledger database error {exc.sqlstate}")


def _check_currency(currency: str) -> None:
    if not (len(currency) == 3 and currency.isdigit()):
        raise ProvisioningError("currency must be 3 digits (ISO 4217 numeric)")


def _check_card_spec(spec: CardSpec) -> None:
    if not (len(spec.expiry) == 4 and spec.expiry.isdigit() and 1 <= int(spec.expiry[2:]) <= 12):
        raise ProvisioningError("expiry must be YYMM")
    if not spec.accounts:
        raise ProvisioningError("a card needs at least one account")
    types = [a.account_type for a in spec.accounts]
    if len(set(types)) != len(types) or not set(types) <= ACCOUNT_TYPES:
        raise ProvisioningError("account types must be distinct and among 10, 20, 30")
    if sum(a.is_default for a in spec.accounts) > 1:
        raise ProvisioningError("at most one default account")
    for account in spec.accounts:
        _check_currency(account.currency)
        if account.opening_balance < 0 or account.overdraft_limit < 0:
            raise ProvisioningError("opening balance and overdraft limit are never negative")
    if spec.pin_method == "pvv" and not spec.pvv:
        raise ProvisioningError("a pvv card needs its PVV")
    if spec.pin_method == "ibm3624" and not spec.pin_offset:
        raise ProvisioningError("an ibm3624 card needs its offset")


async def _ensure_system_accounts(conn: asyncpg.Connection, currency: str) -> None:
    await conn.execute(
        """INSERT INTO accounts (code, kind, currency, hot)
           VALUES ('SETTLEMENT:' || $1, 'settlement', $1, true),
                  ('FEE:' || $1, 'fee_income', $1, true),
                  ('SUSPENSE:' || $1, 'suspense', $1, true)
           ON CONFLICT (code) DO NOTHING""", currency)


async def _system_account(conn: asyncpg.Connection, prefix: str, currency: str) -> int:
    account_id: int | None = await conn.fetchval(
        "SELECT id FROM accounts WHERE code = $1", f"{prefix}:{currency}")
    assert account_id is not None, "system accounts are created before use"
    return account_id


async def _journal(conn: asyncpg.Connection, kind: str, currency: str, accounts: list[int],
                   amounts: list[int], hot: list[bool]) -> None:
    assert sum(amounts) == 0, "journal must balance"   # and checked again in SQL
    await conn.execute(
        "SELECT ledger_journal(nextval('journals_id_seq'), $1, NULL, NULL, $2, $3, $4, $5)",
        kind, currency, accounts, amounts, hot)


async def _upsert_account(conn: asyncpg.Connection, spec: AccountSpec) -> int:
    code = f"CH:{spec.account_ref}"
    await _ensure_system_accounts(conn, spec.currency)
    account_id: int | None = await conn.fetchval(
        """INSERT INTO accounts (code, kind, currency, hot, overdraft_limit)
           VALUES ($1, $2, $3, false, $4) ON CONFLICT (code) DO NOTHING RETURNING id""",
        code, _ACCOUNT_KIND_BY_TYPE[spec.account_type], spec.currency, spec.overdraft_limit)
    if account_id is not None:
        if spec.opening_balance > 0:
            settlement = await _system_account(conn, "SETTLEMENT", spec.currency)
            await _journal(conn, "funding", spec.currency, [settlement, account_id],
                           [spec.opening_balance, -spec.opening_balance], [True, False])
        return account_id
    row = await conn.fetchrow("SELECT id, currency FROM accounts WHERE code = $1", code)
    assert row is not None
    if row["currency"] != spec.currency:
        raise ProvisioningError("an account's currency cannot change")
    await conn.execute("UPDATE accounts SET overdraft_limit = $2 WHERE id = $1",
                       row["id"], spec.overdraft_limit)
    return int(row["id"])
