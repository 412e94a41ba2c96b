"""`mailroom bench`: the figures our speed and memory goals are measured by.

- render: µs per message of the renderer alone (one core, a ~10 KB template);
- pipeline: a real campaign through every service in one process, RabbitMQ, PostgreSQL and
  Postfix's smtp-sink (or aiosmtpd where smtp-sink is missing): messages/s end to end and the
  services' peak resident memory.
"""

from __future__ import annotations

from typing import Any

from mailroom_common.rendering.benchmark import measure

from mailroom.demo import demo_settings, run_campaign


def run_bench(recipients: int) -> dict[str, Any]:
    render = measure(2000)
    settings = demo_settings(database="mailroom_bench", prefix="mailroom-bench")
    final = run_campaign(settings, recipients)
    if final is None:
        raise RuntimeError("PostgreSQL or RabbitMQ cannot be reached")
    sent = final["counts"].get("sent", 0)
    return {
        "recipients": recipients,
        "status": final["status"],
        "sent": sent,
        "seconds": round(final["seconds"], 2),
        "messages_per_second": round(sent / final["seconds"], 1) if final["seconds"] else None,
        "peak_rss_mib": round(final["peak_rss_mib"], 1) if final["peak_rss_mib"] else None,
        "render": render,
    }
