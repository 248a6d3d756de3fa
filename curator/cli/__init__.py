"""The ``curator`` command line: a thin Typer layer over library calls.

Commands: ``run``, one group per stage (``curator ingest pipeline.yaml`` runs it; groups
may carry extra subcommands such as ``curator dedup report``), ``release``, ``query``,
``sources``, ``env``, ``demo``; capability modules add theirs through :data:`EXTENSIONS`.
"""

from __future__ import annotations

import importlib
import inspect
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
    "curator.cli.gc",
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


def _reflow(doc: str | None) -> str | None:
    """A docstring's paragraphs on one line each: rich keeps a paragraph's line breaks after the
    first, so a docstring wrapped at 100 columns printed ragged at the terminal's width."""
    if not doc:
        return doc
    paras = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") or "\n " in p else " ".join(p.split("\n")) for p in paras)


def _reflow_help(t: typer.Typer) -> None:
    """Every command's help paragraphs reflowed (:func:`_reflow`), in ``t`` and its sub-apps."""
    for cmd in t.registered_commands:
        if cmd.callback is not None and cmd.help is None:
            cmd.callback.__doc__ = _reflow(cmd.callback.__doc__)
        cmd.help = _reflow(cmd.help)
    for group in t.registered_groups:
        group.help = _reflow(group.help) if isinstance(group.help, str) else group.help
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_register()
_reflow_help(app)


def main() -> None:
    import sys

    stop_on_sigterm()
    args = debug_first(sys.argv[1:])  # `--debug` is global, and accepted after the command too
    remember_args(args)
    app(args=args)
