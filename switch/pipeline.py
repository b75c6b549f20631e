"""The authorization pipeline: one decoded request in, one response out.

Processing order (what networks expect): parse and mandatory fields →
terminal → card → MAC → PIN → ledger (duplicates, status, limits, funds, post,
commit, all in one database round trip) → respond. Every stage yields a
:class:`Decision`; field 39 is chosen by :func:`switch.decisions.response_code`.

The pipeline is I/O-free apart from the two injected services (the ledger and
the HSM interface), so the server owns all socket handling.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from hsm.errors import HsmError
from hsm.interface import Hsm
from hsm.keys import KeyAlgorithm, KeyUsage, WrappedKey
from hsm.results import PIN_FORMAT_RESULTS, HsmResult, counts_as_pin_try
from hsm.soft import PinVerification
from ledger.errors import (
    InvalidOperation,
    LedgerError,
    LedgerUnavailable,
    OutcomeUnknown,
    RetriesExhausted,
)
from ledger.model import (
    CardRecord,
    IdempotencyKey,
    Operation,
    OpKind,
    OriginalRef,
    Outcome,
    PackedCard,
    PinCheck,
    Result,
    ReversalOp,
    TerminalRecord,
)
from messages.codec import IsoMessage
from messages.errors import CardNumberError, FieldError
from messages.fields import AccountType, AdditionalAmount, AmountType, OriginalData, TxnType
from messages.mti import Mti
from messages.profiles import Profile
from messages.views import NetworkRequest, ReversalRequest, TransactionRequest, respond
from switch.cache import TtlCache
from switch.decisions import Decision, response_code
from switch.metrics import STAGES, Metrics, Observer

log = logging.getLogger("atm_switch.pipeline")

CARD_STATUS_DECISIONS: dict[str, Decision] = {
    "lost": Decision.CARD_LOST,
    "stolen": Decision.CARD_STOLEN,
    "blocked": Decision.CARD_RESTRICTED,
    "closed": Decision.CARD_RESTRICTED,
    "expired": Decision.CARD_EXPIRED,
}

OUTCOME_DECISIONS: dict[str, Decision] = {
    "APPROVED": Decision.APPROVED,
    "DUPLICATE_MISMATCH": Decision.DUPLICATE_MISMATCH,
    "CARD_BLOCKED": Decision.CARD_RESTRICTED,
    "CARD_LOST": Decision.CARD_LOST,
    "CARD_STOLEN": Decision.CARD_STOLEN,
    "CARD_EXPIRED": Decision.CARD_EXPIRED,
    "CARD_CLOSED": Decision.CARD_RESTRICTED,
    "PIN_TRIES_EXCEEDED": Decision.PIN_TRIES_EXCEEDED,
    "PIN_WRONG": Decision.PIN_WRONG,
    "ACCOUNT_NOT_USABLE": Decision.CARD_NOT_PERMITTED,
    "CURRENCY_MISMATCH": Decision.UNSUPPORTED_TRANSACTION,
    "EXCEEDS_TRANSACTION_LIMIT": Decision.EXCEEDS_AMOUNT_LIMIT,
    "EXCEEDS_DAILY_AMOUNT": Decision.EXCEEDS_AMOUNT_LIMIT,
    "EXCEEDS_DAILY_COUNT": Decision.EXCEEDS_FREQUENCY_LIMIT,
    "INSUFFICIENT_FUNDS": Decision.INSUFFICIENT_FUNDS,
    "ORIGINAL_NOT_FOUND": Decision.ORIGINAL_NOT_FOUND,
    "ALREADY_REVERSED": Decision.APPROVED,
    "ORIGINAL_DECLINED": Decision.APPROVED,
    "CARD_UNKNOWN": Decision.UNKNOWN_CARD,
    "TERMINAL_NOT_USABLE": Decision.TERMINAL_NOT_PERMITTED,
    "REVERSAL_EXCEEDS_ORIGINAL": Decision.REVERSAL_EXCEEDS_ORIGINAL,
    "LATE_ORIGINAL": Decision.LATE_ORIGINAL,
    # Only after the pipeline's one resubmission was stale too (the key changed twice).
    "KEY_STALE": Decision.SYSTEM_ERROR,
}

# The answers that carry balances (field 54): an approval, and 51 (how much there is).
# Never a PIN failure, a card-status or limit decline, or a 94: the ledger reads the
# account whatever it decides, and balances are for the cardholder who proved the PIN.
_SHOWS_BALANCES = frozenset({Decision.APPROVED, Decision.INSUFFICIENT_FUNDS})

# Terminal and card entries live between 75% and 100% of their time-to-live
# (switch.cache): cached together, they are read again spread over a quarter of it.
CACHE_TTL_SPREAD = 0.25

# Transaction types the host serves per message class, with the ledger operation.
_FINANCIAL_OPS: dict[str, OpKind] = {
    TxnType.WITHDRAWAL: OpKind.WITHDRAWAL,
    TxnType.DEPOSIT: OpKind.DEPOSIT,
    TxnType.TRANSFER: OpKind.TRANSFER,
    **{code: OpKind.BALANCE_INQUIRY for code in TxnType.BALANCE_INQUIRY},
}


def decision_for_outcome(result: Result) -> Decision:
    """Map a ledger result to a decision; account errors depend on the account type."""
    outcome = result.outcome
    if outcome == Outcome.NO_SUCH_ACCOUNT:
        if result.account_side == "to":
            return Decision.INVALID_TO_ACCOUNT
        if result.account_type == AccountType.CHECKING:
            return Decision.NO_CHECKING_ACCOUNT
        if result.account_type == AccountType.SAVINGS:
            return Decision.NO_SAVINGS_ACCOUNT
        return Decision.INVALID_FROM_ACCOUNT
    return OUTCOME_DECISIONS[outcome.name]


_yymm_cache: tuple[int, str] = (-1, "")


def _utc_yymm() -> str:
    """This month as YYMM (UTC), worked out once a minute."""
    global _yymm_cache
    minute = int(time.time()) // 60
    if _yymm_cache[0] != minute:
        _yymm_cache = (minute, time.strftime("%y%m", time.gmtime(minute * 60)))
    return _yymm_cache[1]


def _acquirer(text: str | None) -> str:
    # Field 32 travels as given (LLVAR) but field 90 zero-pads it to 11 digits:
    # keys use the form without leading zeros so both name the same acquirer.
    return (text or "").lstrip("0")


class _StageTimer:
    """`with self._stage(name):` observes the block's duration in its histogram."""

    __slots__ = ("_histogram", "_start")

    def __init__(self, histogram: Observer) -> None:
        self._histogram = histogram
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._histogram.observe(time.perf_counter() - self._start)


@dataclass
class Session:
    """Per-connection state: which terminals signed on over this connection."""

    peer: str
    profile: Profile | None = None
    signed_on: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    pin_tries_max: int = 3
    pin_format_error_counts: bool = True
    acknowledge_unmatched_reversals: bool = True
    issuer_bins: tuple[str, ...] = ()   # empty: every PAN is looked up
    sign_on_required: bool = False
    hsm_timeout_s: float = 1.0
    cache_ttl_s: float = 5.0
    card_cache_ttl_s: float = 60.0
    cache_entries_max: int = 200_000
    ledger_deadline_s: float = 5.0
    terminal_wrong_pins_max: int = 20
    terminal_wrong_pin_window_s: float = 300.0


@dataclass(slots=True)
class Outcome_:
    decision: Decision
    result: Result | None = None
    extra: dict[int, str] = field(default_factory=dict)
    mac_key: str | None = None  # wrapped TAK: the response is MACed under it


class LedgerService(Protocol):
    """What the pipeline asks of the ledger (:class:`ledger.store.Ledger` in the
    switch; the request-path benchmark answers from memory)."""

    async def terminal(self, terminal_id: str) -> TerminalRecord | None: ...

    async def card_by_pan(self, pan: str) -> CardRecord | None: ...

    async def authorize(self, op: Operation) -> Result: ...

    async def reverse(self, op: ReversalOp) -> Result: ...

    async def stored_answer(self, op: Operation) -> Result | None: ...

    async def set_terminal_key(self, terminal_id: str, usage: str,
                               wrapped_text: str) -> None: ...


class Pipeline:
    def __init__(self, ledger: LedgerService, hsm: Hsm, pvk: WrappedKey, metrics: Metrics,
                 settings: PipelineSettings) -> None:
        self._ledger = ledger
        self._hsm = hsm
        self._pvk = pvk
        self._metrics = metrics
        self._settings = settings
        self._terminals: TtlCache[str, TerminalRecord] = TtlCache(
            settings.cache_ttl_s, 100_000, spread=CACHE_TTL_SPREAD)
        self._cards: TtlCache[str, PackedCard] = TtlCache(
            settings.card_cache_ttl_s, settings.cache_entries_max, spread=CACHE_TTL_SPREAD)
        self._keys: TtlCache[str, WrappedKey] = TtlCache(3600.0, 100_000)
        # Label children resolved once: labels() costs a locked dict lookup per call.
        self._card_misses = metrics.cache_misses.labels(cache="card")
        self._terminal_misses = metrics.cache_misses.labels(cache="terminal")
        self._stage_histograms = {stage: metrics.latency.labels(stage=stage)
                                  for stage in STAGES}
        # Wrong PINs per terminal in a sliding window: a brute-force attempt across
        # many cards at one terminal is stopped even though no single card's try
        # counter reaches its limit. Keys are known terminals only (checked first).
        self._wrong_pins: dict[str, deque[float]] = {}

    # -- entry point ---------------------------------------------------------

    async def handle(self, msg: IsoMessage, session: Session,
                     raw: bytes = b"") -> IsoMessage | None:
        """Answer one request. Returns None for messages that get no answer
        (responses sent to us). Raises nothing for bad input."""
        try:
            mti = Mti.parse(msg.mti)
        except FieldError:
            self._metrics.decode_errors.labels(kind="mti").inc()
            return None
        if not mti.is_request and not mti.is_advice:
            self._metrics.decode_errors.labels(kind="unexpected_mti").inc()
            return None
        try:
            if mti.msg_class == 8:
                return await self._network(msg, session)
            if mti.msg_class in (1, 2):
                return await self._transaction(msg, mti, session, raw)
            if mti.msg_class == 4:
                return await self._reversal(msg, mti, session, raw)
        except OutcomeUnknown:
            return None  # a write whose outcome is unknown: no answer, the acquirer repeats
        except LedgerError:
            # A lookup (terminal, card) failed: nothing was written.
            self._metrics.ledger_errors.labels(kind="lookup").inc()
            return self._answer(msg, Outcome_(Decision.ISSUER_UNAVAILABLE),
                                advice=mti.is_advice)
        return self._answer(msg, Outcome_(Decision.UNSUPPORTED_TRANSACTION), advice=mti.is_advice)

    # -- helpers -------------------------------------------------------------

    def _stage(self, name: str) -> _StageTimer:
        return _StageTimer(self._stage_histograms[name])

    def _answer(self, msg: IsoMessage, out: Outcome_, *, advice: bool = False) -> IsoMessage:
        code = response_code(out.decision, advice=advice)
        result = out.result
        approval = None
        amounts: list[AdditionalAmount] = []
        if result is not None:
            if code == "00" and result.approval_code:
                approval = result.approval_code
            if out.decision in _SHOWS_BALANCES and result.ledger_balance is not None \
                    and result.available_balance is not None:
                acct = result.account_type or AccountType.DEFAULT
                currency = result.currency or msg.get(49) or ""
                amounts = [
                    AdditionalAmount(acct, AmountType.LEDGER, currency, result.ledger_balance),
                    AdditionalAmount(acct, AmountType.AVAILABLE, currency,
                                     result.available_balance),
                ]
        answer: IsoMessage = respond(msg, code.value, approval_code=approval,
                                     additional_amounts=amounts, extra=out.extra or None)
        return answer

    async def _terminal(self, terminal_id: str) -> TerminalRecord | None:
        record = self._terminals.get(terminal_id)
        if record is None:
            try:
                record = await self._ledger.terminal(terminal_id)
            finally:
                self._terminal_misses.inc()  # as the read ends, as a card miss is
            if record is not None:
                self._terminals.put(terminal_id, record)
        return record

    async def _card(self, pan: str) -> CardRecord | None:
        """The card, from the cache when it is active there. Only active cards are
        cached: a decline for status is always decided on a fresh read, and the
        ledger function rechecks an active card's status and counts its PIN tries
        itself, so a cached active card can be kept for longer."""
        cached = self._cards.get(pan)
        if cached is not None:
            return CardRecord.unpacked(cached)
        try:
            record = await self._ledger.card_by_pan(pan)
        finally:
            # Counted as the read ends, as the card stage's time is observed: a scrape
            # then never sees more misses than lookups.
            self._card_misses.inc()
        if record is not None and record.status == "active":
            self._cards.put(pan, record.packed())
        return record

    def _key(self, text: str) -> WrappedKey:
        key = self._keys.get(text)
        if key is None:
            key = WrappedKey.from_text(text)
            self._keys.put(text, key)
        return key

    def _deadline(self) -> float:
        # The HSM interface takes an absolute time.monotonic() deadline.
        return time.monotonic() + self._settings.hsm_timeout_s

    def invalidate_terminal(self, terminal_id: str) -> None:
        self._terminals.invalidate(terminal_id)

    async def _fresh_terminal(self, terminal_id: str) -> TerminalRecord | None:
        """The terminal as the database has it now (the cached copy is replaced)."""
        self._terminals.invalidate(terminal_id)
        with self._stage("terminal"):
            return await self._terminal(terminal_id)

    def _wrong_pin_window(self, terminal_id: str) -> deque[float]:
        window = self._wrong_pins.setdefault(terminal_id, deque())
        horizon = time.monotonic() - self._settings.terminal_wrong_pin_window_s
        while window and window[0] < horizon:
            window.popleft()
        return window

    def _note_wrong_pin(self, terminal_id: str) -> None:
        window = self._wrong_pin_window(terminal_id)
        if len(window) < self._settings.terminal_wrong_pins_max:
            window.append(time.monotonic())
            if len(window) == self._settings.terminal_wrong_pins_max:
                log.warning("terminal %s reached %d wrong PINs in %.0f s: PIN requests "
                            "refused until the window passes", terminal_id, len(window),
                            self._settings.terminal_wrong_pin_window_s)

    def _terminal_pin_locked(self, terminal_id: str) -> bool:
        if terminal_id not in self._wrong_pins:
            return False
        return len(self._wrong_pin_window(terminal_id)) >= self._settings.terminal_wrong_pins_max

    async def _signed(self, answer: IsoMessage, out: Outcome_,
                      session: Session | None) -> IsoMessage:
        """MAC the response (field 64) for a terminal that requires MACs."""
        if out.mac_key is None or out.decision == Decision.BAD_MAC:
            return answer
        profile = session.profile if session is not None and session.profile else None
        from switch.security import sign_message

        signed = await sign_message(self._hsm, answer, self._key(out.mac_key), profile,
                                    self._deadline())
        return signed if signed is not None else answer

    def _check_terminal(self, terminal: TerminalRecord | None, acquirer_id: str | None,
                        session: Session | None) -> Decision | None:
        if terminal is None:
            return Decision.UNKNOWN_TERMINAL
        if terminal.status != "active":
            return Decision.TERMINAL_NOT_PERMITTED
        if acquirer_id and terminal.acquirer_id and acquirer_id.lstrip("0") != \
                terminal.acquirer_id.lstrip("0"):
            return Decision.ACQUIRER_MISMATCH
        if session is not None and (terminal.sign_on_required or self._settings.sign_on_required) \
                and terminal.terminal_id not in session.signed_on:
            return Decision.NOT_SIGNED_ON
        return None

    @staticmethod
    def _check_card(card: CardRecord, expiry: str | None, now_yymm: str) -> Decision | None:
        decision = CARD_STATUS_DECISIONS.get(card.status)
        if decision is not None:
            return decision
        if card.status != "active":
            return Decision.CARD_RESTRICTED
        if card.expiry < now_yymm:
            return Decision.CARD_EXPIRED
        if expiry is not None and expiry != card.expiry:
            return Decision.CARD_EXPIRED
        return None

    async def _verify_mac(self, msg: IsoMessage, raw: bytes,
                          terminal: TerminalRecord) -> Decision | None:
        from switch.security import verify_message_mac

        with self._stage("mac"):
            ok = await verify_message_mac(self._hsm, msg, raw, terminal, self._key,
                                          self._deadline())
        if ok is None:
            return Decision.HSM_ERROR
        if not ok:
            self._metrics.mac_failures.inc()
            return Decision.BAD_MAC
        return None

    async def _verify_pin(self, req: TransactionRequest, card: CardRecord,
                          terminal: TerminalRecord) -> tuple[PinCheck, Decision | None]:
        """Returns the ledger's pin_check ("ok"/"wrong") or a decision that ends the request."""
        if req.pin_block is None:
            return "none", Decision.FORMAT_ERROR
        verification = PinVerification(
            pin_block_hex=req.pin_block.hex,
            pan=req.pan.digits,
            pin_block_format=terminal.pin_block_format,
            tpk=self._key(terminal.tpk) if terminal.tpk else self._pvk,
            method=card.pin_method,
            pvk=self._pvk,
            pvki=card.pvki,
            pvv=card.pvv,
            offset=card.pin_offset,
        )
        if not terminal.tpk:
            return "none", Decision.PIN_NOT_VERIFIABLE
        with self._stage("pin"):
            result = await self._hsm.verify_pin(verification, deadline_s=self._deadline())
        if result == HsmResult.OK:
            return "ok", None
        if result == HsmResult.VERIFICATION_FAILED or result in PIN_FORMAT_RESULTS:
            self._metrics.pin_failures.inc()
            if counts_as_pin_try(result,
                                 count_format_errors=self._settings.pin_format_error_counts):
                return "wrong", None
            return "none", Decision.PIN_WRONG
        self._metrics.hsm_errors.labels(result=result.name.lower()).inc()
        if result == HsmResult.DEADLINE_EXCEEDED:
            # The request waited too long for its turn (overload), nothing is wrong
            # with the HSM or the keys: answer like shed load, 91.
            return "none", Decision.SHED_LOAD
        return "none", Decision.HSM_ERROR

    async def _ledger_call(self, call: Callable[[], Awaitable[Result]]) -> Outcome_ | None:
        """Run a ledger operation; translate faults into decisions.

        Every ledger operation is idempotent by its key, so when the database is
        unreachable, or the connection broke with the commit outcome unknown, the
        call is simply made again (bounded by `ledger_deadline_s`): a committed
        operation then replays its stored answer, an uncommitted one applies.
        If the outcome is still unknown at the deadline, there is no answer (None):
        the ATM times out and reverses, which is right whether or not the operation
        committed, whereas a decline could leave the card charged for cash never
        dispensed. When nothing can have been sent, the answer is 91.
        """
        deadline = time.monotonic() + self._settings.ledger_deadline_s
        unknown = False
        attempt = 0
        with self._stage("ledger"):
            while True:
                attempt += 1
                try:
                    result = await call()
                    break
                except RetriesExhausted:
                    self._metrics.ledger_errors.labels(kind="retries_exhausted").inc()
                    if not unknown:
                        return Outcome_(Decision.ISSUER_UNAVAILABLE)
                except OutcomeUnknown:
                    self._metrics.ledger_errors.labels(kind="outcome_unknown").inc()
                    unknown = True
                except LedgerUnavailable:
                    self._metrics.ledger_errors.labels(kind="unavailable").inc()
                except InvalidOperation:
                    self._metrics.ledger_errors.labels(kind="invalid").inc()
                    return Outcome_(Decision.FORMAT_ERROR) if not unknown else None
                except LedgerError:
                    self._metrics.ledger_errors.labels(kind="error").inc()
                    log.exception("ledger call failed")
                    return Outcome_(Decision.SYSTEM_ERROR) if not unknown else None
                pause = min(0.05 * 2 ** attempt, 1.0)
                if time.monotonic() + pause >= deadline:
                    if unknown:
                        self._metrics.ledger_errors.labels(kind="unanswered").inc()
                        log.warning("ledger outcome unknown at the deadline: not answering, "
                                    "so the acquirer reverses")
                        return None
                    return Outcome_(Decision.ISSUER_UNAVAILABLE)
                await asyncio.sleep(pause)
        if result.replayed:
            self._metrics.replays.inc()
        return Outcome_(decision_for_outcome(result), result)

    # -- 01xx / 02xx ---------------------------------------------------------

    async def _transaction(self, msg: IsoMessage, mti: Mti, session: Session,
                           raw: bytes) -> IsoMessage | None:
        advice = mti.is_advice
        try:
            with self._stage("decode"):
                req = TransactionRequest.from_iso(msg)
        except FieldError as exc:
            # 14 for a card number that is there but invalid; 30 for anything else
            # (no PAN at all, a malformed track 2, 2 and 35 disagreeing).
            decision = (Decision.INVALID_CARD_NUMBER if isinstance(exc, CardNumberError)
                        else Decision.FORMAT_ERROR)
            return self._answer(msg, Outcome_(decision), advice=advice)
        kind = self._op_kind(mti, req.processing.txn_type)
        if kind is None:
            out: Outcome_ | None = Outcome_(Decision.UNSUPPORTED_TRANSACTION)
        elif kind != OpKind.BALANCE_INQUIRY and req.amount <= 0:
            out = Outcome_(Decision.INVALID_AMOUNT)
        else:
            out = await self._authorize(msg, raw, mti, req, kind, session)
        if out is None:
            return None  # outcome unknown: silence makes the acquirer reverse
        if kind == OpKind.TRANSFER and out.decision in (Decision.NO_CHECKING_ACCOUNT,
                                                        Decision.NO_SAVINGS_ACCOUNT):
            out.decision = Decision.INVALID_FROM_ACCOUNT  # transfers use 76-78, not 52/53
        if 2 not in msg:
            out.extra[2] = req.pan.digits  # the PAN came in track 2: field 2 is echoed all the same
        return await self._signed(self._answer(msg, out, advice=advice), out, session)

    @staticmethod
    def _op_kind(mti: Mti, txn_type: str) -> OpKind | None:
        if mti.msg_class == 1:
            if mti.is_advice:
                return None
            if txn_type in TxnType.BALANCE_INQUIRY:
                return OpKind.BALANCE_INQUIRY  # some networks ask balances with a 0100
            return OpKind.HOLD if txn_type == TxnType.WITHDRAWAL else None
        if mti.is_advice:
            return OpKind.COMPLETION if txn_type == TxnType.WITHDRAWAL else None
        return _FINANCIAL_OPS.get(txn_type)

    async def _authorize(self, msg: IsoMessage, raw: bytes, mti: Mti, req: TransactionRequest,
                         kind: OpKind, session: Session) -> Outcome_ | None:
        """The networks' order: the card (15/14, then its status and expiry), the
        terminal and acquirer (03, then 58), the MAC (63), the PIN, then the ledger
        (limits, funds, post). The terminal is read first all the same: its MAC key
        is needed, and it is almost always cached."""
        with self._stage("terminal"):
            terminal = await self._terminal(req.terminal_id)
        card: CardRecord | None = None
        if self._settings.issuer_bins and not req.pan.digits.startswith(
                self._settings.issuer_bins):
            decision: Decision | None = Decision.NO_SUCH_ISSUER  # not our card: no lookup
        else:
            with self._stage("card"):
                card = await self._card(req.pan.digits)
            decision = Decision.UNKNOWN_CARD if card is None else None
        if card is not None and kind != OpKind.COMPLETION and not mti.is_repeat:
            decision = self._check_card(card, req.expiry, _utc_yymm())
        if decision is None:
            decision = self._check_terminal(terminal, req.acquirer_id, session)
        if terminal is None:
            return Outcome_(decision or Decision.UNKNOWN_TERMINAL)
        if terminal.mac_required:
            mac_decision = await self._verify_mac(msg, raw, terminal)
            if mac_decision is not None:
                # A decline decided before the MAC stands; it goes unsigned (and no
                # stored answer is replayed to a request whose MAC did not verify).
                return Outcome_(decision or mac_decision)
        out = await self._authorize_verified(mti, req, kind, session, terminal, card, decision)
        if out is not None and terminal.mac_required:
            out.mac_key = terminal.tak  # every answer after a verified MAC is MACed
        return out

    async def _authorize_verified(self, mti: Mti, req: TransactionRequest, kind: OpKind,
                                  session: Session, terminal: TerminalRecord,
                                  card: CardRecord | None,
                                  decision: Decision | None) -> Outcome_ | None:
        """_authorize once the terminal is known and its MAC (if any) verified;
        ``decision`` is a decline already decided (the card's or the terminal's)."""
        if card is None or decision == Decision.ACQUIRER_MISMATCH:
            assert decision is not None
            return Outcome_(decision)
        key = self._idempotency_key(req)
        original = None
        if kind == OpKind.COMPLETION:
            original = self._original_ref(getattr(req, "original", None), req)
        if decision is not None:
            return await self._replayed_or(decision, self._operation(
                kind, key, card, req, original, "none", None))
        # A wrong PIN names the TPK it was verified under; if another worker has
        # changed the terminal's key since this one cached it, the ledger answers
        # KEY_STALE without counting the try: verify under the current key and
        # submit once more (a second KEY_STALE, a key changed twice, is a 96).
        for stale_retry in (False, True):
            pin_check: PinCheck = "none"
            if kind != OpKind.COMPLETION:
                if self._terminal_pin_locked(terminal.terminal_id):
                    self._metrics.load_shed.labels(reason="terminal_wrong_pins").inc()
                    return Outcome_(Decision.TERMINAL_PIN_LIMIT)
                pin_check, decision = await self._verify_pin(req, card, terminal)
                if decision is not None:
                    if decision == Decision.PIN_WRONG:
                        self._note_wrong_pin(terminal.terminal_id)
                    return Outcome_(decision)
            op = self._operation(kind, key, card, req, original, pin_check, terminal.tpk)
            answered = await self._ledger_call(partial(self._ledger.authorize, op))
            if answered is None:
                return None
            out = answered
            if stale_retry or out.result is None or out.result.outcome != Outcome.KEY_STALE:
                break
            self._metrics.pin_key_stale.inc()
            fresh = await self._fresh_terminal(terminal.terminal_id)
            decision = self._check_terminal(fresh, req.acquirer_id, session)
            if decision is not None:
                return Outcome_(decision)
            assert fresh is not None
            terminal = fresh
        if out.decision in (Decision.PIN_WRONG, Decision.PIN_TRIES_EXCEEDED) \
                and pin_check == "wrong":
            self._note_wrong_pin(terminal.terminal_id)
        return out

    def _operation(self, kind: OpKind, key: IdempotencyKey, card: CardRecord,
                   req: TransactionRequest, original: OriginalRef | None,
                   pin_check: PinCheck, pin_key: str | None) -> Operation:
        return Operation(
            kind=kind,
            key=key,
            card_id=card.card_id,
            request_digest=self._digest(card.card_id, req),
            from_account_type=req.processing.from_account,
            to_account_type=req.processing.to_account,
            amount=req.amount,
            currency=req.currency,
            rrn=req.rrn,
            pin_check=pin_check,
            pin_tries_max=self._settings.pin_tries_max,
            original=original,
            pin_key=pin_key,
        )

    async def _replayed_or(self, decision: Decision, op: Operation) -> Outcome_:
        """A decline decided before the ledger (the card's or the terminal's state)
        for a request whose key the ledger has already answered: the duplicate check
        comes first, so that answer is replayed (94 for a different request under
        the key). Say the approval's response was lost and the ATM sends the request
        again after the card was reported lost: it must get the 00 it was given, not
        41, or it would never reverse a debit for cash it did not dispense. Costs a
        read on such declines only."""
        try:
            stored = await self._ledger.stored_answer(op)
        except LedgerError:
            stored = None  # the decline stands: it is right for a new request
        if stored is None:
            return Outcome_(decision)
        if stored.replayed:
            self._metrics.replays.inc()
        return Outcome_(decision_for_outcome(stored), stored)

    @staticmethod
    def _idempotency_key(req: TransactionRequest | ReversalRequest) -> IdempotencyKey:
        return IdempotencyKey(
            acquirer_id=_acquirer(req.acquirer_id),
            terminal_id=req.terminal_id,
            stan=req.stan,
            transmission_dt=req.transmission_dt,
        )

    @staticmethod
    def _digest(card_id: int, req: TransactionRequest | ReversalRequest) -> bytes:
        # The digest binds the key to what was asked; the card id stands in for the PAN
        # so that no PAN-derived value is stored unkeyed.
        text = f"{card_id}|{req.processing.to_iso()}|{req.amount}|{req.currency}"
        return hashlib.sha256(text.encode()).digest()

    def _original_ref(self, original: OriginalData | None,
                      req: TransactionRequest | ReversalRequest) -> OriginalRef:
        """Field 90 names the original; zero-filled or absent, terminal + RRN do."""
        key = None
        if original is not None and not original.is_zero_filled:
            try:
                key = IdempotencyKey(
                    acquirer_id=_acquirer(original.acquirer_id) or _acquirer(req.acquirer_id),
                    terminal_id=req.terminal_id,
                    stan=original.stan,
                    transmission_dt=original.transmission_dt,
                )
            except AssertionError:
                key = None
        return OriginalRef(key=key, terminal_id=req.terminal_id, rrn=req.rrn)

    # -- 04xx ----------------------------------------------------------------

    async def _reversal(self, msg: IsoMessage, mti: Mti, session: Session,
                        raw: bytes) -> IsoMessage | None:
        advice = mti.is_advice
        try:
            with self._stage("decode"):
                req = ReversalRequest.from_iso(msg)
        except FieldError:
            return self._answer(msg, Outcome_(Decision.FORMAT_ERROR), advice=advice)
        with self._stage("terminal"):
            terminal = await self._terminal(req.terminal_id)
        decision = self._check_terminal(terminal, req.acquirer_id, None)
        if decision is not None:
            return self._answer(msg, Outcome_(decision), advice=advice)
        assert terminal is not None
        if terminal.mac_required:
            decision = await self._verify_mac(msg, raw, terminal)
            if decision is not None:
                return self._answer(msg, Outcome_(decision), advice=advice)
        dispensed = None
        if req.replacement is not None and req.replacement.actual_amount > 0:
            dispensed = req.replacement.actual_amount
        if dispensed is not None and dispensed > req.amount:
            out: Outcome_ | None = Outcome_(Decision.REVERSAL_EXCEEDS_ORIGINAL)
        else:
            op = ReversalOp(
                key=self._idempotency_key(req),
                original=self._original_ref(req.original, req),
                amount_dispensed=dispensed,
                is_advice=advice,
                request_digest=self._digest(0, req),
            )
            out = await self._ledger_call(partial(self._ledger.reverse, op))
            if out is not None and out.decision == Decision.ORIGINAL_NOT_FOUND \
                    and self._settings.acknowledge_unmatched_reversals:
                out.decision = Decision.APPROVED  # acknowledged; the tombstone is kept
        if out is None:
            return None
        if terminal.mac_required:
            out.mac_key = terminal.tak
        return await self._signed(self._answer(msg, out, advice=advice), out, session)

    # -- 08xx ----------------------------------------------------------------

    async def _network(self, msg: IsoMessage, session: Session) -> IsoMessage | None:
        try:
            req = NetworkRequest.from_iso(msg)
        except FieldError:
            return self._answer(msg, Outcome_(Decision.FORMAT_ERROR))
        code = req.info_code
        self._metrics.network.labels(function=code if code in _NETWORK_CODES else "other").inc()
        if req.mti.is_advice:  # 0820/0821: a notice, acknowledged whatever it says
            return self._answer(msg, Outcome_(Decision.APPROVED))
        if code == "301":  # echo: link level, whatever terminal it names
            return self._answer(msg, Outcome_(Decision.APPROVED))
        if code == "201":  # cutover: business dates come from the ledger's clock
            return self._answer(msg, Outcome_(Decision.APPROVED))
        if code not in ("001", "002", "161", "162"):
            return self._answer(msg, Outcome_(Decision.UNSUPPORTED_TRANSACTION))
        if not req.terminal_id:
            # No terminal named: an acquirer host signing its link on or off (network
            # level, fields 7, 11, 70 and perhaps 32/33). Acknowledged; a key change
            # names the terminal whose key it changes.
            if code in ("001", "002"):
                return self._answer(msg, Outcome_(Decision.APPROVED))
            return self._answer(msg, Outcome_(Decision.FORMAT_ERROR))
        terminal = await self._terminal(req.terminal_id)
        decision = self._check_terminal(terminal, req.acquirer_id, None)
        if decision is not None:
            return self._answer(msg, Outcome_(decision))
        assert terminal is not None
        if code == "001":
            session.signed_on.add(terminal.terminal_id)
            return self._answer(msg, Outcome_(Decision.APPROVED))
        if code == "002":
            session.signed_on.discard(terminal.terminal_id)
            return self._answer(msg, Outcome_(Decision.APPROVED))
        return self._answer(msg, await self._key_change(terminal))

    async def _key_change(self, terminal: TerminalRecord) -> Outcome_:
        """New TPK from the HSM, stored under the master key, sent under the TMK.

        Field 48 of the 0810 carries the new key under the terminal's TMK (hex)
        followed by its 6-hex-digit check value.
        """
        if not terminal.tmk:
            return Outcome_(Decision.UNSUPPORTED_TRANSACTION)
        tmk = self._key(terminal.tmk)
        algorithm = KeyAlgorithm.AES128 if tmk.algorithm.name.startswith("AES") \
            else KeyAlgorithm.TDES2
        try:
            generated = await self._hsm.generate_key(KeyUsage.TPK, algorithm, tmk,
                                                     deadline_s=self._deadline())
        except HsmError as exc:
            self._metrics.hsm_errors.labels(result=exc.result.name.lower()).inc()
            return Outcome_(Decision.HSM_ERROR)
        # A failure here propagates to handle(): 91 when nothing was written, no
        # answer when the write's outcome is unknown (the terminal asks again, and
        # never runs on a key the host may not hold).
        await self._ledger.set_terminal_key(terminal.terminal_id, "tpk",
                                            generated.wrapped.to_text())
        self.invalidate_terminal(terminal.terminal_id)
        assert generated.under_kek_hex is not None
        return Outcome_(Decision.APPROVED,
                        extra={48: generated.under_kek_hex.upper() + generated.kcv.upper()})


_NETWORK_CODES = frozenset({"001", "002", "161", "162", "201", "301"})
