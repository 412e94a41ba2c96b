"""`mailroom bench`: the figures our speed and memory goals are measured by (see run.py)."""

from mailroom.bench.options import BenchOptions
from mailroom.bench.run import BenchFailed, run_bench

__all__ = ["BenchFailed", "BenchOptions", "run_bench"]
