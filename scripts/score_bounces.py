"""Score the bounce parser against the shared bounce corpus.

Usage::

    python scripts/score_bounces.py [--corpus DIR] [--out docs/bounce-parser-scores.md]
                                    [--json] [--verbose] [--baseline flufl]

For each source directory of the corpus (``<dir>/expected.json``) and in total it
computes the share of messages the parser gets right on

* ``is_bounce`` (every message),
* ``recipients`` (set equality, case-insensitive; only where the source states
  them and the message is a bounce),
* ``kind`` (only where the source states it).

``--baseline flufl`` scores flufl.bounce's ``all_failures`` alone instead
(bounce = any address found; kind = hard if any permanent, else soft).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    # Typed through protocols so that checking this script together with the
    # package's source tree does not make mypy see the package twice.
    class _Recipient(Protocol):
        @property
        def address(self) -> str: ...

    class _Report(Protocol):
        @property
        def is_bounce(self) -> bool: ...
        @property
        def kind(self) -> str | None: ...
        @property
        def recipients(self) -> tuple[_Recipient, ...]: ...

    def parse_bounce(raw: bytes) -> _Report: ...

else:
    from mailroom_bounce_processor.parser import parse_bounce

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpora" / "bounces"
DEFAULT_OUT = REPO / "docs" / "bounce-parser-scores.md"
METRICS = ("is_bounce", "recipients", "kind")


@dataclass(frozen=True)
class Prediction:
    is_bounce: bool
    recipients: frozenset[str]
    kind: str | None


Parser = Callable[[bytes], Prediction]


@dataclass
class Figure:
    right: int = 0
    total: int = 0

    @property
    def share(self) -> float:
        return self.right / self.total if self.total else 1.0


@dataclass
class SourceScore:
    name: str
    files: int = 0
    figures: dict[str, Figure] = field(default_factory=lambda: {m: Figure() for m in METRICS})
    misses: list[str] = field(default_factory=list)


def parse_with_mailroom(raw: bytes) -> Prediction:
    report = parse_bounce(raw)
    return Prediction(
        report.is_bounce,
        frozenset(r.address.lower() for r in report.recipients),
        report.kind if report.kind in ("hard", "soft") else None,
    )


def parse_with_flufl(raw: bytes) -> Prediction:
    from email import message_from_bytes, policy

    from flufl.bounce import all_failures

    try:
        msg = message_from_bytes(raw, policy=policy.compat32)
        temporary, permanent = all_failures(msg)
    except Exception:
        return Prediction(False, frozenset(), None)

    def decode(items: frozenset[bytes]) -> set[str]:
        return {i.decode("ascii", "replace").lower() for i in items}

    temp, perm = decode(temporary), decode(permanent)
    kind = "hard" if perm else ("soft" if temp else None)
    return Prediction(bool(temp or perm), frozenset(temp | perm), kind)


def score_source(directory: Path, parser: Parser) -> SourceScore:
    expected: dict[str, dict[str, object]] = json.loads(
        (directory / "expected.json").read_text(encoding="utf-8")
    )
    result = SourceScore(directory.name)
    for name in sorted(expected):
        exp = expected[name]
        path = directory / name
        if not path.is_file():
            continue
        result.files += 1
        pred = parser(path.read_bytes())
        figures = result.figures
        figures["is_bounce"].total += 1
        if pred.is_bounce == exp["is_bounce"]:
            figures["is_bounce"].right += 1
        else:
            result.misses.append(f"{name}: is_bounce {pred.is_bounce}, expected {exp['is_bounce']}")
        exp_rcpts = exp.get("recipients")
        if exp["is_bounce"] and isinstance(exp_rcpts, list):
            figures["recipients"].total += 1
            want = frozenset(str(a).lower() for a in exp_rcpts)
            if pred.recipients == want:
                figures["recipients"].right += 1
            else:
                result.misses.append(
                    f"{name}: recipients {sorted(pred.recipients)}, expected {sorted(want)}"
                )
        exp_kind = exp.get("kind")
        if exp_kind is not None:
            figures["kind"].total += 1
            if pred.kind == exp_kind:
                figures["kind"].right += 1
            else:
                result.misses.append(f"{name}: kind {pred.kind}, expected {exp_kind}")
    return result


def score_corpus(corpus: Path, parser: Parser = parse_with_mailroom) -> list[SourceScore]:
    sources = sorted(p for p in corpus.iterdir() if (p / "expected.json").is_file())
    return [score_source(p, parser) for p in sources]


def total(scores: list[SourceScore]) -> SourceScore:
    overall = SourceScore("total")
    for s in scores:
        overall.files += s.files
        for m in METRICS:
            overall.figures[m].right += s.figures[m].right
            overall.figures[m].total += s.figures[m].total
    return overall


def _cell(fig: Figure) -> str:
    if not fig.total:
        return "–"
    return f"{fig.share:.1%} ({fig.right}/{fig.total})"


def markdown(scores: list[SourceScore], title: str, baseline: list[SourceScore] | None) -> str:
    lines = [
        f"# {title}",
        "",
        "Generated by `scripts/score_bounces.py` against `shared/corpora/bounces/`.",
        "is_bounce: every message; recipients: set equality (case-insensitive) where the",
        "source states them for a bounce; kind: hard/soft where the source states it.",
        "",
        "| source | files | is_bounce | recipients | kind |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in [*scores, total(scores)]:
        name = f"**{s.name}**" if s.name == "total" else s.name
        cells = " | ".join(_cell(s.figures[m]) for m in METRICS)
        lines.append(f"| {name} | {s.files} | {cells} |")
    if baseline is not None:
        lines += [
            "",
            "## flufl.bounce alone (baseline)",
            "",
            "`flufl.bounce.all_failures`: bounce = any address found; kind = hard if any",
            "permanent failure, else soft.",
            "",
            "| source | files | is_bounce | recipients | kind |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in [*baseline, total(baseline)]:
            name = f"**{s.name}**" if s.name == "total" else s.name
            cells = " | ".join(_cell(s.figures[m]) for m in METRICS)
            lines.append(f"| {name} | {s.files} | {cells} |")
    misses = [f"- `{s.name}/{miss}`" for s in scores for miss in s.misses]
    lines += [
        "",
        "Most remaining misses are places where the sources disagree with each other",
        "or with RFC 3464 (see the corpus README): delay warnings (`Action: delayed`,",
        '"will be retried") are reported as soft/delayed here, while sisimai gives them',
        "its internal 5.0.9xx pseudo status (hard) and Mail::DeliveryStatus::BounceParser",
        "calls them non-bounces; final failures with a 4.x.x status are soft under the",
        'status-class rule where flufl.bounce lists them as permanent; "retry timeout',
        'exceeded" without a code is hard here (sisimai says soft for some MTAs, hard for',
        "others).",
    ]
    lines += ["", f"## Misses ({len(misses)})", ""]
    lines += misses or ["None."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--verbose", "-v", action="store_true", help="list the misses on stderr")
    ap.add_argument(
        "--baseline",
        choices=["none", "flufl"],
        default="none",
        help="score flufl.bounce alone instead of the Mailroom parser",
    )
    ap.add_argument(
        "--with-baseline",
        action="store_true",
        help="also score flufl.bounce alone and add it to the Markdown",
    )
    args = ap.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"corpus not found: {args.corpus}", file=sys.stderr)
        return 2
    parser = parse_with_flufl if args.baseline == "flufl" else parse_with_mailroom
    scores = score_corpus(args.corpus, parser)
    baseline = score_corpus(args.corpus, parse_with_flufl) if args.with_baseline else None
    title = (
        "flufl.bounce alone: bounce corpus scores"
        if args.baseline == "flufl"
        else "Bounce parser scores"
    )
    text = markdown(scores, title, baseline)
    if args.json:
        print(
            json.dumps(
                {
                    s.name: {
                        "files": s.files,
                        **{
                            m: asdict(s.figures[m]) | {"share": round(s.figures[m].share, 4)}
                            for m in METRICS
                        },
                    }
                    for s in [*scores, total(scores)]
                },
                indent=2,
            )
        )
    else:
        print(text)
    if args.verbose:
        for s in scores:
            for miss in s.misses:
                print(f"{s.name}/{miss}", file=sys.stderr)
    if args.out and str(args.out) != "-":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
