"""The `searchkit` command line: the root group, the commands of every group registered on it, and the entry point.

Every command has a one-line Python equivalent (given in its help) and no logic the API lacks. Errors print one line
on stderr and exit 1 (``--debug`` shows the traceback).

The root group loads a command's module only when that command runs or shows its own help (click's documented
lazy-loading group): each command module imports the library it drives at its top, so ``searchkit --help`` imports
none of it (no numpy, no torch) and stays instant. :data:`COMMANDS` lists them with their one-line help; a test
checks that the two never drift apart.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

import click

from searchkit.types import SearchkitError
from searchkit.version import __version__

logger = logging.getLogger("searchkit")


class LazyCommand(NamedTuple):
    """Where a command lives (module, attribute) and its one-line help, shown by ``searchkit --help``."""

    module: str
    attribute: str
    short_help: str


COMMANDS = {
    "compare": LazyCommand(
        "searchkit.cli.eval", "compare_command", "Compare TREC runs against a baseline run, with p-values."
    ),
    "eval": LazyCommand(
        "searchkit.cli.eval", "eval_command", "Run an evaluation suite and compare with its expected scores."
    ),
    "feedback": LazyCommand(
        "searchkit.cli.feedback", "feedback", "Read a serve feedback log: stats, or training pairs (export)."
    ),
    "fit-fusion": LazyCommand(
        "searchkit.cli.train", "fit_fusion_command", "Fit a trained reranker's learned fusion on its dev queries."
    ),
    "fuse": LazyCommand("searchkit.cli.runs", "fuse_command", "Fuse TREC run files (RRF, convex, CombSUM, CombMNZ)."),
    "index": LazyCommand("searchkit.cli.index", "index", "Build, inspect, update and verify index folders."),
    "push": LazyCommand("searchkit.cli.hub", "push_command", "Upload a trained model folder to the Hugging Face Hub."),
    "rerank": LazyCommand(
        "searchkit.cli.runs", "rerank_command", "Rerank any TREC run's candidates with a cross-encoder."
    ),
    "run": LazyCommand("searchkit.cli.search", "run_command", "Search a query set and write a TREC run file."),
    "score": LazyCommand("searchkit.cli.eval", "score_command", "Score a TREC run against qrels."),
    "search": LazyCommand("searchkit.cli.search", "search_command", "Search an index for one query."),
    "serve": LazyCommand("searchkit.cli.serve", "serve_command", "Serve an index over HTTP, with a search page."),
    "train": LazyCommand(
        "searchkit.cli.train", "train_command", "Fine-tune a reranker or a bi-encoder as a recipe says."
    ),
}


class LazyGroup(click.Group):
    """A click group whose commands (:data:`COMMANDS`) are imported when they are used, not to list them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command: click.Command = getattr(importlib.import_module(entry.module), entry.attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, entry.short_help) for name, entry in sorted(COMMANDS.items())])


def progress_default() -> bool:
    """Progress bars by default when stderr is a terminal."""
    return sys.stderr.isatty()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(version=__version__, prog_name="searchkit")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: when stderr is a terminal).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int, progress: bool | None) -> None:
    """searchkit: BM25 + dense retrieval, fusion, reranking and IR evaluation."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Our own bars cover the long work; transformers' per-load "Loading weights" bars are noise in a CLI.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    ctx.obj = {"debug": debug, "progress": progress_default() if progress is None else progress}


# ---------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: SearchkitError and bad-file errors become one line on stderr and exit code 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="searchkit", standalone_mode=False)
    except click.exceptions.Exit as stop:
        sys.exit(stop.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code if err.exit_code != 1 else 2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        if debug:
            raise
        click.echo("interrupted", err=True)
        sys.exit(130)
    except (SearchkitError, OSError) as err:
        if debug:
            raise
        click.echo(f"error: {err}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
