"""Helpers for the observability tests: a service set up in one process, scrapes parsed back.

A scrape is parsed with prometheus-client's own parser of the text format (what
Prometheus reads), never with a regular expression of ours.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.live import ROOT

FAIL = "sh -c 'echo oops >&2; exit 3'"
RULES = [
    ["t_echo", "echo {word}", "--param", "word=^[a-z]{1,10}$"],
    ["t_fail", FAIL],
    ["t_nap", "sleep {s}", "--param", r"s=^[0-9]{1,3}\.[0-9]{1,12}$", "--timeout", "120"],
]

SET_UP = """
import io, json, sys
import django
django.setup()
from django.core.management import call_command
from commands.models import ApiKey, Server
spec = json.loads(sys.argv[1])
call_command("migrate", "--noinput", verbosity=0)
call_command("addserver", *spec["server"], stdout=io.StringIO())
call_command("trusthost", spec["server"][0], "--yes", stdout=io.StringIO())
for rule in spec["rules"]:
    call_command("allowcommand", *rule, stdout=io.StringIO())
keys = {}
for name, fields in spec["keys"].items():
    keys[name] = ApiKey.objects.create_key(name=name, **fields)[1]
print(json.dumps([keys, Server.objects.get(name=spec["server"][0]).pk]))
"""


def set_up(env: dict, daemon, key_file: Path, keys: dict[str, dict]) -> tuple[dict, int]:
    """Migrate, server `box` (pinned), the RULES and API keys (name -> ApiKey fields) in one
    process: ({key name: raw key}, server id)."""
    server = ["box", daemon.host, "--port", str(daemon.port), "--user", daemon.username,
              "--key-file", str(key_file)]  # fmt: skip
    spec = json.dumps({"server": server, "rules": RULES, "keys": keys})
    result = subprocess.run(
        [sys.executable, "-c", SET_UP, spec],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "homelab.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    raw_keys, server_id = json.loads(result.stdout.strip().splitlines()[-1])
    return raw_keys, server_id


Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (name, its labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(base: str, key: str | None) -> tuple[int, str, str]:
    """(status, Content-Type, body) of GET /metrics with key (or none)."""
    headers = {"Authorization": f"Api-Key {key}"} if key else {}
    request = urllib.request.Request(f"{base}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def samples_of(base: str, key: str) -> Samples:
    status, _, body = scrape(base, key)
    assert status == 200, body
    return parse(body)


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
