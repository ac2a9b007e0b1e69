"""Deterministic scripted replies: keyword rules from a JSON file, and token pacing.

A reply may quote the request: `{transcript}` is what the user just said, `{previous}` the
user's turn before it in the request's messages ("nothing yet" when there is none), which
shows that a conversation's history reached the model.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path


class ResponsesFileError(ValueError):
    """The rules file is missing or malformed."""


@dataclass(frozen=True)
class Rule:
    keywords: tuple[str, ...]
    reply: str
    pattern: re.Pattern[str]


def _keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = [r"\s+".join(re.escape(w) for w in k.split()) for k in keywords]
    return re.compile(r"(?<![\w'])(?:" + "|".join(alternatives) + r")(?![\w'])", re.IGNORECASE)


class ScriptedResponder:
    def __init__(self, rules: list[Rule], default: str, empty: str) -> None:
        self.rules = rules
        self.default = default
        self.empty = empty

    @classmethod
    def from_file(cls, path: Path) -> ScriptedResponder:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ResponsesFileError(f"cannot read responses file {path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ResponsesFileError(f"responses file {path} is not JSON: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: object, source: str = "<dict>") -> ScriptedResponder:
        if not isinstance(data, dict) or not isinstance(data.get("default"), str):
            raise ResponsesFileError(f"{source}: expected an object with a string 'default'")
        rules = []
        for i, raw in enumerate(data.get("rules", [])):
            keywords = raw.get("keywords") if isinstance(raw, dict) else None
            reply = raw.get("reply") if isinstance(raw, dict) else None
            if (
                not isinstance(keywords, list)
                or not keywords
                or not all(isinstance(k, str) and k.strip() for k in keywords)
                or not isinstance(reply, str)
                or not reply
            ):
                raise ResponsesFileError(
                    f"{source}: rules[{i}] needs 'keywords' (non-empty strings) and a 'reply'"
                )
            kws = tuple(k.strip() for k in keywords)
            rules.append(Rule(keywords=kws, reply=reply, pattern=_keyword_pattern(kws)))
        empty = data.get("empty", data["default"])
        if not isinstance(empty, str):
            raise ResponsesFileError(f"{source}: 'empty' must be a string")
        return cls(rules, data["default"], empty)

    def reply(self, user_text: str, earlier: Sequence[str] = ()) -> str:
        """The answer to `user_text`; `earlier`: the user's previous turns, oldest first."""
        said = " ".join(user_text.split())
        if not said:
            return self.empty
        reply = next((rule.reply for rule in self.rules if rule.pattern.search(said)), self.default)
        previous = " ".join(earlier[-1].split()).rstrip(".!?") if earlier else ""
        return (reply.replace("{transcript}", said.rstrip(".!?"))
                .replace("{previous}", previous or "nothing yet"))


_TOKEN_RE = re.compile(r"\s*\S+")


def split_tokens(text: str) -> list[str]:
    """Word-sized tokens that join back to `text` (leading whitespace kept on each)."""
    tokens = _TOKEN_RE.findall(text)
    if tokens and len("".join(tokens)) < len(text):
        tokens[-1] += text[len("".join(tokens)) :]
    return tokens


async def paced(
    tokens: list[str], first_token_delay_s: float, tokens_per_s: float
) -> AsyncIterator[str]:
    """Yield tokens on a fixed schedule: the first after the delay, then at the rate."""
    start = time.monotonic()
    for i, token in enumerate(tokens):
        due = start + first_token_delay_s + i / tokens_per_s
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        yield token
