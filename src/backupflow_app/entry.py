"""The ``backupflow`` command's entry point.

``wal-push`` (PostgreSQL's archive_command) goes to the resident archiver before anything
heavy is imported (:mod:`backupflow_app.walclient`); every other command, and a push the
archiver cannot take, goes on to :func:`backupflow_app.cli.main`.
"""

from __future__ import annotations

import sys
from typing import NoReturn

__all__ = ["main"]


def main() -> NoReturn:
    argv = sys.argv[1:]
    if argv[:1] == ["wal-push"]:
        from backupflow_app.walclient import push_via_archiver

        code = push_via_archiver(argv[1:])
        if code is not None:
            sys.exit(code)
    from backupflow_app.cli import main as cli_main

    cli_main()
