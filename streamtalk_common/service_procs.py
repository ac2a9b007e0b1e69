"""The processes of one service that scripts/start_all.sh started, and a stop that leaves none.

A service runs in its own process group, but its children may leave that group: vLLM's
`EngineCore` processes start their own session and outlive their parent. So a service's
processes are found three ways, each enough on its own:

- the process group the service leads (its pid);
- descendants of those processes (while their parent lives);
- the environment tag `STREAMTALK_SERVICE=<run dir>/<service>` that start_all.sh gives the
  service, which every child inherits and keeps after its parent died.

    python -m streamtalk_common.service_procs members TAG PGID
    python -m streamtalk_common.service_procs stop TAG PGID [--grace S] [--named REGEX]

`members` prints one pid a line. `stop` sends SIGTERM to all of them (again after 2 s:
LiveKit stops waiting for participants on the second), SIGKILL after the grace period to
any that survive, and exits 1 if anything is still alive; with --named it also lists
processes whose name or command line matches REGEX and that carry no tag of ours (another
user's vLLM, say): they are reported, never signalled.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TAG_VAR = "STREAMTALK_SERVICE"
SECOND_TERM_S = 2.0
POLL_S = 0.2


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    comm: str
    cmdline: str
    tag: str | None

    def describe(self) -> str:
        return f"{self.pid} ({self.comm}: {self.cmdline[:120]})"


def _read(pid: str) -> Proc | None:
    base = Path("/proc") / pid
    try:
        stat = (base / "stat").read_text()
        cmdline = ((base / "cmdline").read_bytes().replace(b"\0", b" ")
                   .decode(errors="replace").strip())
    except OSError:  # gone meanwhile
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    state, ppid, pgid = stat[stat.rindex(")") + 2 :].split()[:3]
    if state in ("Z", "X"):  # a zombie holds no resources; its parent reaps it
        return None
    try:
        environ = (base / "environ").read_bytes().split(b"\0")
    except OSError:  # another user's process: never ours
        environ = []
    prefix = f"{TAG_VAR}=".encode()
    tag = next((e[len(prefix) :].decode(errors="replace") for e in environ if e.startswith(prefix)),
               None)
    return Proc(int(pid), int(ppid), int(pgid), comm, cmdline, tag)


def snapshot() -> list[Proc]:
    procs = (_read(p) for p in os.listdir("/proc") if p.isdigit())
    return [p for p in procs if p is not None and p.pid != os.getpid()]


def members(tag: str, pgid: int, procs: list[Proc] | None = None) -> list[Proc]:
    """Live processes of the service: its group, their descendants, and everything tagged."""
    procs = snapshot() if procs is None else procs
    found = {p.pid for p in procs if p.pgid == pgid or p.tag == tag}
    grew = True
    while grew:
        more = {p.pid for p in procs if p.ppid in found} - found
        found |= more
        grew = bool(more)
    return [p for p in procs if p.pid in found]


def _signal(procs: list[Proc], pgid: int, sig: signal.Signals) -> None:
    for target in [-pgid] + [p.pid for p in procs]:
        try:
            os.kill(target, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop(tag: str, pgid: int, grace_s: float, named: str | None = None, say=print) -> bool:
    """Stop every process of the service; True when none is left."""
    seen: dict[int, Proc] = {}

    def alive() -> list[Proc]:
        now = snapshot()
        live = {p.pid: p for p in now}
        current = {p.pid: p for p in members(tag, pgid, now)}
        # a child seen earlier stays ours after its parent died and it left the group
        current.update({pid: live[pid] for pid in seen
                        if pid in live and live[pid].cmdline == seen[pid].cmdline})
        seen.update(current)
        return list(current.values())

    left = alive()
    if left:
        say(f"stopping {len(left)} process(es): " + ", ".join(p.describe() for p in left))
        _signal(left, pgid, signal.SIGTERM)
        start = time.monotonic()
        second_term = True
        while left and time.monotonic() - start < grace_s:
            time.sleep(POLL_S)
            left = alive()
            if left and second_term and time.monotonic() - start >= SECOND_TERM_S:
                _signal(left, pgid, signal.SIGTERM)
                second_term = False
        if left:
            say(f"still alive after {grace_s:g} s, SIGKILL: "
                + ", ".join(p.describe() for p in left))
            _signal(left, pgid, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while left and time.monotonic() < deadline:
                time.sleep(POLL_S)
                left = alive()
        if left:
            say("survived SIGKILL: " + ", ".join(p.describe() for p in left))
    if named:
        pattern = re.compile(named)
        others = [p for p in snapshot()
                  if p.tag != tag and (pattern.search(p.comm) or pattern.search(p.cmdline))]
        if others:
            say(f"left alone, not started by this stack ({TAG_VAR} is not {tag}): "
                + ", ".join(p.describe() for p in others))
    return not left


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamtalk_common.service_procs",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["members", "stop"])
    ap.add_argument("tag", help=f"the service's {TAG_VAR} value")
    ap.add_argument("pgid", type=int, help="the process group the service leads")
    ap.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    ap.add_argument("--named", default=None,
                    help="also report untagged processes matching this regex")
    args = ap.parse_args(argv)
    if args.action == "members":
        print("\n".join(str(p.pid) for p in members(args.tag, args.pgid)))
        return 0
    return 0 if stop(args.tag, args.pgid, args.grace, args.named) else 1


if __name__ == "__main__":
    sys.exit(main())
