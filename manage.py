#!/usr/bin/env python
"""Django's command-line utility for the Shared Ledger site."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_site.settings")
    if sys.argv[1:2] != ["runserver"]:
        # Commands talk to people: readable warnings and errors only, unless
        # LOG_LEVEL / LOG_FORMAT ask for more (the server logs every request).
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        os.environ.setdefault("LOG_FORMAT", "console")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
