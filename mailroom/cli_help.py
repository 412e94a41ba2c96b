"""Options that several commands share."""

from typing import Annotated

import typer

JSON_HELP = "Print JSON (for scripts) instead of text or a table."
# the --json flag of every command that has one
JsonFlag = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
