"""``checkpoint-bench``: the auditors' benchmarks, one subcommand per module.

Any module in this package that defines ``COMMAND = "name"``, ``add_arguments(parser)`` and
``run(args) -> int`` is a subcommand; its module docstring's first line is its help.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable
from types import ModuleType

import benchmarks


def discover() -> dict[str, ModuleType]:
    """The subcommand modules of this package, by command name."""
    commands: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name in {"cli", "__main__"}:
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        name = getattr(module, "COMMAND", None)
        if not isinstance(name, str):
            continue
        missing = [f for f in ("add_arguments", "run") if not callable(getattr(module, f, None))]
        if missing:  # a module being written: the other subcommands still work
            print(f"checkpoint-bench: benchmarks.{info.name} lacks {', '.join(missing)}; '{name}' skipped",
                  file=sys.stderr)
            continue
        commands[name] = module
    return commands


def build_parser(commands: dict[str, ModuleType]) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per discovered command."""
    parser = argparse.ArgumentParser(prog="checkpoint-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in sorted(commands):
        module = commands[name]
        summary = (module.__doc__ or name).strip().splitlines()[0]
        command_parser = sub.add_parser(name, help=summary, description=module.__doc__)
        module.add_arguments(command_parser)
    return parser


def script_main(doc: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int], argv: list[str] | None = None) -> int:
    """A subcommand module run as a script, on its own: its parser, described by the first line of ``doc`` (the
    module's docstring), filled by its ``add_arguments``; then its ``run``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``checkpoint-bench``."""
    commands = discover()
    args = build_parser(commands).parse_args(argv)
    return int(commands[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
