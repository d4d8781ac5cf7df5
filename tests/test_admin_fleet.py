"""The admin's batch pages through Django's test client and a real sshd: who may run, the
confirmation a rule that changes machines asks for, and the batch list and page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from commands.models import Batch, Execution, Tag
from tests.sshd import wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # the batch and runner threads write

RUN = reverse("admin:commands_batch_run")


@pytest.fixture
def tagged(sshd, make_server, make_rule):
    pi = Tag.objects.create(name="pi")
    for name in ("alpha", "beta"):
        make_server(sshd, name=name).tags.add(pi)
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")
    touchy = make_rule("t_touchy", "printf touchy")
    touchy.confirm = True
    touchy.save()
    return pi


def form(**fields) -> dict:
    return {"tag": "pi", "max_concurrency": "10", "max_errors": "", "confirm_name": "", **fields}


def test_a_batch_started_from_the_run_page_is_audited_as_the_user(admin_client, tagged):
    response = admin_client.post(RUN, form(action_type="t_echo", command="echo hi"))

    assert response.status_code == 302, response.content
    batch = Batch.objects.get()
    assert response["Location"] == reverse("admin:commands_batch_change", args=[batch.pk])
    assert wait_for(lambda: Batch.objects.get().status == "succeeded", timeout=20)
    assert set(Execution.objects.values_list("username", flat=True)) == {"admin"}
    page = admin_client.get(response["Location"]).content.decode()
    assert 'data-server="alpha"' in page and 'data-server="beta"' in page
    assert "homelab-fleet" in page
    listed = admin_client.get(reverse("admin:commands_batch_changelist")).content.decode()
    assert "tag pi" in listed


def test_a_rule_that_changes_machines_runs_only_once_its_name_is_typed(admin_client, tagged):
    refused = admin_client.post(RUN, form(action_type="t_touchy", command="printf touchy"))
    assert refused.status_code == 200
    assert "type t_touchy to confirm" in refused.content.decode()
    assert not Batch.objects.exists() and not Execution.objects.exists()

    typed = admin_client.post(
        RUN, form(action_type="t_touchy", command="printf touchy", confirm_name="t_touchy")
    )
    assert typed.status_code == 302
    assert wait_for(lambda: Batch.objects.get().status == "succeeded", timeout=20)


def test_the_run_page_shows_no_command_chosen_and_the_pipelines_refusals(admin_client, tagged):
    page = admin_client.get(f"{RUN}?servers=1,2").content.decode()
    assert '<option value="" selected>Choose a command…</option>' in page
    wrong = admin_client.post(RUN, form(action_type="t_echo", command="echo NOPE"))
    assert "invalid_parameter" in wrong.content.decode()
    assert not Batch.objects.exists()
    assert Execution.objects.get().error_code == "invalid_parameter"  # audited


def test_staff_without_the_execute_permission_may_look_but_not_run(client, django_user_model,
                                                                    tagged):  # fmt: skip
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_server"))
    client.force_login(viewer)
    assert client.get(RUN).status_code == 403
    assert client.post(RUN, form(action_type="t_echo", command="echo hi")).status_code == 403
    assert not Batch.objects.exists()
    assert client.get(reverse("admin:commands_batch_changelist")).status_code == 200
