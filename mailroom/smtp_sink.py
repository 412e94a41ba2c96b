"""A discarding SMTP server for the demo where Postfix's smtp-sink is not installed."""

from __future__ import annotations

import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Discard:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


def main() -> None:
    port = int(sys.argv[1])
    controller = Controller(Discard(), hostname="127.0.0.1", port=port)
    controller.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
