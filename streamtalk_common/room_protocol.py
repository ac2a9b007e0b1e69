"""Names the agent, the token server's room reconciler and the web page share in a room.

- `HEARTBEAT_ATTRIBUTE`: the agent's participant attribute, a counter it raises every
  `HEARTBEAT_S`. LiveKit keeps a killed agent's participant in the room for about 20 s;
  a counter that stood still for `STALE_AFTER_S` tells the reconciler the agent is gone.
- `RECONCILER_METADATA_KEY`: the key of the room metadata's JSON object under which the
  reconciler tells the page what it does (token_server/reconciler.py).
- `DISPATCH_ATTRIBUTE`: a participant attribute the join token sets, next to the token's
  agent dispatch: `{"agent_name", "metadata"}` as JSON. LiveKit applies it at every join,
  so a room that LiveKit recreated without the dispatch (the agent's reconnection may
  create it first) still says which agent its people expect.
- `WORKER_ATTRIBUTE`: the agent's participant attribute naming the worker that serves the
  room (`AGENT_WORKER_NAME`): which worker took which room, with several of them.
- `LATENCY_TOPIC`: the data topic on which the agent publishes each turn's latency
  breakdown, reliable UTF-8 JSON (streamtalk_common/latency_breakdown.py).
"""

import json
from typing import Any

from livekit import api

HEARTBEAT_ATTRIBUTE = "streamtalk.heartbeat"
HEARTBEAT_S = 2.0
STALE_AFTER_S = 3 * HEARTBEAT_S
RECONCILER_METADATA_KEY = "streamtalk.agent"
DISPATCH_ATTRIBUTE = "streamtalk.agent_dispatch"
HISTORY_METADATA_KEY = "streamtalk.history"
WORKER_ATTRIBUTE = "streamtalk.worker"
LATENCY_TOPIC = "streamtalk.latency"


def dispatch_attribute(agent_name: str, metadata: str) -> dict[str, str]:
    """The participant attributes a join token carries beside its dispatch."""
    return {DISPATCH_ATTRIBUTE: json.dumps({"agent_name": agent_name, "metadata": metadata})}


def expected_dispatch(attributes: dict[str, str]) -> tuple[str, str] | None:
    """(agent_name, metadata) a participant's token dispatched, if it says so validly."""
    try:
        wanted = json.loads(attributes.get(DISPATCH_ATTRIBUTE, ""))
        return str(wanted["agent_name"]), str(wanted["metadata"])
    except (ValueError, TypeError, KeyError):
        return None


def metadata_object(metadata: str) -> dict[str, Any] | None:
    """The room metadata's JSON object ({} when empty); None when it holds something else."""
    try:
        value = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def merged_metadata(metadata: str, key: str, value: Any) -> str | None:
    """`metadata` with `key` set to `value` and every other key kept; None when nothing
    changes or the metadata is not a JSON object (someone else's: left alone)."""
    current = metadata_object(metadata)
    if current is None or current.get(key) == value:
        return None
    return json.dumps({**current, key: value})


async def set_room_metadata_key(lkapi: api.LiveKitAPI, room: str, key: str, value: Any) -> None:
    """Set `key` of the room metadata's JSON object to `value`, every other key kept. The
    metadata has several writers and LiveKit offers no compare-and-swap, so it is read
    from the server right before the write, which keeps the window for a crossing write
    to one round trip. A room that has closed is left alone."""
    rooms = (await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms
    if not rooms:
        return
    metadata = merged_metadata(rooms[0].metadata, key, value)
    if metadata is not None:
        await lkapi.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room=room, metadata=metadata))
