"""The README walkthrough through a Python client generated from openapi/openapi.json.

openapi-python-client generates the package `sidekey_client` (run.sh puts it on the path); this issues,
reads, refreshes and verifies a session, lists it as the admin, and revokes it, parsing every answer
into the generated models, so an answer the document describes wrongly fails here.

    SIDEKEY_URL=http://127.0.0.1:8080 SIDEKEY_ADMIN_TOKEN=… python3 walkthrough.py
"""

import os
from http import HTTPStatus

from sidekey_client import AuthenticatedClient, Client
from sidekey_client.api.admin import admin_list_sessions, admin_revoke_matching
from sidekey_client.api.sessions import (
    get_session,
    issue_session,
    refresh_session,
    revoke_session,
    verify_token,
)
from sidekey_client.models import (
    IssuedSession,
    IssueSessionRequest,
    IssueSessionRequestMetadataType0,
    Problem,
    RevocationResult,
    RevokeBySecretKeyId,
    Session,
    SessionList,
)
from sidekey_client.types import UNSET

BASE = os.environ["SIDEKEY_URL"]
ADMIN_TOKEN = os.environ["SIDEKEY_ADMIN_TOKEN"]
SECRET_KEY_ID = os.environ.get("SIDEKEY_SECRET_KEY_ID", "openai-prod")


def main() -> None:
    anonymous = Client(base_url=BASE, raise_on_unexpected_status=True)
    metadata = IssueSessionRequestMetadataType0.from_dict({"app": "walkthrough"})
    request = IssueSessionRequest(secret_key_id=SECRET_KEY_ID, ttl_seconds=600, metadata=metadata)
    issued = issue_session.sync_detailed(client=anonymous, body=request)
    assert issued.status_code == HTTPStatus.CREATED, issued.content
    assert isinstance(issued.parsed, IssuedSession), issued.parsed
    assert issued.parsed.subject is None, "a session without a caller has a null subject"
    assert issued.headers["cache-control"] == "no-store"
    token = issued.parsed.token

    holder = AuthenticatedClient(base_url=BASE, token=token, raise_on_unexpected_status=True)
    shown = get_session.sync_detailed(client=holder)
    assert shown.status_code == HTTPStatus.OK and isinstance(shown.parsed, Session), shown.content
    assert str(shown.parsed.session_id) == str(issued.parsed.session_id)
    assert shown.parsed.subject is None
    assert shown.parsed.metadata.to_dict() == {"app": "walkthrough"}

    refreshed = refresh_session.sync_detailed(client=holder)
    assert refreshed.status_code == HTTPStatus.OK and isinstance(refreshed.parsed, Session)
    assert refreshed.parsed.expires_in <= 600

    verified = verify_token.sync_detailed(client=holder)
    assert verified.status_code == HTTPStatus.OK, verified.content
    assert verified.headers["x-sidekey-session-id"] == str(issued.parsed.session_id)

    admin = AuthenticatedClient(base_url=BASE, token=ADMIN_TOKEN, raise_on_unexpected_status=True)
    listed = admin_list_sessions.sync_detailed(client=admin, secret_key_id=SECRET_KEY_ID, limit=100)
    assert listed.status_code == HTTPStatus.OK and isinstance(listed.parsed, SessionList), listed.content
    mine = [s for s in listed.parsed.sessions if str(s.session_id) == str(issued.parsed.session_id)]
    assert len(mine) == 1, listed.parsed
    assert mine[0].remaining is UNSET, "the admin list leaves `remaining` out"

    revoked = revoke_session.sync_detailed(client=holder)
    assert revoked.status_code == HTTPStatus.NO_CONTENT, revoked.content
    after = get_session.sync_detailed(client=holder)
    assert after.status_code == HTTPStatus.UNAUTHORIZED and isinstance(after.parsed, Problem), after.content
    assert after.parsed.code == "invalid_token"

    other = issue_session.sync_detailed(client=anonymous, body=IssueSessionRequest(secret_key_id=SECRET_KEY_ID))
    assert other.status_code == HTTPStatus.CREATED
    rotated = admin_revoke_matching.sync_detailed(
        client=admin, body=RevokeBySecretKeyId(secret_key_id=SECRET_KEY_ID)
    )
    assert rotated.status_code == HTTPStatus.OK and isinstance(rotated.parsed, RevocationResult), rotated.content
    assert rotated.parsed.revoked >= 1
    print("python walkthrough: ok")


if __name__ == "__main__":
    main()
