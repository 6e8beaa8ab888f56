"""What the API tests share: a token for a user, and its Authorization header."""

from __future__ import annotations

from datetime import timedelta


def token_for(user, scope: str = "read write", expires_in: timedelta | None = None) -> str:
    from app import db
    from app.models import ApiToken

    _, secret = ApiToken.issue(user, "test", scope, expires_in)
    db.session.commit()
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
