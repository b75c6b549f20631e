"""`atm-switch`: run, provision, administer and try the ATM authorization host.

Every command that touches the database takes `--config FILE` and
`--data-dir DIR` (where the embedded PostgreSQL lives when no DSN is
configured), so `atm-switch ledger verify --data-dir DIR` checks the ledger
that `atm-switch serve --data-dir DIR` wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from switch import logs
from switch.config import ConfigError, SwitchConfig, load_config

log = logging.getLogger("atm_switch.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _db_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--data-dir", type=Path,
                        help="state directory (embedded PostgreSQL lives in DIR/pg)")


def _listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT", help="ATM listener address")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        help="operator HTTP address (/metrics, /healthz, /readyz)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atm-switch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="embedded PostgreSQL + demo issuer + serve")
    _db_options(demo)
    _listen_options(demo)

    serve = sub.add_parser("serve", help="run the authorization host")
    _db_options(serve)
    _listen_options(serve)
    serve.add_argument("--workers", type=int, default=1,
                       help="switch processes sharing the port (SO_REUSEPORT); default 1")

    prov = sub.add_parser("provision", help="load terminals and cards from a JSON file")
    prov.add_argument("file", type=Path)
    _db_options(prov)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    _db_options(db_sub.add_parser("upgrade", help="apply migrations"))

    ledger = sub.add_parser("ledger", help="ledger checks")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    _db_options(ledger_sub.add_parser("verify", help="check every ledger invariant"))
    _db_options(ledger_sub.add_parser("fold", help="fold hot-account postings into balances"))

    card = sub.add_parser("card", help="card administration")
    card_sub = card.add_subparsers(dest="card_command", required=True)
    for action, text in (("block", "block a card (39=62)"), ("lost", "mark lost (39=41)"),
                         ("stolen", "mark stolen (39=43)"), ("unblock", "reactivate a card"),
                         ("reset-pin-tries", "reset the PIN try counter")):
        p = card_sub.add_parser(action, help=text)
        p.add_argument("pan")
        _db_options(p)
    limits = card_sub.add_parser("limits", help="set per-card limits (minor units)")
    limits.add_argument("pan")
    limits.add_argument("--transaction-max", type=int)
    limits.add_argument("--daily-amount-max", type=int)
    limits.add_argument("--daily-count-max", type=int)
    _db_options(limits)

    _atm_parser(sub)

    bench = sub.add_parser("bench", help="end-to-end benchmark (see BENCHMARKS.md)",
                           add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _atm_parser(sub: Any) -> None:
    from switch.demo import DEMO_ACQUIRER, DEMO_TPK

    atm = sub.add_parser("atm", help="a small ATM client to try the host")
    atm.add_argument("--connect", default="127.0.0.1:8583", metavar="HOST:PORT")
    atm.add_argument("--terminal", default="ATM00001")
    atm.add_argument("--acquirer", default=DEMO_ACQUIRER)
    atm.add_argument("--tpk", default=DEMO_TPK, help="the ATM's clear TPK (hex)")
    atm.add_argument("--pin-format", type=int, default=0, choices=(0, 1, 3, 4))
    atm.add_argument("--profile", default="ascii", choices=("ascii", "binary"))
    atm.add_argument("--length-header", default="binary2", choices=("binary2", "ascii4"))
    atm.add_argument("--currency", default="840")
    atm.add_argument("--timeout", type=float, default=10.0, help="seconds to wait per answer")
    actions = atm.add_subparsers(dest="atm_command", required=True)
    for name in ("sign-on", "sign-off", "echo", "key-change", "cutover"):
        actions.add_parser(name)
    for name in ("balance", "withdraw", "deposit"):
        p = actions.add_parser(name)
        p.add_argument("--pan", required=True)
        p.add_argument("--pin", required=True)
        p.add_argument("--expiry", default="3012", help="YYMM on the card")
        p.add_argument("--account", default="00", help="ISO account type: 00, 10, 20")
        if name != "balance":
            p.add_argument("--amount", type=int, required=True, help="minor units")
        if name == "withdraw":
            p.add_argument("--reverse", action="store_true",
                           help="then send a 0420 reversal of it")
            p.add_argument("--dispensed", type=int,
                           help="with --reverse: amount actually dispensed (partial)")
    rev = actions.add_parser("reverse", help="reverse an earlier withdrawal (0420, or 0400)")
    rev.add_argument("--pan", required=True)
    rev.add_argument("--expiry", default="3012", help="YYMM on the card")
    rev.add_argument("--amount", type=int, required=True, help="the original amount")
    rev.add_argument("--stan", required=True, help="the original's STAN (field 11)")
    rev.add_argument("--time", required=True, dest="transmission_dt",
                     help="the original's transmission date/time, MMDDhhmmss (field 7)")
    rev.add_argument("--rrn", help="the original's RRN (field 37)")
    rev.add_argument("--dispensed", type=int, help="amount actually dispensed (partial)")
    rev.add_argument("--request", action="store_true", help="send a 0400 instead of a 0420")


# -- helpers -----------------------------------------------------------------


def _config(args: argparse.Namespace) -> SwitchConfig:
    overrides: dict[str, Any] = {"data_dir": getattr(args, "data_dir", None),
                                 "listen": getattr(args, "listen", None),
                                 "metrics_listen": getattr(args, "metrics_listen", None)}
    return load_config(getattr(args, "config", None), overrides=overrides)


def _run(coro: Awaitable[int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


async def _with_ledger(config: SwitchConfig, work: Callable[..., Awaitable[int]],
                       *, migrate: bool | None = None) -> int:
    from switch.app import open_database, open_ledger
    from switch.keys import load_secrets

    secrets = load_secrets(config)
    db = await asyncio.to_thread(open_database, config, migrate=migrate)
    try:
        ledger = await open_ledger(config, db, secrets)
        try:
            return await work(ledger, secrets, db)
        finally:
            await ledger.close()
    finally:
        await asyncio.to_thread(db.close)


# -- commands ----------------------------------------------------------------


async def _serve(config: SwitchConfig, before: Callable[..., Awaitable[None]] | None = None
                 ) -> int:
    from switch.app import SwitchApp, open_database

    db = await asyncio.to_thread(open_database, config)
    app = SwitchApp(config)
    try:
        await app.start(db)
    except BaseException:
        await asyncio.to_thread(db.close)
        raise
    if before is not None:
        await before(app)
    await app.run_until_stopped()
    return EXIT_OK


async def _demo(config: SwitchConfig) -> int:
    from switch.demo import demo_data
    from switch.provisioning import provision

    data = demo_data()

    async def load(ledger: Any, secrets: Any, db: Any) -> int:
        await provision(ledger, secrets.hsm(), secrets.pvk, data,
                        secrets.data_key)
        return EXIT_OK

    await _with_ledger(config, load)

    async def announce(app: Any) -> None:
        host, port = app.bound[0]
        mhost, mport = app.metrics_bound
        print(_demo_banner(data, host, port, mhost, mport), flush=True)

    return await _serve(config, announce)


def _demo_banner(data: dict[str, Any], host: str, port: int, mhost: str, mport: int) -> str:
    lines = [
        "",
        "atm-switch demo: DEMO keys and demo cards, never use them with real cards.",
        f"ATM listener   {host}:{port}  (ascii profile, 2-byte length header, PIN format 0)",
        f"Metrics        http://{mhost}:{mport}/metrics   (also /healthz, /readyz)",
        "Terminals      " + ", ".join(t["id"] for t in data["terminals"]),
        "",
        f"{'PAN':<18} {'PIN':<5} {'expiry':<6} {'balance':>10}  note",
    ]
    for card in data["cards"]:
        note = card.get("status", "")
        if card["expiry"] < "2600":
            note = "expired"
        if "savings_balance" in card:
            note = (note + " +savings").strip()
        lines.append(f"{card['pan']:<18} {card['pin']:<5} {card['expiry']:<6} "
                     f"{card['balance'] / 100:>10.2f}  {note}")
    first = data["cards"][0]
    lines += [
        "",
        "Try it from another terminal:",
        f"  .venv/bin/atm-switch atm --connect {host}:{port} balance "
        f"--pan {first['pan']} --pin {first['pin']}",
        f"  .venv/bin/atm-switch atm --connect {host}:{port} withdraw "
        f"--pan {first['pan']} --pin {first['pin']} --amount 2000 --reverse --dispensed 1000",
        f"  curl -s http://{mhost}:{mport}/metrics | grep atm_switch_messages_total",
        "Stop with Ctrl-C.",
        "",
    ]
    return "\n".join(lines)


async def _provision(config: SwitchConfig, path: Path) -> int:
    from switch.provisioning import load_file, provision

    data = load_file(path)

    async def work(ledger: Any, secrets: Any, db: Any) -> int:
        summary = await provision(ledger, secrets.hsm(), secrets.pvk, data,
                        secrets.data_key)
        print(f"provisioned {summary.terminals} terminals and {summary.cards} cards")
        return EXIT_OK

    return await _with_ledger(config, work)


async def _db_upgrade(config: SwitchConfig) -> int:
    from switch.app import open_database

    db = await asyncio.to_thread(open_database, config, migrate=True)
    await asyncio.to_thread(db.close)
    print("database schema is up to date")
    return EXIT_OK


async def _ledger_verify(config: SwitchConfig) -> int:
    async def work(ledger: Any, secrets: Any, db: Any) -> int:
        await ledger.fold_hot_accounts()
        report = await ledger.verify()
        print(report.render() if hasattr(report, "render") else report)
        return EXIT_OK if report.ok else EXIT_FAILED

    return await _with_ledger(config, work)


async def _ledger_fold(config: SwitchConfig) -> int:
    async def work(ledger: Any, secrets: Any, db: Any) -> int:
        folded = await ledger.fold_hot_accounts()
        print(f"folded {folded} postings")
        return EXIT_OK

    return await _with_ledger(config, work)


async def _card_admin(config: SwitchConfig, args: argparse.Namespace) -> int:
    from ledger.model import CardLimits, CardStatus

    action = args.card_command

    async def work(ledger: Any, secrets: Any, db: Any) -> int:
        if action == "reset-pin-tries":
            await ledger.reset_pin_tries(args.pan)
        elif action == "limits":
            await ledger.set_card_limits(args.pan, CardLimits(
                txn_amount_max=args.transaction_max, daily_amount_max=args.daily_amount_max,
                daily_count_max=args.daily_count_max))
        else:
            status = {"block": CardStatus.BLOCKED, "lost": CardStatus.LOST,
                      "stolen": CardStatus.STOLEN, "unblock": CardStatus.ACTIVE}[action]
            await ledger.set_card_status(args.pan, status)
            if action == "unblock":
                await ledger.reset_pin_tries(args.pan)
        print(f"card {_masked(args.pan)}: {action} done")
        return EXIT_OK

    return await _with_ledger(config, work)


def _masked(pan: str) -> str:
    return logs.mask_pan(pan) if len(pan) >= 12 else "****"


async def _atm(args: argparse.Namespace) -> int:
    from messages.codes import ResponseCode
    from switch.atm import AtmClient, AtmConfig, AtmError, CardData, Exchange
    from switch.config import parse_hostport

    host, port = parse_hostport(args.connect, "--connect")
    client = AtmClient(config=AtmConfig(
        terminal_id=args.terminal, acquirer_id=args.acquirer, tpk_hex=args.tpk,
        pin_block_format=args.pin_format, currency=args.currency, profile=args.profile,
        length_header=args.length_header))

    def show(ex: Exchange, what: str) -> None:
        code = ex.code
        known = {c.value: c.meaning for c in ResponseCode}
        meaning = known.get(code, "unknown code")
        line = (f"{what}: {ex.response.mti} 39={code} ({meaning}) "
                f"STAN={ex.request.get(11)} time={ex.request.get(7)} RRN={ex.request.get(37)}")
        if ex.response.get(38):
            line += f" approval={ex.response.get(38)}"
        if ex.response.get(54):
            line += f" 54={ex.response.get(54)}"
        if ex.response.get(48) and args.atm_command == "key-change":
            line += " new key delivered in field 48 (under the TMK, with its check value)"
        print(f"{line}  [{ex.latency_s * 1000:.1f} ms]")

    action = args.atm_command
    try:
        await client.connect(host, port)
        codes = {"sign-on": "001", "sign-off": "002", "echo": "301", "key-change": "161",
                 "cutover": "201"}
        if action in codes:
            ex = await client.send(client.network(codes[action]), timeout_s=args.timeout)
            show(ex, action)
            return EXIT_OK if ex.code == "00" else EXIT_FAILED
        card = CardData(pan=args.pan, expiry=args.expiry)
        if action == "reverse":
            original = client.withdrawal(card, args.amount, "0000").with_fields(
                {7: args.transmission_dt, 11: args.stan, 37: args.rrn, 52: None})
            rev = client.reversal(original, dispensed=args.dispensed, advice=not args.request)
            ex = await client.send(rev, timeout_s=args.timeout)
            show(ex, "reversal")
            return EXIT_OK if ex.code == "00" else EXIT_FAILED
        if action == "balance":
            msg = client.balance_inquiry(card, args.pin, account=args.account)
        elif action == "deposit":
            msg = client.financial(card, processing=f"2100{args.account}", amount=args.amount,
                                   pin=args.pin)
        else:
            msg = client.withdrawal(card, args.amount, args.pin, account=args.account)
        ex = await client.send(msg, timeout_s=args.timeout)
        show(ex, action)
        if action == "withdraw" and args.reverse:
            rev = client.reversal(msg, dispensed=args.dispensed)
            show(await client.send(rev, timeout_s=args.timeout), "reversal")
        return EXIT_OK if ex.code == "00" else EXIT_FAILED
    except AtmError as exc:
        print(f"atm: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        # The harness owns its options (argparse REMAINDER would refuse leading ones).
        from benchmarks.harness import main as bench_main

        rc: int = bench_main(argv[1:])
        return rc
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "atm":
        logs.configure("WARNING")
        return _run(_atm(args))
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"atm-switch: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(config.log_level, config.log_json)
    if args.command == "serve" and args.workers > 1:
        from switch.workers import serve_workers

        return serve_workers(config, args.workers)
    command: dict[str, Callable[[], Awaitable[int]]] = {
        "demo": lambda: _demo(config),
        "serve": lambda: _serve(config),
        "provision": lambda: _provision(config, args.file),
        "db": lambda: _db_upgrade(config),
        "card": lambda: _card_admin(config, args),
    }
    if args.command == "ledger":
        runner = _ledger_verify if args.ledger_command == "verify" else _ledger_fold
        command["ledger"] = lambda: runner(config)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return _run(command[args.command]())
        return EXIT_OK
    except ConfigError as exc:
        print(f"atm-switch: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from ledger.errors import LedgerError
        from switch.provisioning import ProvisioningInputError

        if isinstance(exc, LedgerError | ProvisioningInputError):
            print(f"atm-switch: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())

