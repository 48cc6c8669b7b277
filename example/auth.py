"""Token authentication in ``connection_init``, for clients that send no cookies.

A token is the user's id signed with the project's SECRET_KEY (Django's
``signing``), valid for a day. Issue one with
``python example/manage.py shell -c "from example.auth import token_for; print(token_for('user'))"``
and send it as ``{"type": "connection_init", "payload": {"token": "..."}}``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing

__all__ = ["InvalidToken", "token_for", "user_for_token"]

_SALT = "gqlws-example-connection-token"
_MAX_AGE = 24 * 3600


class InvalidToken(PermissionError):
    """The token is malformed, forged, expired, or names no active user."""


def token_for(username: str) -> str:
    user = get_user_model()._default_manager.get(username=username)
    return signing.dumps(user.pk, salt=_SALT)


def user_for_token(token: Any) -> Any:
    if not isinstance(token, str):
        raise InvalidToken("The token must be a string")
    try:
        pk = signing.loads(token, salt=_SALT, max_age=_MAX_AGE)
    except signing.BadSignature:
        raise InvalidToken("Invalid or expired token") from None
    user = get_user_model()._default_manager.filter(pk=pk, is_active=True).first()
    if user is None:
        raise InvalidToken("The token's user does not exist")
    return user
