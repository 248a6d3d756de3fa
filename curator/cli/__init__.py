"""The ``curator`` command line: a thin Typer layer over library calls.

Commands: ``run``, one group per stage (``curator ingest pipeline.yaml`` runs it; groups
may carry extra subcommands such as ``curator dedup report``), ``release``, ``query``,
``sources``, ``env``, ``demo``; capability modules add theirs through :data:`EXTENSIONS`.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from curator.cli.common import debug_first, remember_args, setup_logging, stop_on_sigterm

app = typer.Typer(name="curator", no_args_is_help=True, add_completion=False,
                  help="Turn public 3D medical segmentation datasets into one versioned, queryable collection.",
                  pretty_exceptions_enable=False)

# Optional command modules: each defines register(app, groups) and keeps heavy imports inside commands.
EXTENSIONS = [
    "curator.cli.labels",
    "curator.cli.dedup",
    "curator.cli.export",
    "curator.cli.review",
    "curator.cli.eval",
    "curator.cli.report",
    "curator.cli.releases",
]


def _print_version(value: bool) -> None:
    if value:
        from curator import __version__
        from curator.envinfo import code_revision

        rev = code_revision()
        typer.echo(f"curator {__version__}" + (f" ({rev})" if rev else ""))
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="more log output")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    version: Annotated[bool, typer.Option("--version", help="print curator's version and exit",
                                          callback=_print_version, is_eager=True)] = False,
) -> None:
    setup_logging(verbose, debug)


def _register() -> None:
    from curator.cli import basic, stages

    groups = stages.register(app)
    basic.register(app, groups)
    for mod in EXTENSIONS:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        m.register(app, groups)


_register()


def main() -> None:
    import sys

    stop_on_sigterm()
    args = debug_first(sys.argv[1:])  # `--debug` is global, and accepted after the command too
    remember_args(args)
    app(args=args)
