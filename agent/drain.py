"""When a draining worker's room may be left: between turns, never mid-reply (pure logic).

On SIGTERM the livekit-agents worker drains: it takes no new job and waits up to
AGENT_DRAIN_TIMEOUT_S for its jobs to end. A job of ours would otherwise stay
until its user leaves, so each room leaves by itself as soon as it is between
turns, and the room reconciler (token_server/reconciler.py) brings an agent of
another worker in.

`TurnActivity` follows the room's event bus and says whether a turn is under way:

- the user is speaking (VAD start without its end);
- their speech is being recognized (`stt_start` without `stt_end`);
- a recognized turn may still be committed: less than `settle_s` (the endpointing
  delay and a margin) since the last end of speech or recognition;
- the agent is thinking, speaking or being interrupted (the duplex state is not
  LISTENING), or went back to LISTENING less than `settle_s` ago.

A room where none of this holds is idle, and is left at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .duplex import DuplexState
from .events import AgentEvent, Duplex, SttEnd, SttStart, VadEnd, VadStart

# Added to the endpointing delay: the time from the end of recognition to the framework's
# commit of the turn (and so to THINKING) is that delay plus a few event-loop steps.
SETTLE_MARGIN_S = 0.5


class TurnActivity:
    def __init__(self, settle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_s = settle_s
        self._clock = clock
        self._user_speaking = False
        self._recognizing = 0
        self._duplex = DuplexState.LISTENING
        self._last_change = -float("inf")

    def __call__(self, ev: AgentEvent[Any]) -> None:
        match ev.payload:
            case VadStart():
                self._user_speaking = True
            case VadEnd():
                self._user_speaking = False
            case SttStart():
                self._recognizing += 1
            case SttEnd():
                self._recognizing = max(0, self._recognizing - 1)
            case Duplex(transition=tr):
                self._duplex = tr.target
            case _:
                return
        self._last_change = self._clock()

    def idle(self) -> bool:
        """Whether no turn is under way: the room can be left without cutting anyone off."""
        return (not self._user_speaking and self._recognizing == 0
                and self._duplex is DuplexState.LISTENING
                and self._clock() - self._last_change >= self.settle_s)

    def describe(self) -> str:
        """What keeps the room busy, for the log."""
        if self._duplex is not DuplexState.LISTENING:
            return f"the agent is {self._duplex.value.lower()}"
        if self._user_speaking:
            return "the user is speaking"
        if self._recognizing:
            return "the user's speech is being recognized"
        if self._clock() - self._last_change < self.settle_s:
            return "the last turn has just ended"
        return "between turns"
