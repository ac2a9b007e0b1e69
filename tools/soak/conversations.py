"""`long-reply` and `soak`: conversations with the real agent stack.

The stack is the AutoRTC one (`tools/autortc/stack.py`: LiveKit, the dev Omni backend,
the agent worker with the tiny checkpoint on the CPU) plus the token server with its
room reconciler. The dev backend gets the bundled scripted replies and one more rule:
"essay" is answered with a long text of `reply_chars` characters; the agent's
LLM_MAX_TOKENS is raised to the most the backend accepts (MAX_TOKENS_LIMIT, a dev
token being a word) so the text is not cut.

A conversation is one AutoRTC case run the way the suite runs it
(`run_suite.run_attempt`: a fresh room dispatching the agent, a user bot that speaks
the case, a probe bot that records the agent); each one also asks the token server
for a token, as a browser would.

- `long_reply`: one conversation whose answer is the long text. It passes when the
  reply ended (trace point `reply_end`, no `interrupted`), was spoken in several TTS
  segments covering the text, no `tts_error`/`backend_down`/`backend_busy` was reported,
  the agent logged no ERROR, and the probe received at least the audio the engine produced.
- `soak`: `conversations` conversations at a time, cycling the AutoRTC mini cases, for
  `duration_s`, while every service's process group is sampled (procstat.py). The same
  load runs first for `warm_up_s` (and at least two rounds): a fresh agent worker's
  pools, caches and allocator arenas fill in its first minutes (25-50 MiB, the
  end-of-turn model's native pool in one step some 6 minutes in: docs/RELIABILITY.md),
  growth that a slope over the soak must not count as a leak. The verdict: resident
  memory grows by less than `rss_slope_max` MiB/min (least squares over the loaded
  samples of each process lifetime: lifetimes.py), and once the conversations are over
  and their rooms closed, no service holds more file descriptors or threads than it did
  after the warm-up, when it was just as idle. The agent worker runs under
  scripts/keep_running.sh, as start_all.sh runs it: a worker recycled
  (AGENT_RECYCLE_GROWTH_MIB, from the environment) is replaced, and the result lists
  each lifetime and each restart with the seconds until the next worker registered.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from streamtalk_common import stack as services
from streamtalk_common.net import free_port
from streamtalk_common.stack import ServiceProcess
from tools.autortc.common import read_json
from tools.autortc.make_cases import load_cases, make_case
from tools.autortc.run_suite import probe_silent, run_attempt
from tools.autortc.stack import Stack, start, start_stack
from tools.omni_dev.config import DEFAULT_RESPONSES
from tools.omni_dev.protocol import MAX_TOKENS_LIMIT

from . import lifetimes
from .procstat import Sample, sample_group

LONG_REPLY_KEYWORD = "essay"
LONG_REPLY_CASE = {"id": "long_reply", "priority": "P0", "text": "Please read me the whole essay.",
                   "voice": "en-us", "wpm": 160, "lead_s": 0.3, "tail_s": 1.5}
MINI_CASES = Path(__file__).resolve().parents[1] / "autortc" / "cases" / "mini_cases.json"
# the tiny checkpoint speaks about 3 frames (0.24 s) per text token, about 4 characters
SPOKEN_S_PER_CHAR = 0.08
READY_TIMEOUT_S = 30.0
CONVERSATION_PAD_S = 40.0  # a mini case's reply, with STT and transport on a busy CPU
WARMUP_PER_LOOP = 2  # conversations per loop at least, before the idle baseline
SETTLE_LIMIT_S = 60.0  # for the rooms of the last conversations to close
SETTLE_STEADY_SAMPLES = 4
SENTENCES = (
    "The river runs past the old mill and turns toward the hills.",
    "Every morning the baker opens the shutters before the sun is up.",
    "A voice agent has to listen as carefully as it speaks.",
    "Seven small boats were tied to the wooden pier, rocking in the wind.",
    "She wrote the numbers down twice, to be sure they were right.",
    "Far above the valley, a hawk circled slowly over the fields.",
    "Nobody noticed the clock had stopped until the train was gone.",
    "The library stays open late on Thursdays for the students.",
)


def reply_text(chars: int) -> str:
    """Whole sentences, at least `chars` characters."""
    if chars < 1:
        raise ValueError(f"a reply needs at least one character, got {chars}")
    out, length = [], -1
    for sentence in itertools.cycle(SENTENCES):
        if length >= chars:
            return " ".join(out)
        out.append(sentence)
        length += len(sentence) + 1


def responses_with_long_reply(path: Path, text: str) -> Path:
    data = json.loads(DEFAULT_RESPONSES.read_text())
    data["rules"].insert(0, {"keywords": [LONG_REPLY_KEYWORD], "reply": text})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def start_soak_stack(out: Path, reply_chars: int, progress) -> tuple[Stack, str]:  # noqa: ANN001
    """The AutoRTC stack with the long-reply rule, and the token server beside it; the stack
    and the token server's token URL."""
    responses = responses_with_long_reply(out / "responses.json", reply_text(reply_chars))
    progress(f"starting the stack (logs in {out / 'logs'})")
    stack = start_stack(out / "logs", (out / "agent-output").resolve(),
                        agent_env={"LLM_MAX_TOKENS": str(MAX_TOKENS_LIMIT)},
                        omni_env={"OMNI_DEV_RESPONSES": str(responses)}, restart_agents=True)
    try:
        port = free_port()
        token = services.token_server(
            port, LIVEKIT_URL=stack.livekit_url, LIVEKIT_API_KEY=stack.api_key,
            LIVEKIT_API_SECRET=stack.api_secret, LIVEKIT_AGENT_NAME=stack.agent_name,
            TOKEN_RATE_LIMIT_PER_MIN="0")
        start(token, out / "logs", stack.services).wait_healthy()
    except BaseException:
        stack.stop()
        raise
    return stack, f"http://127.0.0.1:{port}/api/token"


def _service(stack: Stack, name: str) -> ServiceProcess:
    return next(s for s in stack.services if s.name == name)


def _token_ok(token_url: str) -> bool:
    req = urllib.request.Request(token_url, data=b"{}",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status == 200 and "token" in json.loads(r.read())
    except OSError:
        return False


def converse(stack: Stack, token_url: str, case: dict[str, Any], out: Path,
             pad_s: float) -> dict[str, Any]:
    """One conversation; ok when both bots finished their part and the probe heard the agent.
    The bots' results decide, not their exit status: the SDK may abort a bot on its way out."""
    token_ok = _token_ok(token_url)
    wavs = make_case(case, out / "wavs")
    args = argparse.Namespace(ready_timeout_s=READY_TIMEOUT_S, pad_s=pad_s)
    run_id = "soak" + uuid.uuid4().hex[:8]
    cdir, info = run_attempt(stack, case, wavs, run_id, 1, 1, out, args)
    finished = [cdir / "user_result.json", cdir / "probe_result.json"]
    ok = (token_ok and all(p.exists() and read_json(p).get("ok") for p in finished)
          and not probe_silent(cdir))
    return {"case_id": case["id"], "room": info["room"], "dir": str(cdir), "ok": ok,
            "token_ok": token_ok, "rc_user": info["rc_user"], "rc_probe": info["rc_probe"]}


# -- long reply ------------------------------------------------------------------------------


def _reply_metrics(stack: Stack, room: str) -> dict[str, Any]:
    """The agent's metrics line of the room's first reply (written ~1 s after reply_end)."""
    path = stack.agent_output / "traces" / f"{room}.metrics.jsonl"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            replies = [m for m in lines if m.get("turn") == 1]
            if replies:
                return replies[0]
        time.sleep(0.5)
    return {}


def run_long_reply(stack: Stack, token_url: str, reply_chars: int, out: Path,
                   progress) -> dict[str, Any]:  # noqa: ANN001
    text = reply_text(reply_chars)
    agent_log = _service(stack, "agent").log_path
    log_start = agent_log.stat().st_size
    pad_s = len(text) * SPOKEN_S_PER_CHAR * 1.5 + 60
    progress(f"long-reply: {len(text)} characters "
             f"(about {len(text) * SPOKEN_S_PER_CHAR:.0f} s of speech)")
    conv = converse(stack, token_url, LONG_REPLY_CASE, out, pad_s)
    cdir = Path(conv["dir"])
    trace = [json.loads(x) for x in (cdir / "agent_trace.jsonl").read_text().splitlines()] \
        if (cdir / "agent_trace.jsonl").exists() else []
    points = {e["point"] for e in trace if e["turn"] == 1}
    metrics = _reply_metrics(stack, conv["room"])
    segments = metrics.get("tts_segment", [])
    produced_s = sum(s["audio_s"] for s in segments)
    probe = read_json(cdir / "probe_result.json") if (cdir / "probe_result.json").exists() else {}
    received_s = probe.get("reply_seconds", 0.0)
    new_log = agent_log.read_bytes()[log_start:].decode(errors="replace")
    errors = [ln for ln in new_log.splitlines() if " ERROR " in ln or "Traceback" in ln]
    problems = [k for k in ("tts_error", "backend_down", "backend_busy", "llm_cancelled",
                            "tts_cancelled") if metrics.get(k)]
    spoken_chars = sum(s["chars"] for s in segments)
    result = {
        "reply_chars": len(text), "segments": len(segments), "spoken_chars": spoken_chars,
        "audio_produced_s": round(produced_s, 2), "audio_received_s": round(received_s, 2),
        "reply_end": "reply_end" in points, "interrupted": "interrupted" in points,
        "problem_events": problems, "agent_errors": errors[:5], "conversation_ok": conv["ok"],
    }
    result["ok"] = (conv["ok"] and result["reply_end"] and not result["interrupted"]
                    and not problems and not errors and len(segments) > 1
                    and spoken_chars >= len("".join(text.split()))  # every word reached the TTS
                    and received_s >= produced_s > 0)
    return result


# -- soak ------------------------------------------------------------------------------------


def _sample_all(groups: dict[str, int], exited: set[str]) -> dict[str, Sample]:
    """One sample of each live group; a group whose processes are gone joins `exited`."""
    now = {}
    for name, pgid in groups.items():
        if name in exited:
            continue
        try:
            now[name] = sample_group(pgid)
        except ProcessLookupError:
            exited.add(name)
    return now


class Sampler(threading.Thread):
    """Samples every service's process group every `every_s` until stopped."""

    def __init__(self, groups: dict[str, int], every_s: float, exited: set[str]) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.groups, self.every_s, self.exited = groups, every_s, exited
        self.samples: dict[str, list[Sample]] = {name: [] for name in groups}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            for name, sample in _sample_all(self.groups, self.exited).items():
                self.samples[name].append(sample)
            self.stopped.wait(self.every_s)


def _load(stack: Stack, token_url: str, cases: list[dict[str, Any]], conversations: int,
          until: float, out: Path, each: int | None = None) -> list[dict[str, Any]]:
    """`conversations` loops of conversations, each starting a new one until `until` (and
    at most `each` of them)."""
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def loop(offset: int) -> None:
        for case in itertools.islice(itertools.cycle(cases), offset,
                                     None if each is None else offset + each):
            if time.monotonic() >= until:
                return
            r = converse(stack, token_url, case, out, CONVERSATION_PAD_S)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=loop, args=(i,), name=f"soak-conversation-{i}")
               for i in range(conversations)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _settled(groups: dict[str, int], every_s: float, exited: set[str]) -> dict[str, Sample]:
    """Samples once the fd and thread counts have stopped changing (the rooms closed)."""
    history: list[dict[str, tuple[int, int]]] = []
    deadline = time.monotonic() + SETTLE_LIMIT_S
    while True:
        now = _sample_all(groups, exited)
        history.append({name: (s.fds, s.threads) for name, s in now.items()})
        recent = history[-SETTLE_STEADY_SAMPLES:]
        if (len(recent) == SETTLE_STEADY_SAMPLES and all(h == recent[0] for h in recent)) \
                or time.monotonic() > deadline:
            return now
        time.sleep(every_s)


def run_soak(stack: Stack, token_url: str, duration_s: float, conversations: int,
             every_s: float, rss_slope_max: float, out: Path, progress,  # noqa: ANN001
             warm_up_s: float = 0.0) -> dict[str, Any]:
    cases = load_cases(MINI_CASES)
    groups = {s.name: s.proc.pid for s in stack.services}  # each service leads its own group
    exited: set[str] = set()  # services that died: a failed soak, not a crashed tool
    progress(f"soak: warm-up, {conversations} conversations at a time for at least "
             f"{WARMUP_PER_LOOP} rounds and {warm_up_s:.0f} s")
    cold = _sample_all(groups, exited)
    warm_until = time.monotonic() + warm_up_s
    warm = _load(stack, token_url, cases, conversations, math.inf, out / "warmup",
                 each=WARMUP_PER_LOOP)
    warm += _load(stack, token_url, cases, conversations, warm_until, out / "warmup")
    idle_before = _settled(groups, every_s, exited)
    progress(f"soak: {conversations} conversations at a time for {duration_s:.0f} s, "
             f"sampling every {every_s:g} s")
    sampler = Sampler(groups, every_s, exited)
    sampler.start()
    t0 = time.monotonic()
    done = _load(stack, token_url, cases, conversations, t0 + duration_s, out / "conversations")
    sampler.stopped.set()
    sampler.join()
    loaded_s = time.monotonic() - t0
    idle_after = _settled(groups, every_s, exited)
    services: dict[str, dict[str, Any]] = {name: {"exited": True, "ok": False} for name in exited}
    for name, series in sampler.samples.items():
        if name in exited:
            continue
        times = [s.t - t0 for s in series]
        before, after = idle_before[name], idle_after[name]
        log_text = _service(stack, name).log_text() if name.startswith("agent") else ""
        # the registrations on the samples' clock (monotonic)
        to_monotonic = time.monotonic() - time.time()
        registered = [r.timestamp() + to_monotonic for r in lifetimes.registrations(log_text)]
        runs = [lifetimes.summary(run, t0)
                for run in lifetimes.serving(lifetimes.split(series), registered)]
        services[name] = {
            "rss_mib_before_warm_up": round(cold[name].rss_mib, 1) if name in cold else None,
            "rss_mib_start": round(series[0].rss_mib, 1),
            "rss_mib_end": round(series[-1].rss_mib, 1),
            "rss_mib_peak": round(max(s.rss_mib for s in series), 1),
            "rss_slope_mib_per_min": lifetimes.process_slope(runs),
            "lifetimes": runs,
            "fds_idle_before": before.fds, "fds_idle_after": after.fds,
            "fds_max": max(s.fds for s in series),
            "threads_idle_before": before.threads, "threads_idle_after": after.threads,
            "threads_max": max(s.threads for s in series), "samples": len(series),
            "series": [[round(t, 1), round(x.rss_mib, 2), x.fds, x.threads]
                       for t, x in zip(times, series, strict=True)],
        }
        s = services[name]
        if log_text:
            s["restarts"] = lifetimes.restarts(log_text)
        s["ok"] = (s["rss_slope_mib_per_min"] < rss_slope_max and after.fds <= before.fds
                   and after.threads <= before.threads)
    failed = [r for r in warm + done if not r["ok"]]
    return {"duration_s": round(loaded_s, 1), "conversations": len(done), "at_once": conversations,
            "warm_up_s": warm_up_s, "warm_up_conversations": len(warm),
            "failed_conversations": failed[:10], "rss_slope_max_mib_per_min": rss_slope_max,
            "services": services,
            "ok": bool(done) and not failed and all(s["ok"] for s in services.values())}
