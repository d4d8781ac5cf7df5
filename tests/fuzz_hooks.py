"""schemathesis hooks for tests/test_fuzz.py, loaded through SCHEMATHESIS_HOOKS.

Most requests carry the API key from HOMELAB_FUZZ_API_KEY; every eighth goes with whatever
schemathesis generated for the security scheme (nothing, or a made-up key), so 401 paths
are fuzzed too. A 5xx fails the run unless it is one of the execute endpoint's documented
SSH transport failures (none is expected: the fuzzed server's host key is never pinned, so
every command it lets through ends as a 424 `host_key_unknown` before anything is
contacted).
"""

from __future__ import annotations

import itertools
import os
import re

import schemathesis

UNAUTHENTICATED_EVERY = 8
_calls = itertools.count()


@schemathesis.hook
def before_call(context, case, kwargs) -> None:
    if next(_calls) % UNAUTHENTICATED_EVERY == 0:
        return
    headers = dict(case.headers or {})
    headers["Authorization"] = f"Api-Key {os.environ['HOMELAB_FUZZ_API_KEY']}"
    case.headers = headers


def documented_codes(case, status: int) -> set[str]:
    """The error codes the operation's schema names (in backticks) for status."""
    responses = case.operation.definition.raw.get("responses", {})
    return set(re.findall(r"`([a-z_]+)`", responses.get(str(status), {}).get("description", "")))


@schemathesis.check
def no_server_error_but_documented_ssh(ctx, response, case) -> None:
    """No 5xx, except a 500 whose JSON code the schema documents for this operation."""
    if response.status_code < 500:
        return
    try:
        code = response.json().get("code")
    except Exception:  # not JSON at all: a server error page
        code = None
    documented = documented_codes(case, response.status_code)
    if code is None or code not in documented or not re.match(r"(ssh_|host_key_)", code):
        raise AssertionError(
            f"{response.status_code} with code {code!r} (documented here: {sorted(documented)})"
        )
