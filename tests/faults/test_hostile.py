"""Hostile input against a live switch: a 100,000-frame fuzz run, connection
floods and slow senders, while legitimate ATMs keep being served correctly."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from ledger.embedded import EmbeddedPostgres
from messages.codec import IsoMessage, decode, encode
from messages.profiles import ASCII
from switch.atm import AtmClient, AtmError, CardData
from switch.demo import demo_pan
from tests.conftest import new_database
from tests.e2e.harness import SwitchProcess, card, free_port, run_cli, terminal
from tests.faults.bank import ledger_balance
from tests.faults.conftest import atm, provision, rss_kib
from tests.faults.fuzz import FrameFuzzer, base_messages, encoded

pytestmark = pytest.mark.e2e

SEED = 8583
FRAMES = 100_000
FUZZ_CONNECTIONS = 6
CHUNK = 120                  # hostile frames written before waiting for a proof of reading
ECHO_EVERY = 6               # well under the server's 16 undecodable frames in a row
CHUNKS_PER_CONNECTION = 40
FUZZ_DEADLINE_S = 120.0
RSS_GROWTH_MAX_KIB = 200 * 1024
TIGHT_CONNECTIONS_MAX = 8
TIGHT_IDLE_S = 2.0
LEGIT_OPENING = 10_000_000
PIN = "1234"
# The fuzz terminal's cards: each fuzz connection works on cards of its own, as
# ATMs do (one card is in one ATM at a time). Many connections hammering the
# same few cards is a different attack, tested on its own below.
FUZZ_CARDS = 48


def config_text(tight_port: int) -> str:
    return f"""
[[listeners]]
name = "atm"
listen = "127.0.0.1:0"

[[listeners]]
name = "tight"
listen = "127.0.0.1:{tight_port}"
connections_max = {TIGHT_CONNECTIONS_MAX}
idle_timeout_s = {TIGHT_IDLE_S}
frame_timeout_s = {TIGHT_IDLE_S}
"""


@pytest.fixture(scope="module")
def hostile(pg_server: EmbeddedPostgres, template_db: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchProcess]:
    workdir = tmp_path_factory.mktemp("hostile")
    dsn = new_database(pg_server, template_db)
    terminals = [terminal("ATM00001"), terminal("ATM00002"), terminal("FUZZ0001")]
    cards = [card(n, balance=LEGIT_OPENING, daily_limit=10**9, daily_count=10**6,
                  transaction_limit=10**9) for n in range(300, 306 + FUZZ_CARDS)]
    provision(dsn, workdir, terminals, cards)
    ports = {"tight": free_port()}
    proc = SwitchProcess(dsn=dsn, workdir=workdir, ports=ports,
                         config_text=config_text(ports["tight"]))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@dataclass
class Legit:
    """An honest ATM that checks every answer it gets, alongside the abuse.

    `problems` are wrong answers (a failure in any mode). With `strict`, a late
    answer (over `answer_s`) or a "could not process" (91/96) is a problem too;
    without it, those are only counted in `degraded`, and the ATM treats the
    outcome of such a withdrawal as unknown and re-learns the balance.
    """

    client: AtmClient
    card: CardData
    strict: bool = True
    answer_s: float = 10.0
    balance: int | None = None
    ops: int = 0
    slowest_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)

    async def ask(self, msg: IsoMessage, what: str) -> IsoMessage | None:
        try:
            ex = await self.client.send(msg, timeout_s=self.answer_s)
        except AtmError as exc:
            self.trouble(f"{what}: {exc}")
            return None
        self.ops += 1
        self.slowest_s = max(self.slowest_s, ex.latency_s)
        if ex.code in ("91", "96"):
            self.trouble(f"{what} answered {ex.code}")
            return None
        self.expect(ex.code == "00", f"{what} answered {ex.code}")
        return ex.response if ex.code == "00" else None

    async def one_round(self) -> None:
        c = self.client
        await self.ask(c.network("301"), "echo")
        answer = await self.ask(c.balance_inquiry(self.card, PIN), "balance inquiry")
        if answer is not None:
            seen = ledger_balance(answer)
            if self.balance is None:
                self.balance = seen
            self.expect(seen == self.balance, f"balance {seen}, expected {self.balance}")
        before = self.balance
        self.balance = None   # unknown until the withdrawal's answer says otherwise
        answer = await self.ask(c.withdrawal(self.card, 1_000, PIN), "withdrawal")
        if answer is not None and before is not None:
            self.balance = before - 1_000
            self.expect(ledger_balance(answer) == self.balance,
                        f"withdrawal left {ledger_balance(answer)}, expected {self.balance}")

    def expect(self, ok: bool, text: str) -> None:
        if not ok:
            self.problems.append(text)

    def trouble(self, text: str) -> None:
        (self.problems if self.strict else self.degraded).append(text)

    async def run_until(self, done: asyncio.Event, pause_s: float = 0.05,
                        rounds_max: int = 10_000) -> None:
        for _ in range(rounds_max):
            if done.is_set() or (self.strict and self.problems):
                return
            await self.one_round()
            await asyncio.sleep(pause_s)


# -- fuzz --------------------------------------------------------------------------


@dataclass
class FuzzStats:
    delivered: int = 0        # hostile frames the server is known to have read
    written: int = 0          # hostile frames written (some die with a closed connection)
    answers: int = 0
    connections: int = 0
    by_mutation: Counter[str] = field(default_factory=Counter)


class EchoWatch:
    """Reads every answer on a fuzz connection; remembers which echo STANs came back.

    The server reads a connection's frames in order, so the answer to an echo
    written after some hostile frames proves the server has read those frames.
    """

    def __init__(self, reader: asyncio.StreamReader, stats: FuzzStats) -> None:
        self.reader, self.stats = reader, stats
        self.echoed: set[str] = set()
        self.changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        buffer = b""
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return
                buffer += data
                while len(buffer) >= 2:
                    size = int.from_bytes(buffer[:2], "big")
                    if len(buffer) < 2 + size:
                        break
                    payload, buffer = buffer[2:2 + size], buffer[2 + size:]
                    self.stats.answers += 1
                    if payload[:4] == b"0810":
                        self.echoed.add(decode(payload, ASCII).get(11) or "")
                        self.changed.set()
        except (ConnectionError, OSError):
            return
        finally:
            self.changed.set()

    async def wait_for(self, stan: str, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while stan not in self.echoed and not self.task.done() and loop.time() < end:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.0, end - loop.time()))
            except TimeoutError:
                break
        return stan in self.echoed


def echo_frame(stan: int) -> tuple[str, bytes]:
    text = f"{stan % 1_000_000:06d}"
    payload = encode(IsoMessage("0800", {7: "1124033000", 11: text, 70: "301"}), ASCII)
    return text, len(payload).to_bytes(2, "big") + payload


async def fuzz_connection(port: int, fuzzer: FrameFuzzer, quota: int, stats: FuzzStats,
                          deadline: float, refresh: Callable[[], list[bytes]]) -> None:
    """Deliver `quota` hostile frames in pipelined chunks, an echo after every few
    (it keeps the connection's decode-error streak short and proves progress),
    now and then ending a connection with a frame whose length header lies."""
    loop = asyncio.get_running_loop()
    delivered, stan = 0, 0
    while delivered < quota and loop.time() < deadline:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        stats.connections += 1
        watch = EchoWatch(reader, stats)
        try:
            for _ in range(CHUNKS_PER_CONNECTION):
                if delivered >= quota or watch.task.done() or loop.time() >= deadline:
                    break
                # Fresh STANs for every chunk: mutations of one request would
                # otherwise be repeats of each other (a different test below).
                fuzzer.payloads = refresh()
                batch: list[bytes] = []
                checkpoints: list[tuple[str, int]] = []
                count = 0
                for name, wire in fuzzer.frames(min(CHUNK, quota - delivered)):
                    stats.by_mutation[name] += 1
                    batch.append(wire)
                    count += 1
                    if count % ECHO_EVERY == 0:
                        stan += 1
                        marker, frame_bytes = echo_frame(stan)
                        batch.append(frame_bytes)
                        checkpoints.append((marker, count))
                stan += 1
                marker, frame_bytes = echo_frame(stan)
                batch.append(frame_bytes)
                checkpoints.append((marker, count))
                writer.write(b"".join(batch))
                stats.written += count
                await asyncio.wait_for(writer.drain(), 30.0)
                await watch.wait_for(marker, 30.0)
                proven = max((n for m, n in checkpoints if m in watch.echoed), default=0)
                delivered += proven
                stats.delivered += proven
                if proven < count:
                    break     # the server closed this connection: open another
            if not watch.task.done() and fuzzer.rng.random() < 0.5:
                _, lie = fuzzer.frames_of("wrong_length")
                writer.write(lie + fuzzer.rng.randbytes(64))
                stats.by_mutation["wrong_length"] += 1
                await asyncio.wait_for(writer.drain(), 30.0)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            watch.task.cancel()
            await asyncio.gather(watch.task, return_exceptions=True)


async def quiet(proc: SwitchProcess, ledger_deadline_s: float) -> None:
    """Wait until the switch has no request in flight (bounded)."""
    end = time.monotonic() + ledger_deadline_s + 10.0
    while time.monotonic() < end:
        if await asyncio.to_thread(proc.metric, "atm_switch_in_flight_requests") == 0:
            return
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_fuzz_100k_frames_server_survives_and_keeps_serving(
        hostile: SwitchProcess) -> None:
    proc = hostile
    cards = [CardData(demo_pan(n), "3012") for n in range(306, 306 + FUZZ_CARDS)]
    fuzz_atms = [atm("FUZZ0001") for _ in range(FUZZ_CONNECTIONS)]
    payloads = encoded(base_messages(fuzz_atms[0], cards, PIN))
    # Not strict: under this load the switch is slow to answer other terminals
    # (see test_busy_connections_do_not_starve_other_terminals); what must hold
    # here is that every answer it gives is right.
    legit = Legit(atm("ATM00001"), CardData(demo_pan(300), "3012"), strict=False)
    await legit.client.connect("127.0.0.1", proc.port)
    await legit.one_round()   # warm up before measuring memory
    rss_before = rss_kib(proc)
    decode_errors_before = await asyncio.to_thread(
        proc.metric, "atm_switch_decode_errors_total")

    stats = FuzzStats()
    done = asyncio.Event()
    started = time.monotonic()
    deadline = asyncio.get_running_loop().time() + FUZZ_DEADLINE_S
    quota = -(-FRAMES // FUZZ_CONNECTIONS)
    legit_task = asyncio.ensure_future(legit.run_until(done))
    try:
        await asyncio.gather(*(
            fuzz_connection(proc.port, FrameFuzzer(SEED + i, payloads, 4096), quota, stats,
                            deadline, lambda c=fuzz_atms[i], i=i: encoded(base_messages(
                                c, cards[i::FUZZ_CONNECTIONS], PIN)))
            for i in range(FUZZ_CONNECTIONS)))
    finally:
        done.set()
        await asyncio.wait_for(legit_task, 30)
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.0)   # let the last answers go out before measuring
    assert proc.proc is not None and proc.proc.poll() is None, "the switch died"
    rss_after = rss_kib(proc)
    # Once the abuse stops (and the requests it left in flight are done, which
    # takes at most the ledger deadline), the honest ATM is served promptly again.
    await quiet(proc, ledger_deadline_s=5.0)
    legit.strict, legit.answer_s = True, 5.0
    await legit.one_round()
    await legit.client.close()
    decode_errors = await asyncio.to_thread(
        proc.metric, "atm_switch_decode_errors_total") - decode_errors_before
    print(f"fuzz: {stats.delivered} hostile frames read by the server ({stats.written} "
          f"written) in {elapsed:.1f}s, {FUZZ_CONNECTIONS} at a time over "
          f"{stats.connections} connections, {stats.answers} answers, "
          f"{decode_errors:.0f} decode errors counted; RSS {rss_before} -> {rss_after} KiB; "
          f"legit ATM: {legit.ops} checked answers, slowest {legit.slowest_s:.2f}s, "
          f"{len(legit.degraded)} late or 91/96; "
          f"mutations {dict(sorted(stats.by_mutation.items()))}")
    assert stats.delivered >= FRAMES, f"only {stats.delivered} frames read before the deadline"
    assert not legit.problems, legit.problems[:20]
    assert legit.ops >= 5, "the legitimate ATM hardly ran"
    assert rss_after - rss_before < RSS_GROWTH_MAX_KIB, (rss_before, rss_after)
    assert stats.answers > 1_000 and decode_errors > 1_000, "the fuzz did not reach the server"
    verify = await asyncio.to_thread(run_cli, ["ledger", "verify"], proc.dsn)
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]


async def raw_exchange(port: int, payload: bytes) -> IsoMessage:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(len(payload).to_bytes(2, "big") + payload)
        await writer.drain()
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 10), "big")
        return decode(await asyncio.wait_for(reader.readexactly(size), 10), ASCII)
    finally:
        writer.close()


@pytest.mark.parametrize("original_dt", ["1324120000", "0132120000"])
async def test_impossible_original_date_in_a_reversal_is_a_format_error(
        hostile: SwitchProcess, original_dt: str) -> None:
    client = atm("ATM00002")
    wd = client.withdrawal(CardData(demo_pan(303), "3012"), 1_000, PIN)
    reversal = client.reversal(wd, advice=False)
    field90 = reversal.get(90) or ""
    # Field 90: original MTI (4), STAN (6), transmission date/time (10), ...
    bad = reversal.with_fields({90: field90[:10] + original_dt + field90[20:]})
    answer = await raw_exchange(hostile.port, encode(bad, ASCII))
    assert answer.get(39) == "30"


# -- connection floods and slow senders -------------------------------------------


async def _closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1), timeout_s)
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True
    return data == b""


async def test_connection_flood_is_bounded_and_atms_keep_being_served(
        hostile: SwitchProcess) -> None:
    proc = hostile
    port = proc.ports["tight"]
    refused_before = await asyncio.to_thread(
        proc.metric, "atm_switch_connections_refused_total", listener="tight")
    legit = Legit(atm("ATM00002"), CardData(demo_pan(305), "3012"))
    await legit.client.connect("127.0.0.1", port)
    flood = [await asyncio.open_connection("127.0.0.1", port)
             for _ in range(3 * TIGHT_CONNECTIONS_MAX)]
    try:
        closed_at_once = await asyncio.gather(*(_closed_within(r, 1.0) for r, _ in flood))
        # The legitimate ATM holds one of the slots; the flood gets the rest at most.
        assert sum(1 for c in closed_at_once if not c) <= TIGHT_CONNECTIONS_MAX - 1
        await legit.one_round()
        assert not legit.problems, legit.problems
        # The flood connections that got in send nothing: the idle timeout frees them
        # (the legitimate ATM keeps talking, so it keeps its slot).
        survivors = [r for (r, _), c in zip(flood, closed_at_once, strict=True) if not c]
        talk = asyncio.Event()
        chatter = asyncio.ensure_future(legit.run_until(talk, pause_s=0.3))
        closed_idle = await asyncio.gather(*(_closed_within(r, TIGHT_IDLE_S + 3.0)
                                             for r in survivors))
        talk.set()
        await chatter
        assert all(closed_idle), f"{closed_idle.count(False)} idle connections still open"
        assert not legit.problems, legit.problems
        # A newcomer now gets a slot and is served.
        newcomer = Legit(atm("ATM00002"), CardData(demo_pan(305), "3012"))
        await newcomer.client.connect("127.0.0.1", port)
        await newcomer.one_round()
        await newcomer.client.close()
        assert not newcomer.problems, newcomer.problems
    finally:
        for _, writer in flood:
            writer.transport.abort()
        await legit.client.close()
    refused = await asyncio.to_thread(
        proc.metric, "atm_switch_connections_refused_total", listener="tight")
    assert refused - refused_before >= 2 * TIGHT_CONNECTIONS_MAX + 1


async def _trickle(writer: asyncio.StreamWriter, data: bytes, stop: asyncio.Event,
                   per_byte_s: float = 1.0) -> None:
    for byte in data:
        if stop.is_set() or writer.transport.is_closing():
            return
        writer.write(bytes([byte]))
        try:
            await asyncio.wait_for(stop.wait(), per_byte_s)
        except TimeoutError:
            continue
        return


@pytest.mark.slow
async def test_slow_senders_do_not_starve_connected_atms(hostile: SwitchProcess) -> None:
    proc = hostile
    port = proc.ports["tight"]
    legit = Legit(atm("ATM00002"), CardData(demo_pan(304), "3012"))
    await legit.client.connect("127.0.0.1", port)
    payload = encoded([atm("ATM00002").balance_inquiry(CardData(demo_pan(304), "3012"),
                                                       PIN)])[0]
    wire = len(payload).to_bytes(2, "big") + payload
    slow = [await asyncio.open_connection("127.0.0.1", port)
            for _ in range(TIGHT_CONNECTIONS_MAX - 1)]
    stop = asyncio.Event()
    trickles = [asyncio.ensure_future(_trickle(w, wire, stop)) for _, w in slow]
    try:
        done = asyncio.Event()
        runner = asyncio.ensure_future(legit.run_until(done, pause_s=0.2))
        await asyncio.sleep(3 * TIGHT_IDLE_S)
        done.set()
        await runner
        assert not legit.problems, legit.problems
        assert legit.ops >= 9
    finally:
        stop.set()
        await asyncio.gather(*trickles, return_exceptions=True)
        for _, writer in slow:
            writer.transport.abort()
        await legit.client.close()


async def test_a_frame_trickled_slower_than_the_idle_timeout_is_cut_off(
        hostile: SwitchProcess) -> None:
    proc = hostile
    payload = encoded([atm("ATM00002").balance_inquiry(CardData(demo_pan(304), "3012"),
                                                       PIN)])[0]
    wire = len(payload).to_bytes(2, "big") + payload
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.ports["tight"])
    stop = asyncio.Event()
    trickle = asyncio.ensure_future(_trickle(writer, wire, stop))
    try:
        # One byte a second: after 3 idle timeouts the frame is still far from
        # complete. A host that bounds frame assembly time has cut it off by then.
        assert await _closed_within(reader, 3 * TIGHT_IDLE_S + 1.0)
    finally:
        stop.set()
        await asyncio.gather(trickle, return_exceptions=True)
        writer.transport.abort()
