"""How a stream's frames are cut into packets: the first packet's frames, then packets that
grow to packet_tokens, each at most the frames sent before it."""

from __future__ import annotations

import numpy as np
import pytest

from streamtalk_common.audio import SAMPLES_PER_FRAME
from tts_engine.runtime.session import StreamSession
from tts_engine.sampling import SamplingParams
from tts_engine.synthesis import Request


def packet_sizes(first_packet_tokens: int, packet_tokens: int, frames: int) -> list[int]:
    """Feed `frames` frames one at a time, sending a packet whenever the session asks for
    one (as the engine's worker does), and the rest at the end."""
    request = Request("hi", "serena", "english", SamplingParams(), None)
    s = StreamSession(request, packet_tokens, first_packet_tokens, sink=lambda item: None)
    sizes = []
    for _ in range(frames):
        s.add_frame(np.zeros(16, np.int64), np.zeros(SAMPLES_PER_FRAME, np.float32), 0.0, 0.0)
        if len(s.pending) >= s.next_packet_frames:
            sizes.append(s.take_packet(packet_metrics=False).frames)
    if s.pending:
        sizes.append(s.take_packet(packet_metrics=False).frames)
    assert s.metrics.frames == frames
    return sizes


@pytest.mark.parametrize(("first", "tokens", "sizes"), [
    (1, 2, [1, 1, 2]),  # the defaults
    (1, 4, [1, 1, 2, 4]),
    (1, 1, [1, 1]),
    (2, 4, [2, 2, 4]),
    (3, 2, [2, 2]),  # a first packet larger than packet_tokens is capped to it
])
def test_packets_grow_to_packet_tokens_each_no_longer_than_the_audio_before_it(
    first: int, tokens: int, sizes: list[int]
) -> None:
    assert packet_sizes(first, tokens, sum(sizes)) == sizes
    # a longer stream goes on at packet_tokens
    assert packet_sizes(first, tokens, sum(sizes) + 3 * tokens) == sizes + [tokens] * 3
