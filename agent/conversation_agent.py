"""ConversationAgent: the room's LiveKit `Agent`, whose user turns hold every word said.

The framework commits a user turn when the VAD's end of speech and the end-of-turn model
say it is over. With a non-streaming STT (ours: one request per utterance) that can come
before the words of the turn's last utterance are known: a user who pauses mid-sentence
("my number is five five five ... one two three four") has the first half transcribed,
the second half still with the STT when the turn ends. Left alone, the reply answers the
first half and the second half arrives as a turn of its own that interrupts it. Here the
words still on their way are awaited (each recognition is bounded by the STT timeout)
and added to the turn before the reply is generated.
"""

from __future__ import annotations

import logging

from livekit.agents import Agent, llm

from .stt import OmniSTT

log = logging.getLogger("streamtalk.agent")


class ConversationAgent(Agent):
    def __init__(self, *, omni_stt: OmniSTT, instructions: str, chat_ctx: llm.ChatContext) -> None:
        super().__init__(instructions=instructions, chat_ctx=chat_ctx)
        self._omni_stt = omni_stt

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext,
                                     new_message: llm.ChatMessage) -> None:
        late = await self._omni_stt.take_unheard()
        if late:
            said = new_message.text_content or ""
            log.info("turn committed before the STT had its last words: %r + %r", said, late)
            new_message.content = [f"{said} {late}".strip()]
