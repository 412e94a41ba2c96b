"""The report of a run: one flat dictionary of figures (--json), and the table of them."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from mailroom.bench.audience import ImportFigures
from mailroom.bench.bare_smtp import BareFigures
from mailroom.bench.database import STAT_COLUMNS, CampaignTimings
from mailroom.bench.options import BenchOptions


def per(value: float, count: int, scale: int = 1) -> float | None:
    return value / count * scale if count else None


def service_figures(
    cpu_before: dict[str, float], cpu_after: dict[str, float], rss: dict[str, float], sent: int
) -> list[dict[str, Any]]:
    """CPU of each process between launch and completion, per 1,000 messages sent."""
    rows = []
    for label, after in cpu_after.items():
        seconds = after - cpu_before.get(label, 0.0)
        rows.append(
            {
                "process": label,
                "cpu_seconds": round(seconds, 2),
                "cpu_seconds_per_1000": _round(per(seconds, sent, 1000), 3),
                "peak_rss_mib": round(rss.get(label, 0.0), 1),
            }
        )
    return rows


def database_figures(
    before: dict[str, int], after: dict[str, int], watcher_transactions: int, sent: int
) -> dict[str, Any]:
    delta = {k: after[k] - before[k] for k in STAT_COLUMNS}
    delta["xact_commit"] -= watcher_transactions
    figures: dict[str, Any] = {k: v for k, v in delta.items()}
    figures["watcher_transactions_excluded"] = watcher_transactions
    for key in ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted"):
        figures[f"{key}_per_message"] = _round(per(delta[key], sent), 3)
    return figures


def backend_figures(before: dict[int, float], after: dict[int, float], sent: int) -> dict[str, Any]:
    """CPU of the PostgreSQL processes serving the run's database (a process that ended during
    the run is missed: the services' pools keep theirs open)."""
    if not after:
        return {"backends": 0, "backend_cpu_seconds": None, "backend_cpu_seconds_per_1000": None}
    seconds = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return {
        "backends": len(after),
        "backend_cpu_seconds": round(seconds, 2),
        "backend_cpu_seconds_per_1000": _round(per(seconds, sent, 1000), 3),
    }


def broker_figures(
    before: dict[str, float], after: dict[str, float], recipients: int, prefix: str = ""
) -> dict[str, Any]:
    """Messages consumed by queue (named without the run's prefix), and per recipient."""
    by_queue = {
        q.removeprefix(f"{prefix}."): int(after[q] - before.get(q, 0.0)) for q in sorted(after)
    }
    by_queue = {q: n for q, n in by_queue.items() if n}
    total = sum(by_queue.values())
    return {
        "consumed": total,
        "consumed_per_recipient": _round(per(total, recipients), 4),
        "by_queue": by_queue,
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def report(
    options: BenchOptions,
    *,
    run: dict[str, Any],
    imported: ImportFigures,
    timings: CampaignTimings,
    bare: BareFigures,
    services: list[dict[str, Any]],
    database: dict[str, Any],
    broker: dict[str, Any],
    render: dict[str, float],
) -> dict[str, Any]:
    rate = timings.messages_per_second
    return {
        "recipients": options.recipients,
        "processes": options.processes,
        "sender_replicas": options.sender_replicas,
        "pool": options.pool,
        "smtp_latency": options.smtp_latency,
        "dkim": options.dkim,
        **run,
        "import_rows": imported.rows,
        "import_subscribed": imported.subscribed,
        "import_seconds": round(imported.seconds, 2),
        "import_rows_per_second": round(imported.rows_per_second, 1),
        "status": timings.status,
        "items": timings.items,
        "sent": timings.sent,
        "generate_seconds": _round(timings.generate_seconds, 2),
        "generate_items_per_second": _round(
            timings.items / timings.generate_seconds if timings.generate_seconds else None, 1
        ),
        "seconds": _round(timings.seconds, 2),
        "messages_per_second": _round(rate, 1),
        "p50_seconds": _round(timings.p50, 2),
        "p99_seconds": _round(timings.p99, 2),
        "bare_connections": options.bare_connections,
        "bare_messages": bare.messages,
        "bare_sent": bare.sent,
        "bare_seconds": round(bare.seconds, 2),
        "bare_messages_per_second": round(bare.messages_per_second, 1),
        "ratio_to_bare": _round(rate / bare.messages_per_second, 3)
        if rate and bare.messages_per_second
        else None,
        "cpu_seconds_per_1000": _round(
            per(sum(s["cpu_seconds"] for s in services), timings.sent, 1000), 3
        ),
        "services": services,
        "postgres": database,
        "broker": broker,
        "render": {k: round(v, 1) for k, v in render.items()},
    }


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def tables(figures: dict[str, Any]) -> list[Table]:
    main = Table(title=f"mailroom bench ({figures['processes']}, run {figures['run']})")
    main.add_column("figure")
    main.add_column("value", justify="right")
    nested = ("services", "postgres", "broker", "render")
    for key, value in figures.items():
        if key not in nested:
            main.add_row(key, _shown(value))
    for key, value in figures["postgres"].items():
        main.add_row(f"postgres {key}", _shown(value))
    broker = figures["broker"]
    main.add_row("broker consumed", _shown(broker["consumed"]))
    main.add_row("broker consumed per recipient", _shown(broker["consumed_per_recipient"]))
    for queue, count in broker["by_queue"].items():
        main.add_row(f"  {queue}", _shown(count))
    for key, value in figures["render"].items():
        main.add_row(f"renderer alone {key}", _shown(value))
    services = Table(title="service processes (CPU from launch to completion)")
    for column in ("process", "CPU s", "CPU s / 1,000 msgs", "peak RSS MiB"):
        services.add_column(column, justify="left" if column == "process" else "right")
    for row in figures["services"]:
        services.add_row(
            row["process"],
            _shown(row["cpu_seconds"]),
            _shown(row["cpu_seconds_per_1000"]),
            _shown(row["peak_rss_mib"]),
        )
    return [main, services]
