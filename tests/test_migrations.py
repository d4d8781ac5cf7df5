"""Migrations stand on their own: a later, stricter whitelist check never breaks a fresh
`migrate`, and the whitelist itself is pure (no models, no I/O)."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from commands import whitelist

ROOT = Path(__file__).resolve().parent.parent
defaults = importlib.import_module("commands.migrations.0002_default_whitelist")


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, at any depth (function bodies included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("rule", defaults.DEFAULT_RULES, ids=lambda rule: rule["action_type"])
def test_each_default_rule_passes_todays_check_with_the_frozen_tokens(rule):
    tokens = whitelist.check_rule(rule["template"], rule["parameters"])
    assert tokens == defaults.shlex.split(rule["template"])


def test_no_migration_runs_todays_application_code():
    # commands.models is referenced the way makemigrations writes field defaults and
    # validators; anything else (the whitelist, services) would change under the migration.
    for path in sorted((ROOT / "commands" / "migrations").glob("0*.py")):
        ours = {name for name in imported_modules(path) if name.startswith("commands")}
        assert ours <= {"commands.models"}, f"{path.name} imports {ours}: freeze what it needs"


def test_the_whitelist_module_imports_no_models_and_no_io():
    imported = imported_modules(ROOT / "commands" / "whitelist.py")
    assert not {name for name in imported if name.startswith(("commands.models", "django.db"))}
    # And at run time, in a fresh interpreter with no Django settings at all.
    script = (
        "import sys, commands.whitelist as w; "
        "assert 'commands.models' not in sys.modules, 'models imported'; "
        "assert 'django.db.models' not in sys.modules, 'the ORM imported'; "
        "print(w.check_rule('systemctl restart {s}', {'s': '^[a-z]{1,20}$'}))"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['systemctl', 'restart', '{s}']"


MIGRATE_WITH_A_STRICTER_CHECK = """
import django
from django.core.exceptions import ValidationError

import commands.whitelist

def refuse_everything(template, parameters):
    raise ValidationError("a later, stricter check refuses this rule")

commands.whitelist.check_rule = refuse_everything
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from commands.models import AllowedCommand
print(AllowedCommand.objects.count())
"""


def test_a_fresh_migrate_succeeds_even_when_todays_check_refuses_the_defaults(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "homelab.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite3'}",
    }
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", MIGRATE_WITH_A_STRICTER_CHECK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == len(defaults.DEFAULT_RULES)
