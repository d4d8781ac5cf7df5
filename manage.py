#!/usr/bin/env python3
"""Django's command-line utility for administrative tasks: run it as `./manage.py ...`.

Run by an interpreter without Django (the system python3 of the shebang, outside the
venv), it re-runs itself with the project's .venv/bin/python, so every hint that says
`./manage.py trusthost nas` works as printed.
"""

import os
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv"


def use_the_venv() -> None:
    """Re-exec with .venv/bin/python when this interpreter has no Django."""
    try:
        import django  # noqa: F401
    except ImportError:
        python = VENV / "bin" / "python"
        # Not when this already is the venv's python: a broken venv must not loop.
        if python.exists() and Path(sys.prefix).resolve() != VENV.resolve():
            os.execv(python, [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])  # noqa: S606
        sys.exit(
            f"manage.py: Django is not installed for {sys.executable} and there is no "
            f"usable {python}; run `make run` once to create it."
        )


def main() -> None:
    use_the_venv()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "homelab.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # The settings name the variable and the fix; a traceback would only bury that.
        # One line, shaped like Django's own "CommandError: ..." lines.
        sys.exit(f"ImproperlyConfigured: {' '.join(str(exc).split())}")


if __name__ == "__main__":
    main()
