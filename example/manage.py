#!/usr/bin/env python
"""Django's command-line utility for the example project (run it from anywhere)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The project package is `example`, so its parent must be importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
