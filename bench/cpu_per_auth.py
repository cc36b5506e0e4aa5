"""CPU time kswitch spends per authorization, by thread, under perf_ratio's closed loop.

Throughput on a shared machine swings with its load; the CPU time a payment costs swings less, and
it is what the reactor and the journal writer share (one GIL). Runs kswitch from perf_ratio's
template (or --template) against perf_ratio's bank and load generator, warms up for 2 s, then
prints one JSON line per run: throughput, and user/system microseconds per authorization of the
reactor thread, the journal writer thread and the rest (reader threads), then of the journal's writer
process and, with --pg, of the PostgreSQL backend that serves it. --both runs two trees at the same
time, so both see the same machine (each still gets its own bank, switch and load):

    PYTHONPATH=$PWD .tox/py3/bin/python bench/cpu_per_auth.py --runs 3 [--pg] [--seconds 8] [--py-spy F.raw]
    .tox/py3/bin/python bench/cpu_per_auth.py --both BASE_TREE HEAD_TREE --runs 3

--states also samples, every millisecond, what the reactor and the journal writer are doing at the same
moment (running, idle in epoll, waiting on a futex: the GIL or the writer's queue; in a disk wait) and adds
the shares of the commonest pairs: the reactor idle while the writer runs alone is the time every payment
in flight waits on the journal (the sampler takes some CPU of its own).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PERF_RATIO = Path(os.environ.get("PERF_RATIO", Path(__file__).resolve().parents[2] / "shared/bench/perf_ratio.py"))
sys.path.insert(0, str(PERF_RATIO.parent))
import perf_ratio  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
"""The server bench/perf-template.toml's journal uses: its writer backends are measured, its run schemas dropped."""
HELLO = ("bench", "bench-token-not-for-production")


def thread_times(pid: int) -> dict[str, list[float]]:
    """User and system seconds of each thread: the reactor (the main thread), the journal writer
    (the busiest other thread) and the rest together."""
    by_thread: dict[int, list[float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        by_thread[int(task.name)] = [int(fields[11]) / TICK, int(fields[12]) / TICK]
    return {str(tid): times for tid, times in by_thread.items()} | {"main": by_thread.get(pid, [0.0, 0.0])}


def process_times(pid: int) -> list[float]:
    """User and system seconds of a whole process (0, 0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return [0.0, 0.0]
    return [int(fields[11]) / TICK, int(fields[12]) / TICK]


CHILD_ROLES = {b"switch.journal.writerproc": "writer process", b"switch.observe.logchild": "log child"}
"""The switch's children, told apart by the module each runs (``python -m``): only the writer process does a
payment's journal work, so the log child's CPU is its own row, not part of the writer's."""


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def child_roles(pid: int) -> dict[str, list[int]]:
    """The switch's child processes by role (`CHILD_ROLES`; any other child is an "other child")."""
    roles: dict[str, list[int]] = {}
    for child in children(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:  # ended since it was listed
            continue
        role = next((name for module, name in CHILD_ROLES.items() if module in argv), "other child")
        roles.setdefault(role, []).append(child)
    return roles


def postgres_writers() -> list[int]:
    """The PostgreSQL backends serving the journal's writer connections (the writer thread's and the writer
    process's: the adaptive writer keeps both)."""
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'kswitch-journal-writer'")
        return [row[0] for row in rows.fetchall()]


def _summed(pids: list[int]) -> list[float]:
    return [sum(column) for column in zip([0.0, 0.0], *map(process_times, pids))]


def all_times(pid: int, pg: bool) -> dict[str, list[float]]:
    """`thread_times` of the switch, and the whole of each of its child processes (`child_roles`) and of the
    PostgreSQL backend: on a small machine every one of them takes CPU the others could have used."""
    times = thread_times(pid)
    times |= {role: _summed(pids) for role, pids in child_roles(pid).items()}
    if pg:
        times["postgres backend"] = _summed(postgres_writers())
    return times


def per_auth(before: dict[str, list[float]], after: dict[str, list[float]], pid: int, n: int) -> dict[str, list[int]]:
    aside = ("main", str(pid), *CHILD_ROLES.values(), "other child", "postgres backend")
    spent = {tid: [a - b for a, b in zip(times, before.get(tid, [0.0, 0.0]))] for tid, times in after.items()
             if tid not in aside}
    writer = max(spent, key=lambda tid: sum(spent[tid]), default=None)
    rest = [sum(times[i] for tid, times in spent.items() if tid != writer) for i in (0, 1)]
    reactor = [a - b for a, b in zip(after["main"], before["main"])]
    rows = {"reactor": reactor, "writer": spent.get(writer, [0.0, 0.0]), "other threads": rest}
    for name in aside[2:]:
        if name in after:
            rows[name] = [a - b for a, b in zip(after[name], before.get(name, [0.0, 0.0]))]
    return {name: [round(value / n * 1e6) for value in times] for name, times in rows.items()}


def thread_state(pid: int, tid: int) -> str:
    """One thread's state: running (or runnable), else where the kernel has it sleep."""
    state = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    if state == "R":
        return "running"
    wchan = Path(f"/proc/{pid}/task/{tid}/wchan").read_text()
    named = {"do_epoll_wait": "epoll", "futex_do_wait": "futex", "futex_wait_queue": "futex", "submit_bio_wait": "disk"}
    return named.get(wchan, "other" if wchan in ("", "0") else wchan)


def sample_states(pid: int, seconds: float) -> dict[str, float]:
    """Shares of (reactor, writer) state pairs over ``seconds``; the writer is the process's second thread."""
    reactor, writer = sorted(int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())[:2]
    pairs: collections.Counter[str] = collections.Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            pairs[f"reactor {thread_state(pid, reactor)}, writer {thread_state(pid, writer)}"] += 1
        except OSError:
            break
        time.sleep(0.001)
    total = sum(pairs.values()) or 1
    return {pair: round(count / total, 3) for pair, count in pairs.most_common(6)}


def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else "py-spy"


@contextlib.contextmanager
def started(template: str | None, pg: bool, state: Path
            ) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], int, int]]:
    """kswitch from ``template`` (perf_ratio's own when None) against perf_ratio's bank, once /readyz says so:
    (the switch's process, the bank's, the switch's API port, its admin port); both stop on the way out."""
    bank_port, api, admin = perf_ratio.free_port(), perf_ratio.free_port(), perf_ratio.free_port()
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    name = f"cpu{os.getpid()}{time.time_ns() % 100000}"
    schema = f'postgres_schema = "{name}"' if pg else ""
    text = Path(template).read_text() if template else perf_ratio.CONFIG
    config = state / "kswitch.toml"
    config.write_text(text.format(state=state, api=api, admin=admin, bank=bank_port,
                                  backend="postgresql" if pg else "sqlite", schema=schema))
    bank = subprocess.Popen([perf_ratio.PY, str(perf_ratio.RELAY), "bank", "--port", str(bank_port)])
    perf_ratio.wait_port(bank_port, 20)
    with open(state / "kswitch.log", "wb") as log:
        switch = subprocess.Popen(perf_ratio.kswitch_command() + ["run", "--config", str(config)], stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        if not perf_ratio.wait_port(api, 90):
            raise SystemExit(f"kswitch did not listen; see {state / 'kswitch.log'}")
        for _ in range(100):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        yield switch, bank, api, admin
    finally:
        perf_ratio.stop(switch)
        perf_ratio.stop(bank)
        if pg:
            drop_schema(name)


def drop_schema(name: str) -> None:
    """The run's journal schema is the run's own: gone with it, so runs do not pile up in the test database."""
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def run(args: argparse.Namespace, state: Path) -> dict[str, object]:
    with started(args.template, args.pg, state) as (switch, _, api, _):
        perf_ratio.load(api, 2, args.conns, args.depth, HELLO)  # warm up
        spy = None
        if args.py_spy:  # records the measured window, writer process included, for bench/pyspy_stages.py
            spy = subprocess.Popen([py_spy(), "record", "--nonblocking", "-r", "250", "--format", "raw", "--threads",
                                    "--subprocesses", "-o", args.py_spy, "-d", str(int(args.seconds)),
                                    "-p", str(switch.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        states: dict[str, float] = {}
        sampler = threading.Thread(target=lambda: states.update(sample_states(switch.pid, args.seconds - 1)))
        before = all_times(switch.pid, args.pg)
        if args.states:
            sampler.start()
        out = perf_ratio.load(api, args.seconds, args.conns, args.depth, HELLO)
        after = all_times(switch.pid, args.pg)
        if spy is not None:
            spy.wait()
        if args.states:
            sampler.join()
        n = int(out["n"]) or 1
        return {"tps": out["tps"], "n": n, "errors": out["errors"],
                "us_per_auth_user_sys": per_auth(before, after, switch.pid, n)} | ({"states": states} if states else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--pg", action="store_true")
    parser.add_argument("--template", help="kswitch config template, as perf_ratio's --template")
    parser.add_argument("--states", action="store_true", help="also sample the reactor's and writer's states")
    parser.add_argument("--py-spy", metavar="FILE", help="also record the measured seconds with py-spy (raw format)")
    parser.add_argument("--both", nargs=2, metavar=("TREE_A", "TREE_B"),
                        help="measure two trees at the same time, each run from its tree with it first on the path")
    args = parser.parse_args()
    if args.both:
        forwarded = [arg for arg in sys.argv[1:] if arg not in args.both and arg != "--both"]
        for _ in range(args.runs):
            results: dict[str, str] = {}

            def one(tree: str) -> None:
                env = {**os.environ, "PYTHONPATH": tree}
                command = [sys.executable, str(Path(__file__).resolve()), *forwarded, "--runs", "1"]
                done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
                results[tree] = (done.stdout.strip().splitlines() or [done.stderr.strip()[-300:]])[-1]

            threads = [threading.Thread(target=one, args=(tree,)) for tree in args.both]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for tree in args.both:
                print(f"{tree} {results[tree]}", flush=True)
        return
    scratch = Path(tempfile.mkdtemp(prefix="kcpu-"))
    try:
        for index in range(args.runs):
            print(json.dumps(run(args, scratch / f"k{index}")), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
