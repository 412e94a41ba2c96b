"""The audience: a CSV of N contacts imported the way an operator does it, with
`mailroom contacts import` in a process of its own, timed from start to exit."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

LIST_NAME = "bench-audience"


@dataclass(frozen=True)
class ImportFigures:
    rows: int  # data rows of the CSV
    subscribed: int  # memberships of the list afterwards
    seconds: float  # the command, start to exit (Python start-up and connecting included)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def write_audience(path: Path, count: int) -> None:
    plans = ("free", "pro", "team")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "last_name", "plan"])
        for i in range(count):
            writer.writerow([f"reader{i:07d}@example.com", f"Reader{i}", "Bench", plans[i % 3]])


async def _subscribed(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM list_memberships m JOIN lists l ON l.id = m.list_id"
            " WHERE l.name = $1 AND m.status = 'subscribed'",
            LIST_NAME,
        )
        return count
    finally:
        await conn.close()


def import_audience(
    path: Path, rows: int, env: dict[str, str], database_url: str, log: Path
) -> ImportFigures:
    command = [sys.executable, "-m", "mailroom", "contacts", "import", str(path)]
    with log.open("wb") as output:
        started = time.perf_counter()
        result = subprocess.run(
            [*command, "--list", LIST_NAME],
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"mailroom contacts import failed ({result.returncode}); see {log}")
    subscribed = asyncio.run(_subscribed(database_url))
    return ImportFigures(rows=rows, subscribed=subscribed, seconds=seconds)
