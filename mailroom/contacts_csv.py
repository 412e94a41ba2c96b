"""Read a contacts CSV: the header, then one record per good line, bad lines reported.

A file that cannot be imported as a whole is refused (`ImportRefused`): not UTF-8 text, no
header naming an `email` column, a column named twice, more than MAX_COLUMNS columns. A bad
line is reported with its number and reason and skipped: an invalid address, more fields
than the header, a NUL character, a field over MAX_FIELD_BYTES, a line that is not CSV.

Records stream (nothing is kept per row): `(line, address, lower-cased address,
first_name, last_name, *attributes)`, a field None where the line has fewer fields than
the header. Addresses are ASCII: str.lower() is PostgreSQL's lower() of them (checked).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO

from mailroom_common.addresses import AddressProblem, checked_address

KNOWN_COLUMNS = ("email", "first_name", "last_name")
MAX_FIELD_BYTES = 10 * 1024
MAX_COLUMNS = 100
MAX_COLUMN_NAME = 100  # characters
# no line of a good file is longer; a longer one is not read into memory
MAX_LINE_BYTES = MAX_COLUMNS * (MAX_FIELD_BYTES + 3)
_LONG_LINE = "\x00mailroom: line too long\x00"  # stands for the part of a line not read
LIMITS = f"{MAX_FIELD_BYTES // 1024} KB a field, {MAX_COLUMNS} columns"
# a record this long in all might hold a field over MAX_FIELD_BYTES: look closer
_LOOK_CLOSER = MAX_FIELD_BYTES // 4
PROGRESS_EVERY = 5000  # records

Record = tuple[str | int | None, ...]


class ImportRefused(ValueError):
    """The whole file is refused; nothing was written. The message says why, for a person."""


@dataclass(frozen=True)
class Layout:
    """What the header says: the columns, and where each part of a contact is."""

    names: list[str]
    attributes: list[str]  # the other named columns, in the file's order
    pick: Callable[[list[str | None]], tuple[str | None, ...]]  # first, last, *attributes
    email: int


def _text_lines(handle: BinaryIO, path: Path) -> Iterator[str]:
    """The file's lines as text, one per physical line (so the CSV reader's line numbers
    are the file's); a line over MAX_LINE_BYTES is cut short, not read into memory."""
    number = 0
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield _LONG_LINE + "\n"
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ImportRefused(
                f"{path}: not UTF-8 text (line {number}, byte {raw[error.start]:#04x} at"
                f" column {error.start + 1}); save the file as CSV in UTF-8 and import it again"
            ) from None
        yield line.removeprefix("\ufeff") if number == 1 else line


def _columns(header: list[str], path: Path) -> list[str]:
    if _LONG_LINE in header:
        raise ImportRefused(f"{path}: the header line is over {MAX_LINE_BYTES} bytes")
    names = [name.strip().lower() for name in header]
    if len(names) > MAX_COLUMNS:
        raise ImportRefused(
            f"{path}: the header names {len(names)} columns; the limit is {MAX_COLUMNS}"
        )
    for name in names:
        if len(name) > MAX_COLUMN_NAME or "\x00" in name:
            raise ImportRefused(
                f"{path}: a column name in the header is over {MAX_COLUMN_NAME} characters or"
                " holds a NUL character"
            )
    twice = [name for name, count in Counter(n for n in names if n).items() if count > 1]
    if twice:
        where = ", ".join(str(i + 1) for i, n in enumerate(names) if n == twice[0])
        raise ImportRefused(
            f"{path}: the header names column {twice[0]!r} more than once (columns {where});"
            " name each column once"
        )
    if "email" not in names:
        raise ImportRefused(f"{path}: the first line must name the columns, one of them 'email'")
    return names


def _layout(names: list[str]) -> Layout:
    attributes = [n for n in names if n and n not in KNOWN_COLUMNS]
    # a column the header lacks reads as the (None) field one past the last
    missing = len(names)
    indexes = [names.index(n) if n in names else missing for n in ("first_name", "last_name")] + [
        names.index(n) for n in attributes
    ]
    pick = itemgetter(*indexes)
    return Layout(names, attributes, pick, names.index("email"))


def _problem(names: list[str], fields: list[str]) -> str | None:
    """Why this record cannot be imported, or None."""
    if _LONG_LINE in fields:
        return f"the line is over {MAX_LINE_BYTES} bytes (limits: {LIMITS})"
    if len(fields) > len(names):
        return "more fields than the header names"
    for name, value in zip(names, fields, strict=False):
        if "\x00" in value:
            return f"field {name!r} holds a NUL character"
        if len(value) > MAX_FIELD_BYTES // 4 and len(value.encode()) > MAX_FIELD_BYTES:
            return f"field {name!r} is over {MAX_FIELD_BYTES} bytes (limits: {LIMITS})"
    return None


def _csv_problem(error: csv.Error) -> str:
    if "field larger than field limit" in str(error):
        return f"a field is over {MAX_FIELD_BYTES} bytes (limits: {LIMITS})"
    return f"not readable as CSV: {error}"


class ContactsCsv:
    """One pass over the file: `layout` once the header is read, then `records()`."""

    def __init__(
        self,
        handle: BinaryIO,
        path: Path,
        bad_rows: list[tuple[int, str]],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.handle = handle
        self.path = path
        self.bad_rows = bad_rows
        self.progress = progress  # called with the bytes read so far, now and then
        self.records_read = 0  # good records
        self._reader = csv.reader(_text_lines(handle, path))
        try:
            header = next(self._reader)
        except StopIteration:
            raise ImportRefused(f"{path}: the file is empty") from None
        except csv.Error as error:
            raise ImportRefused(f"{path}: the header line: {_csv_problem(error)}") from None
        self.layout = _layout(_columns(header, path))

    def records(self) -> Iterator[Record]:
        reader, bad_rows, progress = self._reader, self.bad_rows, self.progress
        names = self.layout.names
        width = len(names)
        pad = [None] * (width + 1)
        pick, email = self.layout.pick, self.layout.email
        strip = str.strip
        countdown = PROGRESS_EVERY
        while True:
            line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                bad_rows.append((line, _csv_problem(error)))
                continue
            if not fields:
                continue  # a blank line
            joined = "".join(fields)
            if len(fields) > width or len(joined) > _LOOK_CLOSER or "\x00" in joined:
                problem = _problem(names, fields)
                if problem is not None:
                    bad_rows.append((line, problem))
                    continue
            values: list[str | None] = list(map(strip, fields))
            values += pad[len(fields) :]
            given = values[email]
            try:
                address = checked_address(given or "")
            except AddressProblem as error:
                bad_rows.append((line, f"invalid email {given or ''!r}: {error}"))
                continue
            self.records_read += 1
            yield (line, address, address.lower(), *pick(values))
            countdown -= 1
            if not countdown and progress is not None:
                countdown = PROGRESS_EVERY
                progress(self.handle.tell())
        if progress is not None:
            progress(self.handle.tell())
