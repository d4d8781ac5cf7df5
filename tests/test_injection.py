"""Shell-injection payloads sent through the endpoint never run on the server.

The daemon runs on this machine, so a marker file that a payload tries to create would
appear in a folder we can look at.
"""

import pytest

from commands.models import Execution

pytestmark = pytest.mark.django_db

PAYLOADS = [
    "echo hi; touch {m}",
    "echo hi && touch {m}",
    "echo hi || touch {m}",
    "echo hi | touch {m}",
    "echo $(touch {m})",
    "echo `touch {m}`",
    "echo hi > {m}",
    "echo hi >> {m}",
    "echo hi & touch {m}",
    "echo ${{IFS}}touch${{IFS}}{m}",
    "echo 'x'; touch {m}",
    'echo "$(touch {m})"',
    "echo hi\ntouch {m}",
    "echo hi\rtouch {m}",
    "echo hi\x00; touch {m}",
    "echo -e hi; touch {m}",
    "echo hi$IFS;touch {m}",
]


@pytest.fixture
def server(sshd, make_server, make_rule):
    # A deliberately loose pattern (anything but newline and a leading dash): even
    # then a parameter is one argv element, never shell text.
    make_rule("t_say", "echo {text}", text=r"^[^\-\n\r\x00][^\n\r\x00]{0,200}$")
    return make_server(sshd)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_an_injection_payload_never_creates_the_marker(api_client, server, tmp_path, payload):
    marker = tmp_path / "pwned"
    command = payload.format(m=marker)
    response = api_client.post(
        f"/api/v1/servers/{server.pk}/commands/execute",
        {"command": command, "action_type": "t_say"},
        format="json",
    )
    assert response.status_code in (200, 400), response.content
    assert not marker.exists()
    if response.status_code == 200:
        # It ran as echo with the payload as literal text, nothing more.
        row = Execution.objects.get(pk=response.json()["execution_id"])
        assert row.argv[0] == "echo" and len(row.argv) == 2
        assert response.json()["stdout"] == row.argv[1] + "\n"


def test_a_quoted_parameter_reaches_echo_as_one_literal_argument(api_client, server, tmp_path):
    marker = tmp_path / "pwned"
    response = api_client.post(
        f"/api/v1/servers/{server.pk}/commands/execute",
        {"command": f"echo '$(touch {marker}); `id`; $HOME'", "action_type": "t_say"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["stdout"] == f"$(touch {marker}); `id`; $HOME\n"
    assert not marker.exists()
