"""``python -m tests.chaos.check HISTORY.json``: run the checkers on a written history.

The same checkers ``tests.chaos.run`` ends with, on the JSON alone (no database, no server):
exit 0 when every one passes, 1 otherwise; ``--json`` prints the verdicts and figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tests.chaos import checkers
from tests.chaos.history import load


@click.command()
@click.argument("history", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print verdicts and figures as JSON.")
def main(history: Path, as_json: bool) -> None:
    """Judge a chaos run's history."""
    doc = load(history)
    verdicts = checkers.check(doc)
    if as_json:
        click.echo(json.dumps({"figures": checkers.figures(doc),
                               "verdicts": [v.as_dict() for v in verdicts]}))
    else:
        click.echo(json.dumps(checkers.figures(doc)))
        click.echo("\n".join(checkers.verdict_lines(verdicts)))
    sys.exit(0 if all(v.ok for v in verdicts) else 1)


if __name__ == "__main__":
    main()
