"""Shell-injection payloads sent through the endpoint never run on the server.

The daemon runs on this machine, so a marker file that a payload tries to create would
appear in a folder we can look at. Each payload has one expected outcome: refused before
SSH, or run as `echo` with the payload as one literal argument.
"""

import pytest

from commands.models import Execution

pytestmark = pytest.mark.django_db

# Several tokens where the rule has two: refused by the whitelist, nothing reaches sshd.
SPLIT_PAYLOADS = [
    "echo hi; touch {m}",
    "echo hi && touch {m}",
    "echo hi || touch {m}",
    "echo hi | touch {m}",
    "echo $(touch {m})",
    "echo `touch {m}`",
    "echo hi > {m}",
    "echo hi >> {m}",
    "echo hi & touch {m}",
    "echo 'x'; touch {m}",
    "echo -e hi; touch {m}",
    "echo hi$IFS;touch {m}",
]
# Control characters: refused before anything parses the command.
CONTROL_PAYLOADS = ["echo hi\ntouch {m}", "echo hi\rtouch {m}", "echo hi\x00; touch {m}"]
# One token: it reaches the server, and must arrive as inert text.
LITERAL_PAYLOADS = [
    ("echo '$(touch {m})'", "$(touch {m})"),
    ('echo "$(touch {m})"', "$(touch {m})"),
    ("echo '`touch {m}`'", "`touch {m}`"),
    ("echo 'a;touch {m}'", "a;touch {m}"),
    ("echo '|touch {m}'", "|touch {m}"),
    ("echo 'x&&touch {m}'", "x&&touch {m}"),
    ("echo '>{m}'", ">{m}"),
    ("echo ${{IFS}}touch${{IFS}}{m}", "${{IFS}}touch${{IFS}}{m}"),
    ("echo \\$(touch\\ {m})", "$(touch {m})"),
    ("echo '$HOME'\\;touch\\ {m}", "$HOME;touch {m}"),
]


@pytest.fixture
def server(sshd, make_server, make_rule):
    # A deliberately loose pattern (anything but line breaks, NUL and a leading dash):
    # even then a parameter is one argv element, never shell text.
    make_rule("t_say", "echo {text}", text=r"^[^\-\n\r\x00][^\n\r\x00]{0,200}$")
    return make_server(sshd)


def post(client, server, command):
    return client.post(
        f"/api/v1/servers/{server.pk}/commands/execute",
        {"command": command, "action_type": "t_say"},
        format="json",
    )


REFUSED = [(p, "not_whitelisted") for p in SPLIT_PAYLOADS] + [
    (p, "invalid") for p in CONTROL_PAYLOADS
]


@pytest.mark.parametrize(("payload", "code"), REFUSED)
def test_a_refused_payload_never_reaches_the_server(
    api_client, server, sshd, tmp_path, payload, code
):
    marker = tmp_path / "pwned"
    response = post(api_client, server, payload.format(m=marker))
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not marker.exists()
    assert sshd.accepted_connections() == 0


@pytest.mark.parametrize(("payload", "literal"), LITERAL_PAYLOADS)
@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_a_one_token_payload_reaches_echo_as_inert_text(
    api_client, server, tmp_path, payload, literal
):
    marker = tmp_path / "pwned"
    response = post(api_client, server, payload.format(m=marker))
    assert response.status_code == 200, response.content
    expected = literal.format(m=marker)
    assert response.json()["stdout"] == expected + "\n"
    assert Execution.objects.get().argv == ["echo", expected]
    assert not marker.exists()


def test_a_leading_dash_cannot_smuggle_an_option(api_client, server):
    response = post(api_client, server, "echo '-e \\x41'")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_parameter"
