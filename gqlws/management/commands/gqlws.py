"""``manage.py gqlws <subcommand>``: operating a gqlws deployment.

``status`` shows the edges, subscriptions and group streams of the
distributed mode (see ``gqlws.status``); ``--json`` prints the same facts
as one JSON document, for scripts and monitoring.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gqlws import status

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Operate gqlws: `gqlws status [--json]` shows edges, subscriptions and streams."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
        shown = commands.add_parser(
            "status", help="Edges, connections, subscriptions per class and group, streams."
        )
        shown.add_argument("--json", action="store_true", help="One JSON document instead.")
        shown.add_argument(
            "--groups",
            type=int,
            default=status.GROUPS_SHOWN,
            help=f"Groups listed in the table (default {status.GROUPS_SHOWN}; 0: all).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "status":
            self._status(as_json=options["json"], groups=options["groups"])

    def _status(self, *, as_json: bool, groups: int) -> None:
        try:
            found = status.collect()
        except status.FabricUnreachable as error:
            raise CommandError(str(error)) from error
        if as_json:
            self.stdout.write(json.dumps(found, indent=2))
        else:
            self.stdout.write(status.render(found, groups_shown=groups or None))
