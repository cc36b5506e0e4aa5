"""Benchmark the journal: committed transactions per second with N concurrent writers.

Each simulated payment makes the writes the switch makes: create the transaction
(PAN sealed and hashed), then append the request and response messages and move
it to approved with a notification event, each waiting for its durable commit.
Prints, per backend and writer count, payments/s, writes/s, the mean group-commit
batch size and the mean commit time. Not a test; numbers depend on the disk.

    kswitch-bench-journal                       # SQLite and PostgreSQL, 1/16/64/256 writers, 5 s each
    kswitch-bench-journal --backend sqlite --writers 1,64 --seconds 10
    kswitch-bench-journal --max-batch 1         # one commit per write, for comparison
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry
from twisted.internet import defer, task

from switch.journal import (
    CardData,
    Direction,
    EventDraft,
    JournalConfig,
    Kind,
    NewTransaction,
    SecretSource,
    Status,
    generate_key,
    open_journal,
)
from switch.observe.logs import configure

WRITES_PER_PAYMENT = 4
DEFAULT_DSN = os.environ.get("KSWITCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kswitch-bench-journal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--writers", default="1,16,64,256", help="comma-separated concurrent writer counts")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per run")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL DSN (default: $KSWITCH_PG_DSN or local test db)")
    parser.add_argument(
        "--max-batch", type=int, default=JournalConfig.max_batch, help="group-commit batch limit; 1 turns group commit off"
    )
    parser.add_argument("--state-dir", type=Path, help="where the SQLite file goes (default: a temporary directory)")
    return parser.parse_args()


def keys(directory: Path) -> tuple[SecretSource, SecretSource]:
    ring, secret = directory / "pan-keys", directory / "pan-hash-secret"
    ring.write_text(f"bench:{generate_key()}\n")
    secret.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    for path in (ring, secret):
        path.chmod(0o600)
    return SecretSource(file=ring), SecretSource(file=secret)


async def payment(journal, writer: int, n: int) -> None:
    txn = await journal.create_transaction(
        NewTransaction(
            kind=Kind.SALE,
            merchant_id=f"m{writer % 8}",
            connector="bank_a",
            amount=1000 + n,
            currency="EUR",
            order_id=f"w{writer}-{n}",
            card=CardData("4111111111111111", "2712"),
            retain_card=True,
            stan=f"{n % 1_000_000:06d}",
        )
    )
    fields = {"2": "411111******1111", "3": "000000", "4": f"{1000 + n:012d}", "11": txn.stan}
    await defer.gatherResults(
        [
            journal.append_message(txn_id=txn.txn_id, direction=Direction.OUT, connector="bank_a", mti="0200", fields=fields),
            journal.append_message(
                txn_id=txn.txn_id, direction=Direction.IN, connector="bank_a", mti="0210", fields={**fields, "39": "00"}
            ),
            journal.transition(
                txn.txn_id,
                expected_from={Status.PENDING},
                to=Status.APPROVED,
                response_code="00",
                auth_code="A12345",
                amount_authorized=1000 + n,
                amount_captured=1000 + n,
                event=EventDraft("payment.completed", {"txn_id": txn.txn_id}),
            ),
        ],
        consumeErrors=True,
    )


async def run_once(reactor, config: JournalConfig, writers: int, seconds: float) -> dict[str, float]:
    registry = CollectorRegistry()
    journal = await open_journal(config, reactor, registry=registry)
    done = 0
    deadline = time.monotonic() + seconds

    async def writer(index: int) -> None:
        nonlocal done
        n = 0
        while time.monotonic() < deadline:
            await payment(journal, index, n)
            n += 1
            done += 1

    started = time.monotonic()
    await defer.gatherResults([defer.ensureDeferred(writer(i)) for i in range(writers)], consumeErrors=True)
    elapsed = time.monotonic() - started
    await journal.close()

    def value(name: str) -> float:
        return registry.get_sample_value(name, {"backend": config.backend}) or 0.0

    batches = value("kswitch_journal_batch_size_count")
    return {
        "payments_per_s": done / elapsed,
        "writes_per_s": value("kswitch_journal_batch_size_sum") / elapsed,
        "mean_batch": value("kswitch_journal_batch_size_sum") / batches if batches else 0.0,
        "mean_commit_ms": 1000 * value("kswitch_journal_commit_seconds_sum") / batches if batches else 0.0,
    }


def postgres_problem(dsn: str) -> str | None:
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


async def measure(reactor, args: argparse.Namespace) -> None:
    configure(fmt="console", level="warning")
    counts = [int(part) for part in args.writers.split(",") if part.strip()]
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    print(f"{'backend':<11} {'writers':>7} {'payments/s':>11} {'writes/s':>9} {'mean batch':>11} {'mean commit':>12}", file=sys.stdout)
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as scratch:
        pan_keys, pan_hash_secret = keys(Path(scratch))
        state_dir = args.state_dir or Path(scratch)
        for backend in backends:
            if backend == "postgresql" and (problem := postgres_problem(args.dsn)):
                print(f"{backend:<11} skipped: PostgreSQL not reachable ({problem})", file=sys.stdout)
                continue
            for writers in counts:
                schema = f"kswitch_bench_{uuid.uuid4().hex[:12]}"
                config = JournalConfig(
                    backend=backend,
                    sqlite_path=state_dir / f"{schema}.sqlite3",
                    pg_dsn=args.dsn,
                    pg_schema=schema,
                    pan_keys=pan_keys,
                    pan_hash_secret=pan_hash_secret,
                    max_batch=args.max_batch,
                )
                try:
                    result = await run_once(reactor, config, writers, args.seconds)
                finally:
                    drop(config)
                print(
                    f"{backend:<11} {writers:>7} {result['payments_per_s']:>11.0f} {result['writes_per_s']:>9.0f} "
                    f"{result['mean_batch']:>11.1f} {result['mean_commit_ms']:>10.2f}ms",
                    file=sys.stdout,
                )
    print(f"(one payment = {WRITES_PER_PAYMENT} durable writes: create, two messages, approve + event)", file=sys.stdout)


def drop(config: JournalConfig) -> None:
    if config.backend == "postgresql":
        with psycopg.connect(config.pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{config.pg_schema}" CASCADE')
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{config.sqlite_path}{suffix}").unlink(missing_ok=True)


def main() -> None:
    arguments = parse_args()
    task.react(lambda reactor: defer.ensureDeferred(measure(reactor, arguments)))


if __name__ == "__main__":
    main()
