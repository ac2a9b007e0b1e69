"""The LiveKit worker: `python -m agent start|dev|connect ...` (the livekit-agents CLI).

- Registers as agent `streamtalk` (LIVEKIT_AGENT_NAME) for explicit dispatch
  only: tokens from the token server carry a RoomAgentDispatch, AutoRTC
  creates its rooms with one. One job per room.
- Jobs run on the thread executor (JobExecutorType.THREAD): every room is a
  thread of this one process, so the single TTS engine (one model copy on the
  GPU, one worker thread that schedules all streams) and the Silero VAD are
  loaded once, before the worker registers, and shared by all rooms. With
  the default process executor each job process would load its own engine.
- Load: max(rooms / AGENT_MAX_ROOMS, engine streams in use / engine capacity)
  (agent/load.py). At AGENT_LOAD_THRESHOLD the worker reports itself full and
  LiveKit sends its rooms to other workers; a job request that still comes (two
  crossing) is declined beyond AGENT_MAX_ROOMS, so the server tries another worker.
- The worker's health endpoint listens on 127.0.0.1:AGENT_HTTP_PORT, its Prometheus
  metrics (the load and its parts among them) on 127.0.0.1:AGENT_METRICS_PORT.
- Its agents carry the attribute `streamtalk.worker` = AGENT_WORKER_NAME.
- Memory: glibc's malloc arenas are capped (AGENT_MALLOC_ARENA_MAX) before any thread
  starts, and malloc's free pages go back to the system when a room ends
  (agent/allocator.py); AGENT_HEAP_REPORT_S logs where the memory is (agent/heap_report.py).
- The LiveKit SDK's native client is created on the main thread before the worker
  registers (`create_livekit_client`), not by the first rooms' threads at once.
- Drain: on SIGTERM the framework marks the worker full (LiveKit sends it no new
  job) and waits up to AGENT_DRAIN_TIMEOUT_S for its jobs to end; each room sees
  `draining()` and leaves between turns (agent/drain.py), so the process exits
  once the replies being spoken are finished. A second SIGTERM exits at once.
- Recycling: the worker notes its RSS once ready and checks it after each room. Grown by
  AGENT_RECYCLE_GROWTH_MIB and without rooms, it takes no new room and exits with
  RECYCLE_EXIT_CODE through that same drain, for its supervisor to start a fresh one; at
  twice that growth with rooms open it drains them (agent/recycle.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess, JobRequest, cli
from prometheus_client import REGISTRY

from streamtalk_common.room_protocol import WORKER_ATTRIBUTE

from . import engine_service
from .allocator import limit_arenas, release_free_memory, rss_bytes
from .config import AgentConfig, AgentConfigError
from .heap_report import HeapReport
from .load import LoadCollector, WorkerLoad
from .recycle import MIB, RECYCLE_EXIT_CODE, RecyclePolicy, Verdict
from .room_agent import RoomAgent

log = logging.getLogger("streamtalk.agent")

_config: AgentConfig | None = None
_server: AgentServer | None = None
_rooms_lock = threading.Lock()
_rooms: set[str] = set()  # job ids accepted and not yet finished
_rooms_served = 0
_recycle: RecyclePolicy | None = None  # set once the worker is ready
_recycling = False  # leaving service for a fresh worker: no new room


def config() -> AgentConfig:
    global _config
    if _config is None:
        _config = AgentConfig.from_env()
    return _config


def create_livekit_client() -> None:
    """Create the LiveKit SDK's process-wide native client now. The SDK creates it on first
    use, without a lock; on the thread executor the first two rooms of a fresh worker, started
    in the same moment, each created one. Events go to the last one made, so the room that had
    subscribed to the other never got its connect callback: its connect hung, and 15 s later
    the SDK's panic (SIGTERM) took the whole worker down (docs/RELIABILITY.md)."""
    from livekit.rtc._ffi_client import FfiClient  # the SDK offers no public way to do this

    FfiClient.instance  # noqa: B018  (the property creates the client)


def prewarm(proc: JobProcess) -> None:
    """Runs in each job runner before it takes a job: the shared services are already loaded by
    `main()`; this only hands them over (and loads them if a caller skipped `main()`)."""
    proc.userdata["services"] = engine_service.get_services(config())


def draining() -> bool:
    """Whether this worker received SIGTERM and is draining (read from the job threads)."""
    return _server is not None and _server.draining


async def on_request(req: JobRequest) -> None:
    cfg = config()
    with _rooms_lock:
        if _recycling:
            full = True
        elif len(_rooms) >= cfg.max_rooms:
            full = True
        else:
            full = False
            _rooms.add(req.id)
    if full:
        why = ("it is being recycled" if _recycling
               else f"it already serves {cfg.max_rooms} rooms (AGENT_MAX_ROOMS)")
        log.warning("declining room %s: %s", req.room.name, why)
        await req.reject(terminate=False)
        return
    await req.accept(name="streamtalk",
                     attributes={"streamtalk.agent": "1", WORKER_ATTRIBUTE: cfg.worker_name})


async def entrypoint(ctx: JobContext) -> None:
    services = ctx.proc.userdata.get("services") or engine_service.get_services(config())
    room_agent = RoomAgent(ctx, services, config(), draining=draining)

    async def release(reason: str) -> None:
        global _rooms_served
        try:
            await room_agent.cleanup(reason)
        finally:
            with _rooms_lock:
                _rooms.discard(ctx.job.id)
                _rooms_served += 1
            released, ms = release_free_memory()
            log.info("room %s: malloc gave %.1f MiB of freed memory back to the system (%.1f ms)",
                     ctx.room.name, released / 2**20, ms)
            check_recycle()

    ctx.add_shutdown_callback(release)
    try:
        await room_agent.start()
    except Exception:
        log.exception("room %s: the agent could not start", ctx.room.name)
        await release("start failed")
        raise


def check_recycle() -> None:
    """After a room ended: leave service once grown too much (agent/recycle.py). Leaving is
    the SIGTERM drain, started by signalling this process: no new room, rooms leave between
    turns (none open when idle), then the process exits."""
    global _recycling
    if _recycle is None or _recycling or draining():
        return
    rss = rss_bytes()
    with _rooms_lock:  # decided with the rooms held, so that on_request adds none after
        verdict = _recycle.verdict(rss, len(_rooms))
        if verdict is Verdict.KEEP:
            return
        _recycling = True
        rooms_open, served = len(_rooms), _rooms_served
    what = ("no room open: exiting for a fresh worker" if verdict is Verdict.RECYCLE else
            f"{rooms_open} rooms open at twice that growth: draining them, then exiting")
    log.warning("recycling: RSS %.0f -> %.0f MiB since ready, grown %.0f MiB "
                "(AGENT_RECYCLE_GROWTH_MIB=%d) after %d rooms served; %s",
                _recycle.baseline_bytes / MIB, rss / MIB, _recycle.growth(rss),
                _recycle.growth_mib, served, what)
    os.kill(os.getpid(), signal.SIGTERM)


def room_count() -> int:
    with _rooms_lock:
        return len(_rooms)


def worker_load() -> WorkerLoad:
    services = engine_service.loaded()
    return WorkerLoad(rooms=room_count(), max_rooms=config().max_rooms,
                      engine_streams=services.engine.active_sessions if services else 0,
                      engine_capacity=services.engine.capacity if services else 1)


def load() -> float:
    return worker_load().load


def build_server(cfg: AgentConfig) -> AgentServer:
    global _server
    server = _server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        num_idle_processes=cfg.idle_jobs,
        load_fnc=load,
        load_threshold=cfg.load_threshold,
        setup_fnc=prewarm,
        initialize_process_timeout=120.0,
        shutdown_process_timeout=20.0,
        drain_timeout=cfg.drain_timeout_s,
        host="127.0.0.1",
        port=cfg.http_port,
        prometheus_port=cfg.metrics_port or None,
    )
    REGISTRY.register(LoadCollector(worker_load, cfg.load_threshold))
    server.rtc_session(entrypoint, agent_name=cfg.agent_name, on_request=on_request)
    return server


def main(argv: list[str] | None = None) -> Any:
    global _config
    try:
        _config = AgentConfig.from_env()
    except AgentConfigError as exc:
        print(f"agent: configuration error: {exc}", file=sys.stderr)
        return 2
    # before the engine, the VAD and the SDK start their threads (agent/allocator.py)
    if limit_arenas(_config.malloc_arena_max):
        log.info("malloc arenas capped at %d (AGENT_MALLOC_ARENA_MAX)", _config.malloc_arena_max)
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), "")
    if command in ("start", "dev", "connect") and not {"--help", "-h"} & set(args):
        # the CLI installs its own log handler later; until then log loading to stderr
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)
        try:
            try:
                engine_service.get_services(_config)  # before registering: no room waits
            except Exception as exc:
                log.exception("cannot load the TTS engine / VAD")
                print(f"agent: cannot start: {exc}", file=sys.stderr)
                return 1
            create_livekit_client()
            if _config.recycle_growth_mib:  # ready: the engine is loaded and warm
                arm_recycle(_config.recycle_growth_mib)
        finally:
            root.removeHandler(handler)
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    if _config.heap_report_s:
        HeapReport(room_count, _config.heap_report_s, _config.tracemalloc_frames).start()
    try:
        cli.run_app(build_server(_config))
    except SystemExit as done:  # the CLI exits by itself once the worker has shut down
        if done.code not in (None, 0) or not _recycling:
            raise
    return RECYCLE_EXIT_CODE if _recycling else 0


def arm_recycle(growth_mib: int) -> None:
    """Take the worker's RSS now, ready and warm, as the baseline of its growth."""
    global _recycle
    _recycle = RecyclePolicy(growth_mib, rss_bytes())
    log.info("RSS %.0f MiB once ready; the worker is recycled after %d MiB more "
             "(AGENT_RECYCLE_GROWTH_MIB)", _recycle.baseline_bytes / MIB, growth_mib)
