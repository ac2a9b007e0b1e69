"""Request validation and JWT minting: room-scoped grants plus agent dispatch."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import jwt
from livekit import api

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NAME_RULE = "1-64 characters of A-Z, a-z, 0-9, '_' and '-'"
DISPLAY_NAME_MAX = 128
# Sources a browser user may publish: a voice agent needs the microphone only.
PUBLISH_SOURCES = ["microphone"]


class RequestError(ValueError):
    """A client error, reported as a 4xx JSON body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


@dataclass(frozen=True)
class TokenRequest:
    room: str
    identity: str
    name: str | None = None


def _check_name(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None or value == "":
        raise RequestError(400, "missing_field", f"'{key}' is required ({NAME_RULE})", key)
    if not isinstance(value, str):
        raise RequestError(400, "invalid_field", f"'{key}' must be a string ({NAME_RULE})", key)
    if len(value) > 64:
        raise RequestError(
            400,
            "invalid_field",
            f"'{key}' is {len(value)} characters long; at most 64 allowed",
            key,
        )
    if not NAME_RE.match(value):
        raise RequestError(400, "invalid_field", f"'{key}' must be {NAME_RULE}", key)
    return value


def parse_token_request(body: Any) -> TokenRequest:
    """Validate a decoded JSON body; raises RequestError with the offending field."""
    if not isinstance(body, dict):
        raise RequestError(
            400, "invalid_body", "the body must be a JSON object {room, identity, name?}"
        )
    room = _check_name(body, "room")
    identity = _check_name(body, "identity")
    name = body.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise RequestError(400, "invalid_field", "'name' must be a string", "name")
        if len(name) > DISPLAY_NAME_MAX:
            raise RequestError(
                400,
                "invalid_field",
                f"'name' must be at most {DISPLAY_NAME_MAX} characters",
                "name",
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise RequestError(
                400, "invalid_field", "'name' must not contain control characters", "name"
            )
        name = name.strip() or None
    return TokenRequest(room=room, identity=identity, name=name)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: int  # unix seconds, the JWT's exp


def mint_token(
    req: TokenRequest,
    *,
    api_key: str,
    api_secret: str,
    ttl_s: int,
    agent_name: str,
    dispatch_metadata: dict[str, Any] | None = None,
) -> IssuedToken:
    """A join token for one room that also dispatches the agent into it."""
    grants = api.VideoGrants(
        room_join=True,
        room=req.room,
        can_publish=True,
        can_subscribe=True,
        can_publish_data=True,
        can_publish_sources=list(PUBLISH_SOURCES),
    )
    dispatch = api.RoomAgentDispatch(
        agent_name=agent_name, metadata=json.dumps(dispatch_metadata or {"source": "web"})
    )
    at = (
        api.AccessToken(api_key, api_secret)
        .with_identity(req.identity)
        .with_name(req.name or req.identity)
        .with_ttl(dt.timedelta(seconds=ttl_s))
        .with_grants(grants)
        .with_room_config(api.RoomConfiguration(agents=[dispatch]))
    )
    token = at.to_jwt()
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    return IssuedToken(token=token, expires_at=int(exp))
