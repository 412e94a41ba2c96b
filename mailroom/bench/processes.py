"""The service processes of a run: `mailroom run all` (single), or one `mailroom run NAME`
per service with K outbound_sender replicas (separate); each with its own free ops port
(/readyz, /metrics) and a free public port.
Their CPU time and peak resident memory are read from /proc (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mailroom.bench.options import Layout
from mailroom.local_processes import cpu_seconds, free_port, peak_rss_mib
from mailroom.services import SERVICES


def plan(layout: Layout, sender_replicas: int) -> list[tuple[str, list[str]]]:
    """(label, services) of each process to start."""
    if layout == "single":
        return [("all", ["all"])]
    processes: list[tuple[str, list[str]]] = []
    for name in SERVICES:
        if name == "outbound_sender":
            processes += [
                (f"outbound_sender#{i + 1}" if sender_replicas > 1 else name, [name])
                for i in range(sender_replicas)
            ]
        else:
            processes.append((name, [name]))
    return processes


@dataclass
class ServiceProcess:
    label: str
    services: list[str]
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def sends(self) -> bool:
        return "outbound_sender" in self.services or self.services == ["all"]

    def metrics(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Samples of this process's /metrics: name -> labels -> value ({} if unreachable)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return {}
        found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                found.setdefault(sample.name, {})[labels] = sample.value
        return found

    def ready(self) -> bool:
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200


class ServiceProcesses:
    """Starts the processes of a layout, and always stops them (`with`)."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.running: list[ServiceProcess] = []

    def __enter__(self) -> ServiceProcesses:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self, layout: Layout, sender_replicas: int, timeout: float = 120) -> None:
        for label, services in plan(layout, sender_replicas):
            port = free_port()
            log = self.workdir / f"{label.replace('#', '-')}.log"
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [sys.executable, "-m", "mailroom", "run", *services],
                    env={
                        **os.environ,
                        **self.env,
                        "MAILROOM_OPS_PORT": str(port),
                        "MAILROOM_HTTP_PORT": "0",
                    },
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self.running.append(ServiceProcess(label, services, process, port, log))
        deadline = time.monotonic() + timeout
        waiting = list(self.running)
        while waiting:
            for service in list(waiting):
                if service.process.poll() is not None:
                    raise RuntimeError(f"{service.label} exited at start; see {service.log}")
                if service.ready():
                    waiting.remove(service)
            if time.monotonic() > deadline:
                names = ", ".join(s.label for s in waiting)
                raise RuntimeError(f"not ready in {timeout:.0f} s: {names}; see {self.workdir}")
            time.sleep(0.2)

    def dead(self) -> list[ServiceProcess]:
        return [s for s in self.running if s.process.poll() is not None]

    def cpu(self) -> dict[str, float]:
        return {s.label: cpu_seconds(s.pid) or 0.0 for s in self.running}

    def peak_rss(self) -> dict[str, float]:
        return {s.label: peak_rss_mib(s.pid) or 0.0 for s in self.running}

    def counter(self, name: str, **labels: str) -> float:
        """A counter summed over every process (samples whose labels include `labels`)."""
        total = 0.0
        for service in self.running:
            for sample_labels, value in service.metrics().get(name, {}).items():
                if set(labels.items()) <= set(sample_labels):
                    total += value
        return total

    def gauges(self, name: str) -> list[float]:
        """The samples of a gauge, one per process (and label set) that reports it."""
        return [v for s in self.running for v in s.metrics().get(name, {}).values()]

    def broker_messages(self) -> dict[str, float]:
        """Broker messages the processes consumed, by queue (every outcome)."""
        by_queue: dict[str, float] = {}
        for service in self.running:
            samples = service.metrics().get("mailroom_broker_messages_total", {})
            for labels, value in samples.items():
                queue = dict(labels).get("queue", "?")
                by_queue[queue] = by_queue.get(queue, 0.0) + value
        return by_queue

    def stop(self, timeout: float = 60) -> None:
        for service in self.running:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for service in self.running:
            try:
                service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
