"""Running the real `mailroom` command in a subprocess, as an operator would."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.support.environment import ROOT


async def run_mailroom(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`mailroom ARGS` with `env` (an installation's MAILROOM_* variables) on top of ours;
    wide columns so nothing a test reads is wrapped; never blocks the event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mailroom", *map(str, args)],
        env={**os.environ, **env, "COLUMNS": "200"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
