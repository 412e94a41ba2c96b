"""The progress bars of `mailroom contacts import` (on a terminal only)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mailroom.contacts_import import ImportProgress


class ImportBars(ImportProgress):
    """Reading and validating (bytes of the file), the merge (its steps), announcing."""

    def __init__(self, console: Console) -> None:
        self.bars = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ImportBars:
        self.bars.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.bars.stop()

    def _task(self, name: str, total: int) -> TaskID:
        if name not in self._tasks:
            self._tasks[name] = self.bars.add_task(name, total=total, detail="")
        return self._tasks[name]

    def reading(self, done_bytes: int, total_bytes: int) -> None:
        task = self._task("reading and validating", total_bytes)
        detail = f"{done_bytes / 1e6:.1f}/{total_bytes / 1e6:.1f} MB"
        self.bars.update(task, completed=done_bytes, detail=detail)

    def merging(self, step: str, done: int, total: int) -> None:
        task = self._task("merging", total)
        self.bars.update(task, completed=done, detail=step if done < total else "")

    def announcing(self, done: int, total: int) -> None:
        task = self._task("announcing new memberships", total)
        self.bars.update(task, completed=done, detail=f"{done:,}/{total:,}")
