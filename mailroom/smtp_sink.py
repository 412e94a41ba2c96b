"""A discarding SMTP server for the demo and the benchmark: Postfix's smtp-sink where it is
installed, else aiosmtpd (`python -m mailroom.smtp_sink PORT [LATENCY [THROTTLE_ABOVE]]`).

A latency makes the server wait that many seconds per message: smtp-sink's `-w` delays its
reply to DATA (whole seconds only), the aiosmtpd fallback delays its reply to the message's
end. Either way every message costs the client one wait.

A throttle (aiosmtpd only) answers MAIL with "421 4.7.0 Try again later" while the server
has taken THROTTLE_ABOVE transactions in the last second, as a relay enforcing a rate does.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

THROTTLED = "421 4.7.0 Try again later"


class RateWindow:
    """Admits at most `per_second` transactions in any sliding second; counts the others."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self.admitted: deque[float] = deque()
        self.refused = 0

    def admit(self) -> bool:
        now = time.monotonic()
        while self.admitted and self.admitted[0] <= now - 1:
            self.admitted.popleft()
        if len(self.admitted) >= self.per_second:
            self.refused += 1
            return False
        self.admitted.append(now)
        return True


class Discard:
    def __init__(self, latency: float = 0.0, throttle_above: int = 0) -> None:
        self.latency = latency
        self.window = RateWindow(throttle_above) if throttle_above > 0 else None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.window is not None and not self.window.admit():
            return THROTTLED
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.latency:
            await asyncio.sleep(self.latency)
        return "250 OK"


def postfix_sink() -> str | None:
    found = shutil.which("smtp-sink")
    if found:
        return found
    return "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None


def sink_command(
    port: int, latency: float = 0.0, max_connections: int = 256, throttle_above: int = 0
) -> list[str]:
    """smtp-sink when it can do the latency asked for (whole seconds) and no throttle, else
    aiosmtpd."""
    sink = postfix_sink()
    if sink and float(latency).is_integer() and not throttle_above:
        delay = ["-w", str(int(latency))] if latency else []
        limit = ["-m", str(max(256, max_connections))]
        return [sink, "-u", "nobody", *delay, *limit, f"127.0.0.1:{port}", "1024"]
    command = [sys.executable, "-m", "mailroom.smtp_sink", str(port), str(latency)]
    return command + ([str(throttle_above)] if throttle_above else [])


def start_smtp_sink(
    port: int, latency: float = 0.0, max_connections: int = 256, throttle_above: int = 0
) -> subprocess.Popen[bytes]:
    """Start the sink on 127.0.0.1:port and wait until it accepts connections."""
    command = sink_command(port, latency, max_connections, throttle_above)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"the SMTP sink did not start: {' '.join(command)}")


def sink_name(process: subprocess.Popen[bytes]) -> str:
    args = process.args
    first = str(args[0]) if isinstance(args, list | tuple) else str(args)
    return "aiosmtpd" if first == sys.executable else "Postfix smtp-sink"


def main() -> None:
    port = int(sys.argv[1])
    latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    throttle_above = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    controller = Controller(Discard(latency, throttle_above), hostname="127.0.0.1", port=port)
    controller.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
