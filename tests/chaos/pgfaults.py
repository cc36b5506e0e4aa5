"""PostgreSQL ending a switch's journal connections under load, as a failover or an operator's
``pg_terminate_backend`` does: a fault of the journal's database, not of the switch's processes.

Only the connections of the switch under test are ended, found by their client ports: the TCP
sockets its processes hold to the server, read from ``/proc``. Other tests sharing the server
(the suite runs beside PostgreSQL tests of its own) keep theirs.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

WRITER = "kswitch-journal-writer"
"""The application name of the journal writer's connections (`switch.journal.postgres`)."""


def client_ports(pids: list[int], server_port: int) -> list[int]:
    """The local ports of the TCP connections the processes ``pids`` hold to ``server_port`` on loopback."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports


def terminate_backends(dsn: str, pids: list[int], writer_only: bool) -> int:
    """End the server processes serving the journal connections of ``pids`` (only the writer's when
    ``writer_only``); the number ended."""
    import psycopg

    ports = client_ports(pids, urlsplit(dsn).port or 5432)
    if not ports:
        return 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE client_port = ANY(%s) AND pid <> pg_backend_pid() AND (NOT %s OR application_name = %s)",
            (ports, writer_only, WRITER),
        ).fetchall()
    return sum(1 for (ended,) in rows if ended)
