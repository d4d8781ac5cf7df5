"""The rule editor's parameter rows (name, pattern, help text), through real admin posts.

The admin pages are driven with Django's test client as a logged-in superuser; a rule
saved through the rows then runs on a real OpenSSH sshd through the API.
"""

import html
import re

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError

from commands import whitelist
from commands.models import AllowedCommand

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/commands/allowedcommand/add/"
WORD = "^[a-z]{1,16}$"
UNIT = r"^[A-Za-z0-9_][A-Za-z0-9_.@:-]{0,127}$"


def change_url(rule: AllowedCommand) -> str:
    return f"/admin/commands/allowedcommand/{rule.pk}/change/"


def rows(*rows: tuple[str, str] | tuple[str, str, str], start: int = 0) -> dict[str, str]:
    """Form inputs for parameter rows, plus the blank rows a browser also sends."""
    data: dict[str, str] = {}
    padded = [*rows, ("", "", ""), ("", "", "")]
    for index, row in enumerate(padded, start=start):
        name, pattern, help_text = (*row, "")[:3]
        data |= {
            f"parameters-{index}-name": name,
            f"parameters-{index}-pattern": pattern,
            f"parameters-{index}-help": help_text,
        }
    return data


def form(template: str = "echo {word}", *parameter_rows, **overrides) -> dict[str, str]:
    data = {
        "action_type": "t_say",
        "description": "Say one word.",
        "template": template,
        "timeout_seconds": "30",
        "enabled": "on",
        "all_servers": "on",
        "_save": "Save",
        **rows(*parameter_rows),
    }
    return {**data, **overrides}


def same_as(rule: AllowedCommand) -> dict[str, str]:
    """The rule's other fields as the change page would post them back."""
    return {
        "action_type": rule.action_type,
        "description": rule.description,
        "timeout_seconds": str(rule.timeout_seconds),
        # The page's hidden initial value of a field with a callable default.
        "initial-timeout_seconds": str(rule.timeout_seconds),
        # A checked box is sent, an unchecked one is not (restart_service asks first).
        **({"confirm": "on"} if rule.confirm else {}),
    }


def row_errors(response, row_number: int) -> str:
    """The text shown under one row of the re-rendered form ('' when none)."""
    found = re.search(
        rf'<tr class="parameter-row-errors" id="id_parameters-{row_number - 1}-errors">(.*?)</tr>',
        response.text,
        re.S,
    )
    return html.unescape(found[1]) if found else ""


def field_errors(response) -> dict[str, list[str]]:
    return {
        name: list(errors) for name, errors in response.context["adminform"].form.errors.items()
    }


def analysis(template: str, parameters: dict[str, str]) -> list[str]:
    """check_rule()'s own messages for a rule: what the admin showed before the rows."""
    with pytest.raises(ValidationError) as refused:
        whitelist.check_rule(template, parameters)
    return refused.value.messages


def test_the_add_page_has_three_blank_rows_and_no_json_box(admin_client):
    response = admin_client.get(ADD_URL)

    assert response.status_code == 200
    for index in range(3):
        for part in ("name", "pattern", "help"):
            assert f'name="parameters-{index}-{part}"' in response.text
    assert 'name="parameters-3-name"' not in response.text
    assert '<textarea name="parameters"' not in response.text
    # The "add a row" script is offered, its button hidden until the script shows it.
    assert "/static/commands/rules-params.js" in response.text
    assert 'class="add-parameter-row" data-rows="id_parameters-rows" hidden' in response.text


@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_an_admin_adds_a_rule_through_the_rows_and_it_runs_on_a_real_server(
    admin_client, admin_user, api_client, sshd, make_server
):
    server = make_server(sshd)
    data = form("echo {greeting} {name}", ("greeting", WORD, "hello or bye"), ("name", WORD))
    response = admin_client.post(ADD_URL, data)

    assert response.status_code == 302, field_errors(response)
    rule = AllowedCommand.objects.get(action_type="t_say")
    assert rule.parameters == {"greeting": WORD, "name": WORD}
    assert list(rule.parameters) == ["greeting", "name"]  # the rows' order
    assert rule.parameter_help == {"greeting": "hello or bye"}
    assert rule.template_tokens == ["echo", "{greeting}", "{name}"]
    entry = LogEntry.objects.get(object_id=str(rule.pk))
    assert (entry.action_flag, entry.user) == (ADDITION, admin_user)

    ran = api_client.post(
        f"/api/v1/servers/{server.pk}/commands/execute",
        {"command": "echo hello world", "action_type": "t_say"},
        format="json",
    )
    assert ran.status_code == 200, ran.content
    assert ran.json()["stdout"] == "hello world\n"
    refused = api_client.post(
        f"/api/v1/servers/{server.pk}/commands/execute",
        {"command": "echo hello World", "action_type": "t_say"},
        format="json",
    )
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_parameter")
    listed = api_client.get(f"/api/v1/servers/{server.pk}/commands/").json()
    shown = next(item for item in listed if item["action_type"] == "t_say")
    assert shown["parameters"] == {"greeting": WORD, "name": WORD}
    assert shown["parameter_help"] == {"greeting": "hello or bye"}


def test_help_text_round_trips_through_the_change_page(admin_client, admin_user):
    rule = AllowedCommand.objects.get(action_type="restart_service")
    pattern = rule.parameters["service"]

    page = admin_client.get(change_url(rule))
    assert 'name="parameters-0-name" id="id_parameters-0-name" value="service"' in page.text
    assert f'value="{html.escape(pattern)}"' in page.text

    hint = 'a systemd unit, e.g. nginx or "wg-quick@wg0" <not a tag>'
    data = form("systemctl restart {service}", ("service", pattern, hint), **same_as(rule))
    assert admin_client.post(change_url(rule), data).status_code == 302
    rule.refresh_from_db()
    assert rule.parameter_help == {"service": hint}
    assert rule.parameters == {"service": pattern}

    page = admin_client.get(change_url(rule))
    # Shown escaped in the input, never as markup.
    assert f'name="parameters-0-help" id="id_parameters-0-help" value="{html.escape(hint)}"' in (
        page.text
    )
    assert "<not a tag>" not in page.text
    messages = [e.get_change_message() for e in LogEntry.objects.filter(object_id=str(rule.pk))]
    assert messages == ["Changed Parameters."]

    # Clearing the help text removes it; saving unchanged rows changes nothing.
    data = form("systemctl restart {service}", ("service", pattern, ""), **same_as(rule))
    assert admin_client.post(change_url(rule), data).status_code == 302
    rule.refresh_from_db()
    assert rule.parameter_help == {}
    assert admin_client.post(change_url(rule), data).status_code == 302
    assert LogEntry.objects.filter(object_id=str(rule.pk), action_flag=CHANGE).count() == 3
    assert LogEntry.objects.order_by("-id").first().get_change_message() == "No fields changed."


def test_clearing_a_row_removes_its_parameter_and_rows_are_read_in_number_order(admin_client):
    data = form("echo {a} {b}", ("a", WORD), ("b", WORD, "second"))
    admin_client.post(ADD_URL, data)
    rule = AllowedCommand.objects.get(action_type="t_say")

    # Row numbers may have gaps (the script numbers added rows after the last one).
    data = form("echo {b} {a}")
    data |= {"parameters-7-name": "a", "parameters-7-pattern": WORD}
    data |= {"parameters-2-name": "b", "parameters-2-pattern": "^[0-9]{1,3}$"}
    assert admin_client.post(change_url(rule), data).status_code == 302
    rule.refresh_from_db()
    assert list(rule.parameters.items()) == [("b", "^[0-9]{1,3}$"), ("a", WORD)]
    assert rule.parameter_help == {}

    data = form("echo {b}", ("", "", ""), ("b", WORD))
    assert admin_client.post(change_url(rule), data).status_code == 302
    rule.refresh_from_db()
    assert rule.parameters == {"b": WORD}


def test_a_bad_pattern_is_refused_at_its_row_with_the_analysis_message(admin_client):
    data = form("echo {word} {count}", ("word", WORD), ("count", "[0-9]*", "how many"))
    response = admin_client.post(ADD_URL, data)

    assert response.status_code == 200
    assert not AllowedCommand.objects.filter(action_type="t_say").exists()
    assert field_errors(response) == {
        "parameters": ["Fix parameter row 2 (see the message under it)."]
    }
    assert row_errors(response, 1) == ""
    shown = row_errors(response, 2)
    expected = analysis("echo {count}", {"count": "[0-9]*"})
    assert expected and all(message in shown for message in expected)
    assert "can match an empty value (it accepts '')" in shown
    # What was typed comes back, so nothing has to be typed again.
    assert 'id="id_parameters-1-pattern" value="[0-9]*"' in response.text
    assert 'id="id_parameters-1-help" value="how many"' in response.text


@pytest.mark.parametrize(
    ("template", "parameter_rows", "row", "problem"),
    [
        ("echo {word}", [("word", WORD), ("word", "^[0-9]+$")], 2, "'word' already has row 1"),
        ("echo {word}", [("word", WORD), ("", "^[0-9]+$")], 2, "Name this parameter"),
        ("echo {word}", [("word", WORD), ("", "", "a hint")], 2, "Name this parameter"),
        ("echo {word}", [("my-word", WORD)], 1, "'my-word' is not a parameter name"),
        ("echo {word}", [("1st", WORD)], 1, "'1st' is not a parameter name"),
        ("echo {word}", [("word", "")], 1, "Give 'word' a pattern"),
        ("echo {word}", [("word", "[a-z")], 1, "The pattern for 'word' does not compile"),
        ("echo {word}", [("word", "-?[a-z]+")], 1, "can match a value starting with '-'"),
        ("echo {word}", [("word", r"[a-z\n]+")], 1, "can match a newline"),
        ("echo {word}", [("word", "x" * 513)], 1, "at most 512 characters"),
        ("echo {word}", [("word", WORD, "x" * 201)], 1, "Keep the help text to 200"),
        ("echo {word}", [("word", WORD, "a\u202ehint")], 1, "control or invisible character"),
        ("echo {word}", [("word", WORD), ("extra", WORD)], 2, "has no {extra} token"),
    ],
)
def test_a_bad_row_is_refused_with_its_problem_under_it(
    admin_client, template, parameter_rows, row, problem
):
    response = admin_client.post(ADD_URL, form(template, *parameter_rows))

    assert response.status_code == 200
    assert not AllowedCommand.objects.filter(action_type="t_say").exists()
    assert problem in row_errors(response, row)
    assert list(field_errors(response)) == ["parameters"]
    assert f"Fix parameter row {row}" in field_errors(response)["parameters"][0]


def test_a_placeholder_without_a_row_is_refused_at_the_template(admin_client):
    response = admin_client.post(ADD_URL, form("echo {word} {count}", ("word", WORD)))

    assert response.status_code == 200
    assert field_errors(response) == {
        "template": [
            "Token 3 is {count} but no parameter row is named 'count'; fill in a row with "
            "that name and its pattern (braces around a bare name always mean a parameter)."
        ]
    }


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("echo {word} | wc -c", "uses the shell operator '|'"),
        ("echo --word={word}", "puts a parameter inside a longer token"),
        ("cd {word}", "is a shell builtin"),
        ("echo {word} {word}", "appears more than once"),
        ("echo 'unclosed {word}", "check its quotes"),
    ],
)
def test_a_template_problem_is_shown_at_the_template(admin_client, template, problem):
    response = admin_client.post(ADD_URL, form(template, ("word", WORD)))

    assert response.status_code == 200
    errors = field_errors(response)
    assert list(errors) == ["template"]
    assert problem in errors["template"][0]
    assert errors["template"] == analysis(template, {"word": WORD})


def test_with_a_bad_row_the_template_is_not_judged_on_stale_parameters(admin_client):
    # The rows are not saved while one is wrong: the template must not be told that
    # {count} has no row, which would contradict what the admin sees.
    response = admin_client.post(ADD_URL, form("echo {count}", ("count", "[0-9]*")))

    errors = field_errors(response)
    assert list(errors) == ["parameters"]
    assert "can match an empty value" in row_errors(response, 1)
    assert "no parameter row" not in response.text


def test_the_try_box_checks_a_rule_saved_through_the_rows(admin_client):
    admin_client.post(ADD_URL, form("echo {word}", ("word", WORD, "one lowercase word")))
    rule = AllowedCommand.objects.get(action_type="t_say")

    accepted = admin_client.get(change_url(rule), {"try-command": "echo 'hi'", "try-server": ""})
    refused = admin_client.get(change_url(rule), {"try-command": "echo HI", "try-server": ""})

    assert accepted.status_code == 200
    assert "Accepted." in accepted.text
    assert accepted.context["try_result"].argv == ["echo", "hi"]
    assert 'id="id_parameters-0-help" value="one lowercase word"' in accepted.text
    assert refused.context["try_result"].code == "invalid_parameter"
    assert "does not match its pattern" in html.unescape(refused.text)


def test_a_script_posting_the_json_object_still_saves_and_keeps_the_help_texts(admin_client):
    admin_client.post(ADD_URL, form("echo {word}", ("word", WORD, "a word")))
    rule = AllowedCommand.objects.get(action_type="t_say")
    data = {key: value for key, value in form().items() if not key.startswith("parameters-")}

    data["parameters"] = '{"word": "^[a-z]{1,8}$"}'
    assert admin_client.post(change_url(rule), data).status_code == 302
    rule.refresh_from_db()
    assert (rule.parameters, rule.parameter_help) == ({"word": "^[a-z]{1,8}$"}, {"word": "a word"})

    data["parameters"] = '{"word": ".*"}'
    response = admin_client.post(change_url(rule), data)
    assert "can match an empty value" in row_errors(response, 1)
    data["parameters"] = '["word"]'
    response = admin_client.post(change_url(rule), data)
    assert "must be a JSON object" in field_errors(response)["parameters"][0]


def test_a_user_who_may_only_view_rules_sees_them_read_only(client):
    viewer = User.objects.create_user("viewer", password="pw-for-tests-only", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_allowedcommand"))
    client.force_login(viewer)
    rule = AllowedCommand.objects.get(action_type="restart_service")

    response = client.get(change_url(rule))

    assert response.status_code == 200
    assert 'name="parameters-0-name"' not in response.text
    assert rule.parameters["service"] in html.unescape(response.text)
