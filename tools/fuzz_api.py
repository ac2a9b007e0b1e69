"""Fuzz a running streamtalk service from its own OpenAPI document (schemathesis + hypothesis).

Every operation in the document gets schema-valid and schema-violating requests until the
time budget is spent. The properties, per request:

- no 5xx, except the TTS engine's `503 over_capacity`;
- every error (4xx/5xx) is a JSON body `{"error": {"code", "message", ...}}`;
- no truncated 200: a body that breaks off mid-stream fails.

and, around the run, a normal request (`--probe`) timed before and after: it still succeeds,
its median time to the first byte is within 1.5x of the one before (or 20 ms: timer noise at
millisecond scale), and the server's resident memory grew by less than 50 MB.

    python -m tools.fuzz_api --base-url http://127.0.0.1:8090 --probe tts --pid 1234 \\
        --seconds 600 --json output/fuzz/tts.json

Prints a table of status codes per operation and the failures (with a curl command each);
exits 1 when a property fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

TTFB_RATIO = 1.5
TTFB_SLACK_S = 0.020
RSS_GROWTH_MB = 50
PROBE_RUNS = 7
REQUEST_TIMEOUT_S = 30
SETTLE_S = 2.0  # after the run, before the probe: abandoned requests wind down


@dataclass
class Failure:
    operation: str
    problem: str
    curl: str


@dataclass
class FuzzReport:
    base_url: str
    seconds: float = 0.0
    requests: int = 0
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    probe_before_ms: float | None = None
    probe_after_ms: float | None = None
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# -- the normal request, before and after ------------------------------------------------


def _probe_tts(base: str, headers: dict[str, str]) -> float:
    speakers = requests.get(f"{base}/v1/speakers", headers=headers, timeout=10).json()["speakers"]
    body = {"text": "Hello there, this is a probe.", "speaker": speakers[0]}
    return _first_byte_s("POST", f"{base}/tts/stream", headers, body)


def _probe_token(base: str, headers: dict[str, str]) -> float:
    return _first_byte_s("POST", f"{base}/api/token", headers, {"identity": "probe"})


def _probe_omni(base: str, headers: dict[str, str]) -> float:
    model = requests.get(f"{base}/v1/models", headers=headers, timeout=10).json()["data"][0]["id"]
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "Hello."}]}
    return _first_byte_s("POST", f"{base}/v1/chat/completions", headers, body)


PROBES = {"tts": _probe_tts, "token": _probe_token, "omni": _probe_omni}


def _first_byte_s(method: str, url: str, headers: dict[str, str], body: Any) -> float:
    t0 = time.perf_counter()
    with requests.request(method, url, json=body, headers=headers, stream=True,
                          timeout=REQUEST_TIMEOUT_S) as resp:
        resp.raise_for_status()
        chunks = resp.iter_content(chunk_size=None)
        next(chunks)
        first = time.perf_counter() - t0
        for _ in chunks:  # read to the end: a probe must complete
            pass
    return first


def _median_probe_s(probe, base: str, headers: dict[str, str]) -> float:
    probe(base, headers)  # warm-up
    return statistics.median(probe(base, headers) for _ in range(PROBE_RUNS))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- the fuzz run ---------------------------------------------------------------------------


def _problem(resp: requests.Response) -> str | None:
    status = resp.status_code
    if status < 400:
        return None
    try:
        error = resp.json()["error"]
        code = error["code"]
        assert isinstance(error["message"], str)
    except (ValueError, KeyError, TypeError, AssertionError):
        return f"{status} without a JSON error body: {resp.text[:200]!r}"
    if status >= 500 and not (status == 503 and code == "over_capacity"):
        return f"{status} {code}: {error['message'][:200]}"
    return None


def _check(case: schemathesis.Case, base: str, headers: dict[str, str], report: FuzzReport) -> None:
    label = f"{case.method} {case.path}"
    counts = report.statuses.setdefault(label, {})
    report.requests += 1
    try:
        resp = case.call(base_url=base, headers=headers, timeout=REQUEST_TIMEOUT_S)
        problem = _problem(resp)
        outcome = str(resp.status_code)
    except requests.RequestException as exc:  # a body cut mid-stream, a dropped connection
        problem = f"no complete response: {type(exc).__name__}: {str(exc)[:200]}"
        outcome = "broken"
    counts[outcome] = counts.get(outcome, 0) + 1
    if problem is not None:
        report.failures.append(Failure(label, problem, case.as_curl_command(headers)))


def fuzz(base: str, *, seconds: float, headers: dict[str, str] | None = None,
         schema_path: str = "/openapi.json", probe: str | None = None,
         pid: int | None = None, progress=print) -> FuzzReport:
    headers = dict(headers or {})
    report = FuzzReport(base_url=base)
    probe_fn = PROBES[probe] if probe else None
    if probe_fn is not None:
        report.probe_before_ms = _median_probe_s(probe_fn, base, headers) * 1000
    if pid is not None:
        report.rss_before_mb = rss_mb(pid)
    schema = schemathesis.openapi.from_url(base + schema_path, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    # an operation without inputs has nothing to violate: positive cases only
    plan = [(op, mode) for op in operations for mode in GenerationMode
            if mode is GenerationMode.POSITIVE or _has_inputs(op)]
    started = time.monotonic()
    deadline = started + seconds
    while plan and time.monotonic() < deadline:  # rounds, until the time is spent
        unfinished = []
        for i, (op, mode) in enumerate(plan):
            budget = (deadline - time.monotonic()) / (len(plan) - i)
            if budget <= 0:
                break
            progress(f"fuzz {op.method.upper()} {op.path} ({mode.value}) for up to {budget:.0f} s")
            if _run_operation(op, mode, base, headers, report, time.monotonic() + budget):
                unfinished.append((op, mode))  # stopped by the clock, not out of cases
        plan = unfinished
    report.seconds = round(time.monotonic() - started, 1)
    time.sleep(SETTLE_S)
    if probe_fn is not None:
        try:
            report.probe_after_ms = _median_probe_s(probe_fn, base, headers) * 1000
        except (requests.RequestException, StopIteration) as exc:
            report.failures.append(Failure("probe",
                                           f"a normal request failed after the run: {exc}", ""))
        else:
            allowed = max(report.probe_before_ms * TTFB_RATIO,
                          report.probe_before_ms + TTFB_SLACK_S * 1000)
            if report.probe_after_ms > allowed:
                report.failures.append(Failure("probe", (
                    f"first byte {report.probe_after_ms:.1f} ms after the run, "
                    f"{report.probe_before_ms:.1f} ms before (allowed {allowed:.1f})"), ""))
    if pid is not None:
        report.rss_after_mb = rss_mb(pid)
        if report.rss_after_mb - report.rss_before_mb >= RSS_GROWTH_MB:
            report.failures.append(Failure("rss", (
                f"resident memory grew {report.rss_after_mb - report.rss_before_mb:.0f} MB "
                f"(limit {RSS_GROWTH_MB})"), ""))
    return report


class _OutOfTime(Exception):
    pass


def _has_inputs(op) -> bool:
    return bool(len(op.body) or len(op.query) or len(op.path_parameters) or len(op.headers))


def _run_operation(op, mode: GenerationMode, base: str, headers: dict[str, str],
                   report: FuzzReport, until: float) -> bool:
    """Requests for `op` until `until`; True when stopped by the clock (cases were left)."""
    @settings(max_examples=100_000, deadline=None, database=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        if time.monotonic() > until:
            raise _OutOfTime
        _check(case, base, headers, report)

    try:
        run()
    except _OutOfTime:
        return True
    except Unsatisfiable:  # e.g. a free-form parameter has no schema-violating value
        pass
    return False


def print_report(report: FuzzReport) -> None:
    print(f"\n{report.requests} requests in {report.seconds:.0f} s against {report.base_url}")
    print(f"{'operation':<36} statuses")
    for label, counts in sorted(report.statuses.items()):
        print(f"{label:<36} " + "  ".join(f"{k}x{v}" for k, v in sorted(counts.items())))
    if report.probe_before_ms is not None:
        print(f"probe first byte: {report.probe_before_ms:.1f} ms before, "
              f"{report.probe_after_ms or float('nan'):.1f} ms after")
    if report.rss_before_mb is not None:
        print(f"resident memory: {report.rss_before_mb:.0f} MB before, "
              f"{report.rss_after_mb:.0f} MB after")
    for f in report.failures[:20]:
        print(f"FAIL {f.operation}: {f.problem}\n     {f.curl}")
    print("result:", "ok" if report.ok else f"{len(report.failures)} failure(s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--schema-path", default="/openapi.json")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--probe", choices=sorted(PROBES))
    ap.add_argument("--pid", type=int, help="the server's process id, for its resident memory")
    ap.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    report = fuzz(args.base_url.rstrip("/"), seconds=args.seconds, headers=headers,
                  schema_path=args.schema_path, probe=args.probe, pid=args.pid)
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
