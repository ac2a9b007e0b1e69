"""The token request, the identity and room the server chooses for it, and JWT minting:
room-scoped grants plus agent dispatch."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from livekit import api
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from streamtalk_common.room_protocol import dispatch_attribute

NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
NAME_MAX = 64
DISPLAY_NAME_MAX = 128
# LiveKit names agent participants agent-<job id>: no caller may hold such an identity.
AGENT_PREFIX = "agent"
IDENTITY_SUFFIX_BYTES = 6
ROOM_NAME_BYTES = 12  # a random room is as hard to guess as a key
# Sources a browser user may publish: a voice agent needs the microphone only.
PUBLISH_SOURCES = ["microphone"]

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN)]
DisplayName = Annotated[str, Field(max_length=DISPLAY_NAME_MAX, pattern=r"^[^\x00-\x1f\x7f]*$")]


class TokenRequest(BaseModel):
    """`POST /api/token`: every field may be left out."""

    model_config = ConfigDict(extra="forbid")

    room: Name | None = Field(
        None, description="the room to join; left out, a new room with a random name"
    )
    identity: Name | None = Field(
        None,
        description="a name the server puts in the identity it makes, user-<identity>-<random>; "
        "names starting with 'agent' (any case) are refused",
    )
    name: DisplayName | None = Field(None, description="display name, no control characters")

    @field_validator("identity")
    @classmethod
    def _not_the_agents(cls, identity: str | None) -> str | None:
        if identity is not None and identity.lower().startswith(AGENT_PREFIX):
            raise PydanticCustomError(
                "reserved_identity",
                "names starting with 'agent' are reserved: LiveKit names the agent's "
                "participant agent-..., so such a name could pass for it; choose another",
            )
        return identity


@dataclass(frozen=True)
class Grant:
    """Who joins which room, as the server decided."""

    room: str
    identity: str
    name: str


def grant_for(req: TokenRequest) -> Grant:
    """The identity is always the server's own (two callers asking for one name never
    collide); a room left out is a new random one."""
    identity = f"user-{req.identity or 'guest'}-{secrets.token_hex(IDENTITY_SUFFIX_BYTES)}"
    room = req.room or f"room-{secrets.token_urlsafe(ROOM_NAME_BYTES)}"
    name = (req.name or "").strip() or req.identity or identity
    return Grant(room=room, identity=identity, name=name)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: int  # unix seconds, the JWT's exp


def mint_token(
    grant: Grant,
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
        room=grant.room,
        can_publish=True,
        can_subscribe=True,
        can_publish_data=True,
        can_publish_sources=list(PUBLISH_SOURCES),
    )
    metadata = json.dumps(dispatch_metadata or {"source": "web"})
    dispatch = api.RoomAgentDispatch(agent_name=agent_name, metadata=metadata)
    at = (
        api.AccessToken(api_key, api_secret)
        .with_identity(grant.identity)
        .with_name(grant.name)
        .with_ttl(dt.timedelta(seconds=ttl_s))
        .with_grants(grants)
        .with_room_config(api.RoomConfiguration(agents=[dispatch]))
        .with_attributes(dispatch_attribute(agent_name, metadata))  # for the room reconciler
    )
    token = at.to_jwt()
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    return IssuedToken(token=token, expires_at=int(exp))
