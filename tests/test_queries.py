"""commands/queries.OneRow: the hot-path reads compiled once give what the ORM gives."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from commands.api.authentication import authenticate_key
from commands.models import AllowedCommand, ApiKey, Server
from commands.queries import OneRow
from commands.rules import find
from commands.services import find_server

pytestmark = pytest.mark.django_db

BY_NAME = OneRow(lambda name: Server.objects.filter(name=name), "\x00name")


def fields(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_a_row_is_the_orms_instance_with_its_converters_applied(make_rule):
    Server.objects.create(name="nas", hostname="10.0.0.2", port=2222, use_sudo=True)
    rule = make_rule("t_echo", "echo {word}", word="^[a-z]+$")

    found = BY_NAME.get("nas")
    read = OneRow(lambda a: AllowedCommand.objects.filter(action_type=a), "\x00a").get("t_echo")

    assert fields(found) == fields(Server.objects.get(name="nas"))
    assert found._state.db == "default" and not found._state.adding
    assert isinstance(found.created_at, datetime.datetime) and found.created_at.tzinfo
    assert found.use_sudo is True  # SQLite stores 1: the converter makes it a bool
    assert (
        read.parameters == {"word": "^[a-z]+$"} == AllowedCommand.objects.get(pk=rule.pk).parameters
    )
    assert fields(read) == fields(AllowedCommand.objects.get(pk=rule.pk))
    assert BY_NAME.get("other") is None


def test_the_second_read_is_one_query_and_select_related_needs_none_more():
    owner = User.objects.create_user("ana")
    key, raw = ApiKey.objects.create_key(name="k", owner=owner)
    by_prefix = OneRow(lambda p: ApiKey.objects.filter(prefix=p).select_related("owner"), "\x00p")
    by_prefix.get(key.prefix)

    with CaptureQueriesContext(connection) as queries:
        found = by_prefix.get(key.prefix)
        assert found.owner.username == "ana"  # loaded with the key

    assert len(queries) == 1 and "LIMIT 1" in queries[0]["sql"]
    assert found.pk == key.pk and found.is_valid(raw)


def test_a_marker_that_is_not_one_parameter_is_refused_at_the_first_read():
    twice = OneRow(lambda n: Server.objects.filter(name=n) | Server.objects.filter(hostname=n), "m")
    with pytest.raises(ValueError, match="exactly one"):
        twice.get("x")
    with pytest.raises(ValueError, match="exactly one"):
        OneRow(lambda n: Server.objects.all(), "m").get("x")


def test_the_execute_reads_keep_their_refusals(make_rule, django_user_model):
    server = Server.objects.create(name="nas", hostname="10.0.0.2")
    make_rule("t_echo", "echo {word}", word="^[a-z]+$")
    key, raw = ApiKey.objects.create_key(name="k")
    assert authenticate_key(raw).pk == key.pk
    for bad in (raw[:-1] + ("A" if raw[-1] != "A" else "B"), "nope", "", "x\x00.y"):
        with pytest.raises(Exception, match="Invalid or revoked"):
            authenticate_key(bad)
    key.revoked = True
    key.save()
    with pytest.raises(Exception, match="Invalid or revoked"):
        authenticate_key(raw)
    owner = django_user_model.objects.create_user("gone", is_active=False)
    _, owned = ApiKey.objects.create_key(name="o", owner=owner)
    with pytest.raises(Exception, match="deactivated"):
        authenticate_key(owned)

    from commands.requests import Caller

    caller = Caller(None, None, "127.0.0.1")
    assert find_server("nas", caller) == server == find_server(str(server.pk), caller)
    assert find("t_echo", server).action_type == "t_echo"
    AllowedCommand.objects.filter(action_type="t_echo").update(enabled=False)
    assert find("t_echo", server) is None


def test_a_value_no_database_stores_matches_no_row_without_a_query():
    Server.objects.create(name="nas", hostname="10.0.0.2")
    BY_NAME.get("nas")  # compiled
    with CaptureQueriesContext(connection) as queries:
        assert BY_NAME.get("nas\x00") is None
        assert BY_NAME.get("nas\ud800") is None
        assert find("t_echo\x00") is None
    assert len(queries) == 0
