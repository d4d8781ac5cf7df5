"""Issue 19 in-process: who may read /metrics, the names it exports, the refusal and batch
counters, the SSH pool's observer, the Grafana dashboard, and the settings that switch it.

The metrics are this process's (no PROMETHEUS_MULTIPROC_DIR here), shared by every test:
each test compares a scrape before and after. The real scrapes, across workers too, are in
tests/test_metrics_live.py and tests/test_metrics_workers.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client, override_settings
from rest_framework.test import APIClient

from commands import signals
from commands.engine import process
from commands.models import ApiKey, Batch, Server
from commands.services import executor
from tests.live import ROOT
from tests.observability import parse, value
from tests.sshd import target_for

# The names the issue gives, each with its Prometheus type.
EXPORTED = {
    "homelab_executions_total": "counter",
    "homelab_execution_duration_seconds": "histogram",
    "homelab_executions_running": "gauge",
    "homelab_throttled_total": "counter",
    "homelab_rejected_total": "counter",
    "homelab_ssh_connections": "gauge",
    "homelab_ssh_connect_seconds": "histogram",
    "homelab_stream_subscribers": "gauge",
    "homelab_batches_total": "counter",
    "homelab_build_info": "gauge",
}
DASHBOARD = ROOT / "docs" / "grafana" / "homelab.json"


def scrape(client: Client | None = None, **headers: str):
    return (client or Client()).get("/metrics", headers=headers)


def key_header(raw: str) -> dict:
    return {"Authorization": f"Api-Key {raw}"}


def current(api_key) -> dict:
    response = scrape(**key_header(api_key[1]))
    assert response.status_code == 200, response.content
    return parse(response.content.decode())


def exported_types(api_key) -> dict[str, str]:
    text = scrape(**key_header(api_key[1])).content.decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


# --- who may read it ----------------------------------------------------------------------
@pytest.mark.django_db
def test_metrics_take_any_api_key_or_a_staff_login_and_refuse_everyone_else_with_401():
    read_only = ApiKey.objects.create_key(name="ro", read_only=True)[1]
    nowhere = ApiKey.objects.create_key(name="nowhere", all_servers=False, all_actions=False)[1]
    revoked_row, revoked = ApiKey.objects.create_key(name="revoked")
    revoked_row.revoked = True
    revoked_row.save()
    for raw in (read_only, nowhere):
        response = scrape(**key_header(raw))
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    staff, member = Client(), Client()
    staff.force_login(User.objects.create_user("ops", is_staff=True))
    member.force_login(User.objects.create_user("guest"))
    assert scrape(staff).status_code == 200
    for response, code in (
        (scrape(), "not_authenticated"),
        (scrape(member), "not_authenticated"),  # logged in, not staff: no credential here
        (scrape(**key_header(revoked)), "authentication_failed"),
        (scrape(**{"X-API-Key": "abcdefgh.not-a-real-key"}), "authentication_failed"),
    ):
        assert response.status_code == 401, response.content
        assert response["Content-Type"] == "application/json"
        assert response.json()["code"] == code and response.json()["detail"]
        assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.django_db
def test_metrics_answer_text_whatever_the_client_accepts(api_key):
    response = scrape(**key_header(api_key[1]), Accept="application/openmetrics-text")
    assert response.status_code == 200
    assert b"# TYPE homelab_executions_total counter" in response.content


@pytest.mark.django_db
@override_settings(HOMELAB_METRICS=False)
def test_metrics_switched_off_are_a_json_404(api_key):
    response = scrape(**key_header(api_key[1]))
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


# --- what it exports ----------------------------------------------------------------------
@pytest.mark.django_db
def test_every_metric_the_issue_names_is_exported_with_its_prometheus_type(api_key):
    types = exported_types(api_key)
    assert {name: types.get(name) for name in EXPORTED} == EXPORTED
    samples = current(api_key)
    assert value(samples, "homelab_build_info", version="0.1.0") == 1
    # Every refusal code is a series from the start, so a dashboard shows 0, not "no data".
    for code in ("not_whitelisted", "invalid_parameter", "key_scope", "permission_denied"):
        assert ("homelab_rejected_total", frozenset({("code", code)})) in samples


def test_the_duration_buckets_fit_commands_from_5_ms_to_30_min():
    from commands.observability.metrics import DURATION_BUCKETS

    assert DURATION_BUCKETS[0] == 0.005 and DURATION_BUCKETS[-1] == 1800
    assert list(DURATION_BUCKETS) == sorted(set(DURATION_BUCKETS))


@pytest.mark.django_db
def test_refusals_count_by_code_and_malformed_requests_do_not(api_key, make_rule):
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")
    server = Server.objects.create(name="offline", hostname="127.0.0.1", port=9)
    Server.objects.create(name="off", hostname="127.0.0.1", port=9, enabled=False)
    limited = ApiKey.objects.create_key(name="limited", all_actions=False, action_types=["x"])
    client, scoped = APIClient(), APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
    scoped.credentials(HTTP_AUTHORIZATION=f"Api-Key {limited[1]}")
    before = current(api_key)

    def execute(who: APIClient, server_ref, command: str, action: str = "t_echo"):
        url = f"/api/v1/servers/{server_ref}/commands/execute"
        return who.post(url, {"command": command, "action_type": action}, format="json")

    refused = [
        (execute(client, server.pk, "echo $(id)"), "invalid_parameter"),
        (execute(client, server.pk, "rm -rf /"), "not_whitelisted"),
        (execute(client, "off", "echo hi"), "server_disabled"),
        (execute(scoped, server.pk, "echo hi"), "key_scope"),
        (execute(client, server.pk, ""), "invalid"),  # malformed: not counted
        (execute(client, "nosuch", "echo hi"), "server_not_found"),  # not counted
    ]
    assert [response.json()["code"] for response, _ in refused] == [code for _, code in refused]
    after = current(api_key)
    moved = {
        code: value(after, "homelab_rejected_total", code=code)
        - value(before, "homelab_rejected_total", code=code)
        for _, code in refused
    }
    assert moved == {
        "invalid_parameter": 1,
        "not_whitelisted": 1,
        "server_disabled": 1,
        "key_scope": 1,
        "invalid": 0,
        "server_not_found": 0,
    }
    assert value(after, "homelab_throttled_total") == value(before, "homelab_throttled_total")


@pytest.mark.django_db
def test_a_session_user_without_the_permission_counts_as_rejected(api_key):
    Server.objects.create(name="offline", hostname="127.0.0.1", port=9)
    viewer = Client()
    viewer.force_login(User.objects.create_user("viewer", is_staff=True))
    before = current(api_key)
    response = viewer.post(
        "/api/v1/servers/offline/commands/execute",
        {"command": "uptime", "action_type": "uptime"},
        content_type="application/json",
    )
    assert response.json()["code"] == "permission_denied"
    after = current(api_key)
    code = {"code": "permission_denied"}
    assert (
        value(after, "homelab_rejected_total", **code)
        - value(before, "homelab_rejected_total", **code)
        == 1
    )


@pytest.mark.django_db
def test_a_finished_batch_counts_by_its_status(api_key):
    before = current(api_key)
    for status in ("succeeded", "failed", "failed"):
        batch = Batch.objects.create(
            action_type="uptime", command="uptime", max_concurrency=1, status=status
        )
        signals.batch_finished.send_robust(Batch, batch=batch)
    after = current(api_key)
    for status, count in (("succeeded", 1), ("failed", 2), ("cancelled", 0)):
        moved = value(after, "homelab_batches_total", status=status) - value(
            before, "homelab_batches_total", status=status
        )
        assert moved == count, status


# --- the SSH pool's observer ---------------------------------------------------------------
@pytest.mark.django_db
def test_the_pool_reports_its_open_connections_per_server_and_how_long_each_took(
    api_key, sshd, client_key
):
    before = current(api_key)
    target = target_for(sshd, client_key, name="pooled")
    pool = executor()  # the process-wide one, as services builds it
    for _ in range(3):
        assert pool.execute(target, ["true"], timeout=10).exit_code == 0
    assert pool.open_connections() == {"pooled": 1}
    during = current(api_key)
    assert value(during, "homelab_ssh_connections", server="pooled") == 1
    assert (
        value(during, "homelab_ssh_connect_seconds_count")
        - value(before, "homelab_ssh_connect_seconds_count")
        == 1
    )  # three commands, one connection opened
    process.reset_all()  # the pool closes its connections
    assert value(current(api_key), "homelab_ssh_connections", server="pooled") == 0


# --- the Grafana dashboard ---------------------------------------------------------------
@pytest.mark.django_db
def test_the_grafana_dashboard_has_the_panels_and_queries_only_exported_metrics(api_key):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"  # importable: asks for one
    titles = [panel["title"] for panel in dashboard["panels"]]
    for wanted in (
        "Executions per minute by status",
        "Duration p50 / p95 by action",
        "Failures by server",
        "Throttled and rejected",
        "Open SSH connections",
        "Running executions",
    ):
        assert wanted in titles
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for query in queries
        for name in re.findall(r"\bhomelab_[a-z_]+", query)
    }
    exported = exported_types(api_key)
    assert used and used <= set(exported), used - set(exported)
    assert {"homelab_executions_total", "homelab_execution_duration_seconds"} <= used


# --- settings and tools ------------------------------------------------------------------
def check_with(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SECRET_KEY": "x", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_log_format_or_metrics_directory_stops_start_up_naming_the_variable(tmp_path):
    result = check_with(HOMELAB_LOG_FORMAT="yaml")
    assert result.returncode != 0 and "HOMELAB_LOG_FORMAT='yaml'" in result.stderr
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = check_with(PROMETHEUS_MULTIPROC_DIR=str(not_a_dir))
    assert result.returncode != 0 and "PROMETHEUS_MULTIPROC_DIR" in result.stderr
    assert "Traceback" not in result.stderr


def test_resetmetrics_empties_the_metrics_directory_of_metric_files_only(tmp_path):
    for name in ("counter_12.db", "gauge_livesum_12.db", "histogram_7.db", "notes.txt"):
        (tmp_path / name).write_text("")
    out = io.StringIO()
    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)):
        call_command("resetmetrics", stdout=out)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    assert "Removed 3 metric file(s)" in out.getvalue()


@pytest.mark.django_db
def test_healthz_answers_without_credentials_or_a_single_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert Client().post("/healthz").status_code == 405


def test_the_log_format_defaults_to_readable_text():
    from django.conf import settings

    assert settings.HOMELAB_LOG_FORMAT == "text"
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "text"
