"""Beyond one machine, on loopback: two LiveKit nodes that share rooms through one Redis,
agent workers each registered with one node, and the token server that hands clients a
live node and runs the room reconciler. Everything is real: redis-server, livekit-server,
`python -m agent start` (tiny checkpoint, CPU), the token server, the dev Omni backend.

Which node a room lives on is read from Redis (`room_node_map`, node ids from each node's
log); which worker serves it from its agent's `streamtalk.worker` attribute. Every test
asserts that no room holds two agents.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from livekit import api
from support.agent_worker import (
    TWIN_TOLERANCE_S,
    AgentWorker,
    CallBot,
    start_agent_worker_process,
    two_agents_seen,
    unique_room,
)
from support.infra import (
    LiveKitServer,
    OmniDevServer,
    RedisServer,
    free_port,
    start_livekit_server,
    start_redis,
    start_token_server_process,
)

from streamtalk_common.room_protocol import WORKER_ATTRIBUTE
from streamtalk_common.tables import print_table
from token_server.live_nodes import LiveNodes, NoLiveNode

pytestmark = pytest.mark.timeout(240)

GRACE_S = 2.0  # the reconciler's, in these tests
AGENT = api.ParticipantInfo.Kind.AGENT


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[LiveKitServer]

    @property
    def urls(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def node_of_room(self, room: str) -> LiveKitServer | None:
        """The node the room lives on (None while Redis does not place it)."""
        node_id = self.redis.cli("hget", "room_node_map", room)
        return next((n for n in self.nodes if n.node_id() == node_id), None)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    redis = start_redis(tmp_path)
    keys = ("test" + os.urandom(4).hex(), os.urandom(32).hex())
    nodes: list[LiveKitServer] = []
    try:
        for i in (1, 2):
            nodes.append(start_livekit_server(tmp_path, f"livekit-node{i}", redis=redis, keys=keys))
        yield Cluster(redis, nodes)
    finally:
        for node in nodes:
            node.process.stop()
        redis.process.stop()


@pytest.fixture
def start_workers(cluster: Cluster, omni_dev_server: OmniDevServer, tiny_model_dir: Path,
                  tmp_path: Path):
    """Factory: `start_workers(name, (node index, worker name, extra env), ...)` starts them
    at once and returns them registered; all are stopped after the test."""
    started: list[AgentWorker] = []

    def start(agent_name: str, *specs: tuple[int, str, dict[str, str]]) -> list[AgentWorker]:
        def one(spec: tuple[int, str, dict[str, str]]) -> AgentWorker:
            node, worker_name, env = spec
            return start_agent_worker_process(
                cluster.nodes[node], omni_dev_server.base_url, omni_dev_server.model,
                tiny_model_dir, tmp_path / f"out-{worker_name}", LIVEKIT_AGENT_NAME=agent_name,
                AGENT_WORKER_NAME=worker_name, AGENT_EMPTY_ROOM_GRACE_S="300", **env)

        with ThreadPoolExecutor(len(specs)) as pool:
            workers = list(pool.map(one, specs))
        started.extend(workers)
        return workers

    try:
        yield start
    finally:
        for w in started:
            w.process.stop(timeout_s=20)


def agent_name() -> str:
    return f"streamtalk-mn-{os.urandom(3).hex()}"


async def create_room(node: LiveKitServer, room: str, agent: str | None) -> None:
    """A room made through this node's API, dispatching `agent` (None: no agent yet)."""
    agents = [api.RoomAgentDispatch(agent_name=agent)] if agent else []
    async with api.LiveKitAPI(node.url, node.api_key, node.api_secret) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=300,
                                                        agents=agents))


async def agents_in(node: LiveKitServer, room: str) -> list[api.ParticipantInfo]:
    async with api.LiveKitAPI(node.url, node.api_key, node.api_secret) as lk:
        people = (await lk.room.list_participants(
            api.ListParticipantsRequest(room=room))).participants
    return [p for p in people if p.kind == AGENT]


async def serving_worker(node: LiveKitServer, room: str, timeout_s: float = 30) -> str:
    """The worker whose agent joined the room (asked through `node`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        agents = await agents_in(node, room)
        if agents and WORKER_ATTRIBUTE in agents[0].attributes:
            return agents[0].attributes[WORKER_ATTRIBUTE]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no agent joined room {room} in {timeout_s:.0f} s")


async def room_on(cluster: Cluster, node: LiveKitServer, prefix: str) -> str:
    """A room, without an agent yet, that Redis placed on `node` (rooms go to any node;
    the others made on the way are deleted)."""
    for _ in range(40):
        room = unique_room(prefix)
        await create_room(cluster.nodes[0], room, None)
        if cluster.node_of_room(room) is node:
            return room
        async with api.LiveKitAPI(node.url, node.api_key, node.api_secret) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    raise AssertionError(f"40 rooms in a row were placed away from {node.url}")


def metrics(worker: AgentWorker) -> dict[str, float]:
    """The worker's streamtalk_agent_* gauges, from its Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.env['AGENT_METRICS_PORT']}/metrics",
                                timeout=5) as r:
        lines = r.read().decode().splitlines()
    return {k: float(v)
            for k, v in (line.split() for line in lines if line.startswith("streamtalk_agent_"))}


async def no_twins(cluster: Cluster, rooms: list[str], seconds: float,
                   tolerance_s: float = 0.0) -> None:
    seen = await asyncio.gather(*(two_agents_seen(cluster.nodes[i % 2], room, seconds, tolerance_s)
                                  for i, room in enumerate(rooms)))
    assert not any(seen), dict(zip(rooms, seen, strict=True))


async def test_rooms_made_through_either_node_all_get_one_agent(
    cluster: Cluster, start_workers
) -> None:
    name = agent_name()
    start_workers(name, (0, "w1", {}), (1, "w2", {}))
    rooms = [unique_room("mn-both") for _ in range(4)]
    for i, room in enumerate(rooms):
        await create_room(cluster.nodes[i % 2], room, name)
    rows = []
    for i, room in enumerate(rooms):
        # asked through the other node
        worker = await serving_worker(cluster.nodes[(i + 1) % 2], room)
        home = cluster.node_of_room(room)
        rows.append({"room": room, "made through": cluster.nodes[i % 2].url,
                     "lives on": home.url if home else "?", "served by": worker,
                     "worker registered with": cluster.nodes[worker == "w2"].url})
    print_table("rooms made through either node", rows)
    assert all(r["served by"] in ("w1", "w2") for r in rows)
    await no_twins(cluster, rooms, 3.0)


async def test_a_full_worker_gets_no_new_room_and_a_worker_serves_rooms_on_the_other_node(
    cluster: Cluster, start_workers
) -> None:
    """w1 (node 1) holds its one room (AGENT_MAX_ROOMS=1): its load is 1, so every new room
    goes to w2 (node 2), among them a room that lives on node 1: a worker registered with
    one node is dispatched rooms that live on the other."""
    name = agent_name()
    (w1,) = start_workers(name, (0, "w1", {"AGENT_MAX_ROOMS": "1"}))
    first = unique_room("mn-first")
    await create_room(cluster.nodes[0], first, name)
    assert await serving_worker(cluster.nodes[0], first) == "w1"
    deadline = time.monotonic() + 10
    while metrics(w1)["streamtalk_agent_load"] < 1.0:
        assert time.monotonic() < deadline, metrics(w1)
        await asyncio.sleep(0.2)

    (w2,) = start_workers(name, (1, "w2", {}))
    away = await room_on(cluster, cluster.nodes[0], "mn-away")  # lives on w1's node, not w2's
    async with api.LiveKitAPI(cluster.nodes[1].url, cluster.nodes[1].api_key,
                              cluster.nodes[1].api_secret) as lk:
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=name, room=away))
    more = [unique_room("mn-more") for _ in range(2)]
    for i, room in enumerate(more):
        await create_room(cluster.nodes[i], room, name)
    served = {room: await serving_worker(cluster.nodes[1], room) for room in (away, *more)}
    print_table("w1 full: new rooms",
                [{"room": r, "lives on": (cluster.node_of_room(r) or cluster.nodes[0]).url,
                  "served by": w, "worker registered with": cluster.nodes[w == "w2"].url}
                 for r, w in {first: "w1", **served}.items()])
    assert set(served.values()) == {"w2"}, served
    assert cluster.node_of_room(away) is cluster.nodes[0] \
        and w2.env["LIVEKIT_URL"] == cluster.nodes[1].url
    w1_now, w2_now = metrics(w1), metrics(w2)
    assert (w1_now["streamtalk_agent_rooms"], w1_now["streamtalk_agent_load"]) == (1, 1.0), w1_now
    assert w2_now["streamtalk_agent_rooms"] == 3 and w2_now["streamtalk_agent_load"] < 0.9, w2_now
    await no_twins(cluster, [first, away, *more], 2.0)


async def token(session: aiohttp.ClientSession, base_url: str, room: str) -> dict:
    async with session.post(f"{base_url}/api/token", json={"room": room, "identity": "mn"}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_a_killed_workers_rooms_come_back_on_the_other_worker(
    cluster: Cluster, start_workers
) -> None:
    name = agent_name()
    tokens = start_token_server_process(cluster.nodes[0], LIVEKIT_URLS=cluster.urls,
                                        LIVEKIT_AGENT_NAME=name,
                                        TOKEN_RECONCILE_GRACE_S=str(GRACE_S),
                                        TOKEN_RATE_LIMIT_PER_MIN="0")
    workers = start_workers(name, (0, "w1", {}), (1, "w2", {}))
    rooms = [unique_room("mn-kill") for _ in range(3)]
    users = []
    try:
        async with aiohttp.ClientSession() as session:
            for room in rooms:
                grant = await token(session, tokens.base_url, room)
                users.append(CallBot(grant["url"], grant["token"], publish_mic=False))
        for user in users:
            await user.start()
        for user in users:
            await user.wait_for(lambda u=user: (u.agent_identity is not None
                                                and u.attribute(WORKER_ATTRIBUTE)),
                                30, "an agent's voice")
        before = {room: (u.agent_identity, u.attribute(WORKER_ATTRIBUTE))
                  for room, u in zip(rooms, users, strict=True)}
        killed_name = before[rooms[0]][1]
        (killed,) = [w for w in workers if w.env["AGENT_WORKER_NAME"] == killed_name]
        (other,) = [w for w in workers if w is not killed]
        done = asyncio.Event()
        watch = [asyncio.create_task(two_agents_seen(cluster.nodes[0], room, 90.0, TWIN_TOLERANCE_S,
                                                     until=done))
                 for room in rooms]
        killed.process.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        rows = []
        for room, user in zip(rooms, users, strict=True):
            agent, worker = before[room]
            if worker == killed_name:
                await user.wait_for(lambda u=user, a=agent: u.agent_identity not in (None, a), 60,
                                    "another agent")
                await user.wait_for(
                    lambda u=user: u.attribute(WORKER_ATTRIBUTE) == other.env["AGENT_WORKER_NAME"],
                    10, "the other worker's agent")
            rows.append({"room": room, "before": worker, "after": user.attribute(WORKER_ATTRIBUTE),
                         "back after s": (f"{time.monotonic() - killed_at:.1f}"
                                          if worker == killed_name else "-")})
            # the other's rooms kept their agent
            assert user.agent_identity == agent or worker == killed_name
        print_table(f"{killed_name} killed", rows)
        await asyncio.sleep(2.0)
        done.set()
        assert not any(await asyncio.gather(*watch))
    finally:
        for user in users:
            await user.aclose()
        tokens.process.stop()


async def test_a_killed_node_clients_rejoin_through_a_live_url_and_the_agent_returns(
    cluster: Cluster, start_workers
) -> None:
    """The hard case: the room lives on node 1, the user is connected through node 1, and its
    agent comes from w2, registered with node 2. Node 1 is killed: the token server names
    node 2 only, the user rejoins through it, and an agent serves the room again."""
    name = agent_name()
    dead, live = cluster.nodes
    tokens = start_token_server_process(dead, LIVEKIT_URLS=cluster.urls, LIVEKIT_AGENT_NAME=name,
                                        TOKEN_RECONCILE_GRACE_S=str(GRACE_S),
                                        TOKEN_RATE_LIMIT_PER_MIN="0")
    start_workers(name, (1, "w2", {}))
    room = await room_on(cluster, dead, "mn-node")
    async with api.LiveKitAPI(live.url, live.api_key, live.api_secret) as lk:
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=name, room=room))
    assert await serving_worker(live, room) == "w2"
    start_workers(name, (0, "w1", {}))  # registered with the node that will die
    users: list[CallBot] = []
    try:
        async with aiohttp.ClientSession() as session:
            grant = await token(session, tokens.base_url, room)
            while grant["url"] != dead.url:  # the nodes come in turn
                grant = await token(session, tokens.base_url, room)
            users.append(CallBot(grant["url"], grant["token"], publish_mic=False))
            await users[0].start()
            await users[0].wait_for(lambda: users[0].agent_identity is not None, 30, "the agent")
            dead.process.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            done = asyncio.Event()
            # LiveKit lists the dead session's agent in the moved room for a few seconds: count
            # live agents (their heartbeat moves), as the reconciler does
            watch = asyncio.create_task(two_agents_seen(live, room, 120.0, TWIN_TOLERANCE_S,
                                                        until=done, live_only=True))

            # the token server stops naming the dead node once its check fails
            left_out = f"LiveKit node {dead.url} does not answer: left out"
            while left_out not in tokens.process.log_path.read_text():
                assert time.monotonic() - killed_at < 10, \
                    "the token server did not notice the dead node"
                await asyncio.sleep(0.1)
            noticed_s = time.monotonic() - killed_at
            later = [(await token(session, tokens.base_url, room))["url"] for _ in range(4)]
            assert set(later) == {live.url}, later

            # the client rejoins the room with a new token (LiveKit may route it to the dead
            # node until that node's stats are stale: try again until the join holds)
            while True:
                grant = await token(session, tokens.base_url, room)
                user = CallBot(grant["url"], grant["token"], publish_mic=False)
                users.append(user)
                try:
                    await user.start(timeout_s=10)
                    break
                except Exception:  # the SDK raises its own ConnectError and timeouts
                    assert time.monotonic() - killed_at < 60, "the client could not rejoin"
                    await user.aclose()
            rejoined_s = time.monotonic() - killed_at
            await user.wait_for(lambda: (user.attribute(WORKER_ATTRIBUTE) == "w2"
                                         and user.agent_identity is not None),
                                60, "w2's agent")
            back_s = time.monotonic() - killed_at
            # the dead session's agent goes by itself once LiveKit ends that session
            deadline = time.monotonic() + 30
            while len(await agents_in(live, room)) != 1:
                assert time.monotonic() < deadline, await agents_in(live, room)
                await asyncio.sleep(0.25)
            settled_s = time.monotonic() - killed_at
            print_table("node killed", [{"killed": dead.url,
                                         "tokens name the live node after s": f"{noticed_s:.1f}",
                                         "client rejoined after s": f"{rejoined_s:.1f}",
                                         "agent back after s": f"{back_s:.1f}",
                                         "one agent listed after s": f"{settled_s:.1f}"}])
            await asyncio.sleep(3.0)
            done.set()
        assert not await watch
        (final,) = await agents_in(live, room)
        assert final.attributes[WORKER_ATTRIBUTE] == "w2"
        def hears_it() -> bool:
            agent = user.room.remote_participants.get(final.identity)
            return agent is not None and any(pub.subscribed
                                             for pub in agent.track_publications.values())

        await user.wait_for(hears_it, 10, "the user subscribed to that agent's voice")
    finally:
        for user in users:
            await user.aclose()
        tokens.process.stop()


async def test_tokens_name_only_nodes_that_answer(cluster: Cluster) -> None:
    """The token server's node list with the two real nodes and an address nobody listens on."""
    nowhere = f"ws://127.0.0.1:{free_port()}"
    first = cluster.nodes[0]
    nodes = LiveNodes((nowhere, *(n.url for n in cluster.nodes)), first.api_key, first.api_secret)
    async with aiohttp.ClientSession() as session:
        await nodes.check(session)
        handed = [nodes.client_url() for _ in range(6)]
        # in turn, never nowhere
        assert sorted(set(handed)) == sorted(n.url for n in cluster.nodes), handed
        assert (await nodes.api().room.list_rooms(api.ListRoomsRequest())) is not None
        cluster.nodes[0].process.stop()
        await nodes.check(session)
        assert {nodes.client_url() for _ in range(3)} == {cluster.nodes[1].url}
        cluster.nodes[1].process.stop()
        await nodes.check(session)
        with pytest.raises(NoLiveNode, match="no LiveKit node answers"):
            nodes.client_url()
    await nodes.aclose()
