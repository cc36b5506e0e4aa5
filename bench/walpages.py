"""The pages a commit of the SQLite journal writes, by table and index, under perf_ratio's load.

Why: in the open loop a batch holds one or two writes, and each page a commit dirties is a frame the
writer process appends to the WAL (two `pwrite` calls, a 4 KiB copy and a checksum) before its
`fdatasync`. Which B-trees a payment touches therefore sets much of the writer's cost per commit, and
unlike CPU time on a shared machine the count does not drift. The script runs kswitch from a template
(as perf_ratio's --template) against perf_ratio's bank, offers ``--rate`` authorizations a second
(0: perf_ratio's closed loop), copies the journal and its WAL as the load ends, and prints, over the
commits since the WAL last restarted, the frames per commit and the pages per commit of each B-tree
(SQLite's ``dbstat``; page 1, the database header, is written whenever the file grows):

    PYTHONPATH=$PWD .tox/py3/bin/python bench/walpages.py --rate 900 --template bench/perf-template.toml
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sqlite3
import struct
import tempfile
from pathlib import Path

from cpu_per_auth import HELLO, perf_ratio, started  # beside this script; it finds perf_ratio

WAL_HEADER = struct.Struct(">IIIIIIII")
FRAME_HEADER = struct.Struct(">IIIIII")


def commits(wal: bytes) -> dict[tuple[int, int, int], list[int]]:
    """The page numbers each commit in ``wal`` wrote, by (salts, first frame): the frames of the WAL's
    current generation (its header's salts), each commit ending at a frame that gives the database's size.
    The key tells a commit seen in two copies of one generation."""
    if len(wal) < WAL_HEADER.size:
        return {}
    _, _, page_size, _, salt1, salt2, _, _ = WAL_HEADER.unpack_from(wal)
    done: dict[tuple[int, int, int], list[int]] = {}
    pages: list[int] = []
    first = WAL_HEADER.size
    offset = WAL_HEADER.size
    while offset + FRAME_HEADER.size + page_size <= len(wal):
        page, size_after, frame_salt1, frame_salt2, _, _ = FRAME_HEADER.unpack_from(wal, offset)
        if (frame_salt1, frame_salt2) != (salt1, salt2):
            break  # a frame of an earlier generation: the WAL restarted before it
        pages.append(page)
        offset += FRAME_HEADER.size + page_size
        if size_after:
            done[(salt1, salt2, first)] = pages
            pages, first = [], offset
    return done


def owners(database: Path) -> dict[int, str]:
    """Each page's B-tree and kind (``name:leaf``), from SQLite's dbstat; empty where SQLite lacks it."""
    with sqlite3.connect(database) as conn:
        try:
            rows = conn.execute("SELECT name, pageno, pagetype FROM dbstat").fetchall()
        except sqlite3.OperationalError:
            return {}
    return {page: f"{name}:{kind}" for name, page, kind in rows}


def tally(done: list[list[int]], owner: dict[int, str]) -> dict[str, float]:
    """Pages per commit of each B-tree, most first."""
    counts: collections.Counter[str] = collections.Counter()
    for pages in done:
        for page in set(pages):
            counts["header (page 1)" if page == 1 else owner.get(page, "free or new")] += 1
    return {name: round(count / len(done), 2) for name, count in counts.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=900.0, help="authorizations a second; 0: the closed loop")
    parser.add_argument("--seconds", type=int, default=6, help="the load's seconds; the WAL is copied after each")
    parser.add_argument("--template", help="kswitch config template, as perf_ratio's --template")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="kwal-"))
    try:
        with started(args.template, False, state / "k") as (_switch, _bank, api, _admin):
            rate = args.rate or None
            perf_ratio.load(api, 2, 8, 16, HELLO, rate=rate)  # warm up
            seen: dict[tuple[int, int, int], list[int]] = {}
            for _ in range(args.seconds):  # a WAL restarts every few dozen commits: one copy a second
                load = perf_ratio.load(api, 1, 8, 16, HELLO, rate=rate)
                for suffix in ("", "-wal"):
                    shutil.copyfile(state / "k" / f"journal.sqlite3{suffix}", state / f"copy.sqlite3{suffix}")
                seen.update(commits((state / "copy.sqlite3-wal").read_bytes()))
        done = list(seen.values())
        if not done:
            raise SystemExit("the WAL held no whole commit when the load ended")
        frames = sum(len(pages) for pages in done)
        print(json.dumps({"rate": args.rate, "last_second": load, "commits": len(done),
                          "frames_per_commit": round(frames / len(done), 2)}))
        for name, per_commit in tally(done, owners(state / "copy.sqlite3")).items():
            print(f"{per_commit:6.2f}  {name}")
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
