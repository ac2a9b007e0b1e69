"""pre_rtc.wav: exactly what the agent handed to WebRTC, for AutoRTC's pre/post comparison.

A frame tap on the room audio sink appends every frame sent to the room (the
reply audio at the published rate, 24 kHz mono 16-bit, in the order sent;
silence between replies is not recorded). `save()` writes
`${STREAMTALK_OUTPUT}/pre_rtc/<trace_id>/pre_rtc.wav`; the room calls it after
every reply and once more in a `finally` block when the job ends, so an
interrupted reply is kept too. Saving only happens when the dispatch metadata
carries a trace_id or AGENT_SAVE_PRE_RTC=1 (the room decides).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from livekit import rtc

from streamtalk_common.audio import SAMPLE_RATE, write_wav

log = logging.getLogger("streamtalk.pre_rtc")

MAX_SECONDS = 600.0  # keep at most this much audio (a long-running room)


class PreRtcRecorder:
    def __init__(self, output_dir: Path, trace_id: str, sample_rate: int = SAMPLE_RATE) -> None:
        self.path = output_dir / "pre_rtc" / trace_id / "pre_rtc.wav"
        self.sample_rate = sample_rate
        self._chunks: list[bytes] = []
        self._samples = 0
        self._lock = threading.Lock()
        self._dirty = False

    @property
    def seconds(self) -> float:
        return self._samples / self.sample_rate

    def on_frame(self, frame: rtc.AudioFrame) -> None:
        if frame.sample_rate != self.sample_rate or frame.num_channels != 1:
            return
        if self._samples >= MAX_SECONDS * self.sample_rate:
            return
        with self._lock:
            self._chunks.append(bytes(frame.data))
            self._samples += frame.samples_per_channel
            self._dirty = True

    def save_blocking(self) -> Path | None:
        with self._lock:
            if not self._dirty and self.path.exists():
                return self.path
            data = b"".join(self._chunks)
            self._dirty = False
        try:
            tmp = self.path.with_suffix(".wav.tmp")
            write_wav(tmp, data, self.sample_rate)
            tmp.replace(self.path)
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc)
            return None
        return self.path

    async def save(self) -> Path | None:
        return await asyncio.to_thread(self.save_blocking)
