"""Which stream advances next: first packets first, then the least playback slack.

A reply's first packet decides how long the listener waits, so streams that
have not yet delivered audio go first (oldest first). After that, the stream
whose delivered audio is closest to running out (delivered audio minus
elapsed time) goes next, so no listener hears a gap while another stream is
far ahead of real time.
"""

from __future__ import annotations

from typing import Protocol


class Schedulable(Protocol):
    order: int

    @property
    def first_packet_sent(self) -> bool: ...

    def playback_slack_s(self, now: float) -> float: ...


def pick_next(sessions: list, now: float):
    waiting = [s for s in sessions if not s.first_packet_sent]
    if waiting:
        return min(waiting, key=lambda s: s.order)
    return min(sessions, key=lambda s: (s.playback_slack_s(now), s.order))
