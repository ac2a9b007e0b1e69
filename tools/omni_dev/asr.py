"""Speech recognition with faster-whisper on CPU (int8), one request at a time."""

from __future__ import annotations

import asyncio
import gc
import io
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("omni_dev.asr")

SAMPLE_RATE = 16000


class AudioDecodeError(ValueError):
    """The bytes are not audio that can be decoded."""


class AudioTooLongError(ValueError):
    """The audio lasts longer than the caller allows."""


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration_s: float
    segments: tuple[tuple[float, float, str], ...]


class Transcriber:
    """Loads the model once; transcribes in a single worker thread."""

    def __init__(self, model_dir: Path, threads: int = 2) -> None:
        from faster_whisper import WhisperModel

        self.model_dir = model_dir
        self._model = WhisperModel(
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr")

    def warm_up(self) -> float:
        """Transcribe one second of quiet noise, so the first user's request does not pay for
        the runtime's first-call set-up (a few hundred ms on a small CPU). Returns seconds."""
        start = time.monotonic()
        self._transcribe_samples(np.random.default_rng(0).normal(0.0, 0.01, SAMPLE_RATE)
                                 .astype(np.float32))
        return time.monotonic() - start

    @staticmethod
    def decode(data: bytes, max_s: float) -> np.ndarray:
        """Any container PyAV reads (wav, mp3, ogg, flac...) -> float32 mono 16 kHz.

        Decoding stops once the audio passes `max_s` (AudioTooLongError), so a small file of
        low-bitrate audio cannot expand into hours of samples."""
        import av

        if not data:
            raise AudioDecodeError("the audio is empty")
        limit = int(max_s * SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        samples = 0
        try:
            with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
                if not container.streams.audio:
                    raise AudioDecodeError("the file holds no audio stream")
                resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
                # the trailing None flushes the resampler
                for frame in itertools.chain(container.decode(audio=0), [None]):
                    if frame is not None:
                        frame.pts = None  # timestamps of bad files need not be monotonic
                    for out in resampler.resample(frame):
                        pcm = out.to_ndarray().reshape(-1)
                        samples += pcm.size
                        if samples > limit:
                            raise AudioTooLongError(f"the audio lasts longer than {max_s:g} s")
                        chunks.append(pcm)
        except (AudioDecodeError, AudioTooLongError):
            raise
        except Exception as exc:  # PyAV raises many error types for bad input
            raise AudioDecodeError(f"cannot decode the audio: {exc}") from None
        finally:
            gc.collect()  # PyAV's resampler frees its buffers only when collected
        if samples == 0:
            raise AudioDecodeError("the audio holds no samples")
        return np.concatenate(chunks).astype(np.float32) / 32768.0

    def transcribe(self, data: bytes, max_s: float, prompt: str | None = None) -> Transcript:
        return self._transcribe_samples(self.decode(data, max_s), prompt)

    def _transcribe_samples(self, audio: np.ndarray, prompt: str | None = None) -> Transcript:
        with self._lock:
            segments, info = self._model.transcribe(
                audio,
                language="en",
                beam_size=1,
                temperature=0.0,
                condition_on_previous_text=False,
                vad_filter=False,
                initial_prompt=prompt or None,
            )
            parts = tuple((s.start, s.end, s.text.strip()) for s in segments)
        text = " ".join(p[2] for p in parts if p[2]).strip()
        return Transcript(
            text=text, language=info.language, duration_s=audio.size / SAMPLE_RATE, segments=parts
        )

    async def atranscribe(self, data: bytes, max_s: float, prompt: str | None = None) -> Transcript:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transcribe, data, max_s, prompt)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
