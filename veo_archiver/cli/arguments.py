"""What every command's arguments share: the provider names it accepts, the exit codes, the version.

One exit-code convention for every command, printed under ``veo-archiver --help`` and in the README:

- ``0``: done (an empty answer, "no dead letters", is an answer);
- ``1``: the command ran and the answer is a failure: not found, nothing matched, skipped, refused, not archived;
- ``2``: the command could not run: a usage error (argparse's own code), a configuration error, or a service it
  needs (Redis, the archive) that it cannot reach.
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata
from typing import Any

from veo_archiver.providers import NAMES

OK = 0
FOUND_PROBLEM = 1
CANNOT_RUN = 2

EXIT_CODES = (
    "exit codes: 0 done; 1 the command ran and found a failure (not found, nothing matched, refused, not archived);"
    " 2 it could not run (usage, configuration, Redis or the archive unreachable)"
)

#: a Standard Webhooks source, as STANDARD_WEBHOOK_SECRETS names it (``standard-<source>`` in ids and keys)
_STANDARD = re.compile(r"standard-[a-z0-9][a-z0-9_.-]{0,63}")
PROVIDERS_TEXT = f"{', '.join(NAMES)} or standard-<source>"


def provider(text: str) -> str:
    """argparse ``type=`` for a provider that has stored records: a registered one or ``standard-<source>``."""
    name = text.strip().lower()
    if name in NAMES or _STANDARD.fullmatch(name):
        return name
    raise argparse.ArgumentTypeError(f"unknown provider {text!r}: expected {PROVIDERS_TEXT}")


def version() -> str:
    try:
        return metadata.version("veo-archiver")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class CommandParser(argparse.ArgumentParser):
    """``veo-archiver``'s parser: every subcommand, nested ones too, gets its one-line ``help`` as the first line
    of its own ``--help`` (unless it has a longer description) and the exit codes below its options."""

    def add_subparsers(self, **kwargs: Any) -> Any:
        return _Commands(super().add_subparsers(**kwargs))


class _Commands:
    """The subcommands action, whose ``add_parser`` fills in what :class:`CommandParser` promises."""

    def __init__(self, action: Any) -> None:
        self.action = action

    @property
    def choices(self) -> dict[str, argparse.ArgumentParser]:
        return dict(self.action.choices)

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        summary = kwargs.get("help")
        if summary and not kwargs.get("description"):
            kwargs["description"] = summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else ".")
        kwargs.setdefault("epilog", EXIT_CODES)
        parser: argparse.ArgumentParser = self.action.add_parser(name, **kwargs)
        return parser
