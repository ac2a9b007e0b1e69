"""The text bridge: LLM tokens in, TTS segments out (pure logic, no I/O).

The first audio of a reply waits for the first segment, so the first segment
is a short *starter* of 2-6 characters (a word or two, or a couple of Chinese
characters); it goes to the TTS the moment it is known. After it, a segment
ends at sentence punctuation (Western `. ! ? ;` and Chinese `。！？；`), at a
clause mark (`, :` `，、：`) once it holds 8 units, or after 12 units when no
punctuation comes (a unit is a Western word or one CJK character). Words and
numbers are never split: `3.5`, `1,000` and `10:30` stay whole, and an ASCII
`.`/`,`/`:` is only a boundary when what follows shows it is one.

The raw texts of all segments, joined, are exactly the text that was pushed.

Continuation (ENABLE_CONTINUATION): a reply is generated as a short first
request followed, when that one stopped at its token limit, by a second
request that continues it. `ContinuationJoiner` merges the second stream into
the text already produced; a backend that restarts its answer from the
beginning instead of continuing is recognised and its repeated prefix dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

SENTENCE_MARKS = frozenset("。！？；!?;…\n")
CLAUSE_MARKS = frozenset("，、：")
AMBIGUOUS_MARKS = frozenset(".,:")  # depend on what follows ("3.5", "1,000", "e.g.")
CLOSERS = frozenset("\"'”’）)]」』】》〉")
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "jr", "sr", "no", "approx",
     "a.m", "p.m"}
)


def is_cjk(ch: str) -> bool:
    """Han, kana and CJK punctuation-free ideographs: one character is one unit."""
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0x3040 <= o <= 0x30FF
        or 0xF900 <= o <= 0xFAFF
        or 0x20000 <= o <= 0x2FA1F
    )


def _is_word_char(ch: str) -> bool:
    return not (
        ch.isspace()
        or is_cjk(ch)
        or ch in SENTENCE_MARKS
        or ch in CLAUSE_MARKS
        or ch in AMBIGUOUS_MARKS
        or ch in CLOSERS
    )


@dataclass(frozen=True)
class BridgeOptions:
    starter_min_chars: int = 2
    starter_max_chars: int = 6
    flush_min_units: int = 8
    flush_max_units: int = 12

    def __post_init__(self) -> None:
        if not 1 <= self.starter_min_chars <= self.starter_max_chars:
            raise ValueError("need 1 <= starter_min_chars <= starter_max_chars")
        if not 1 <= self.flush_min_units <= self.flush_max_units:
            raise ValueError("need 1 <= flush_min_units <= flush_max_units")


@dataclass(frozen=True)
class Segment:
    raw: str  # exactly as pushed (joined raws == input)
    index: int
    reason: str  # starter | sentence | clause | length | end

    @property
    def text(self) -> str:
        return self.raw.strip()

    @property
    def speakable(self) -> bool:
        return any(_is_word_char(c) or is_cjk(c) for c in self.raw)


@dataclass(frozen=True)
class _Boundary:
    pos: int  # cut after buf[:pos]
    kind: str  # word | cjk | sentence | clause
    letters: int  # word and CJK characters before pos
    units: int  # completed words and CJK characters before pos


class TextBridge:
    """Feed `push(token)` as tokens arrive and `flush()` at the end; both return segments."""

    def __init__(self, options: BridgeOptions | None = None) -> None:
        self.options = options or BridgeOptions()
        self._buf = ""
        self._count = 0

    @property
    def pending(self) -> str:
        return self._buf

    def push(self, token: str) -> list[Segment]:
        if not token:
            return []
        self._buf += token
        return self._drain(final=False)

    def flush(self) -> list[Segment]:
        """End of input: emit every decided segment, then the remainder."""
        out = self._drain(final=True)
        if self._buf:
            out.append(self._emit(len(self._buf), "end"))
        return out

    # -- internals ------------------------------------------------------------

    def _emit(self, pos: int, reason: str) -> Segment:
        seg = Segment(raw=self._buf[:pos], index=self._count, reason=reason)
        self._buf = self._buf[pos:]
        self._count += 1
        return seg

    def _drain(self, final: bool) -> list[Segment]:
        out: list[Segment] = []
        while self._buf:
            bounds, complete = _boundaries(self._buf, final)
            cut = self._decide(bounds, complete)
            if cut is None:
                break
            pos, reason = cut
            out.append(self._emit(pos, reason))
        return out

    def _decide(self, bounds: list[_Boundary], complete: bool) -> tuple[int, str] | None:
        opts = self.options
        buf = self._buf
        starter = self._count == 0
        last_clause: _Boundary | None = None
        for k, b in enumerate(bounds):
            nxt = bounds[k + 1] if k + 1 < len(bounds) else None
            # punctuation glued to this word decides instead of the word boundary
            glued = (
                b.kind in ("word", "cjk")
                and nxt is not None
                and nxt.kind in ("sentence", "clause")
                and _only_marks(buf[b.pos : nxt.pos])
            )
            if starter:
                if b.kind in ("sentence", "clause"):
                    if b.letters >= opts.starter_min_chars:
                        return b.pos, "starter"
                    continue
                if b.letters < opts.starter_min_chars or glued:
                    continue
                length = len(buf[: b.pos].strip())
                if length >= opts.starter_max_chars:
                    return b.pos, "starter"
                if nxt is not None:
                    if len(buf[: nxt.pos].strip()) > opts.starter_max_chars:
                        return b.pos, "starter"
                    continue
                # the next unit is still arriving: cut once it cannot fit any more
                if len(buf.strip()) > opts.starter_max_chars:
                    return b.pos, "starter"
                return None
            if b.kind == "sentence":
                if b.letters >= 1:
                    return b.pos, "sentence"
            elif b.kind == "clause":
                if b.units >= opts.flush_min_units:
                    return b.pos, "clause"
                if b.units >= 2:
                    last_clause = b
            elif b.units >= opts.flush_max_units and not glued:
                # too long without a sentence end: prefer the last clause mark
                if last_clause is not None:
                    return last_clause.pos, "clause"
                return b.pos, "length"
        return None


OPENERS = {"「": "」", "『": "』", "（": "）", "(": ")", "【": "】", "《": "》", "“": "”", "‘": "’"}


def _open_quote(text: str) -> bool:
    """True when a quote or bracket opened in `text` is not closed yet."""
    for opener, closer in OPENERS.items():
        if text.count(opener) > text.count(closer):
            return True
    return text.count('"') % 2 == 1


def _only_marks(s: str) -> bool:
    return bool(s) and all(
        c in SENTENCE_MARKS or c in CLAUSE_MARKS or c in AMBIGUOUS_MARKS or c in CLOSERS for c in s
    )


def _classify(buf: str, i: int, final: bool) -> str | None:
    """Kind of buf[i]: word, cjk, space, sentence, clause, closer, other; None = undecided."""
    c = buf[i]
    if c.isspace() and c != "\n":
        return "space"
    if is_cjk(c):
        return "cjk"
    if c in SENTENCE_MARKS:
        return "sentence"
    if c in CLAUSE_MARKS:
        return "clause"
    if c in CLOSERS:
        return "closer"
    if c in AMBIGUOUS_MARKS:
        prev = buf[i - 1] if i > 0 else ""
        if i + 1 >= len(buf):
            # at the end of what arrived, "3." / "e." / ".." / "," may still continue
            single = prev.isalpha() and (i < 2 or not _is_word_char(buf[i - 2])
                                         or buf[i - 2] == ".")
            if not final and (prev.isdigit() or prev == "." or c != "." or single):
                return None
            nxt = ""
        else:
            nxt = buf[i + 1]
        if prev.isdigit() and nxt.isdigit():
            return "word"  # 3.5, 1,000, 10:30
        if nxt and _is_word_char(nxt):
            return "word"  # e.g. "e.g", "a.m", "x,y" — not a boundary
        if c == ".":
            if nxt == ".":
                return "sentence"  # an ellipsis run
            j = i
            while j > 0 and (_is_word_char(buf[j - 1]) or buf[j - 1] == "."):
                j -= 1
            if buf[j:i].lower() in ABBREVIATIONS:
                return "word"
            return "sentence"
        return "clause"
    return "word"


def _boundaries(buf: str, final: bool) -> tuple[list[_Boundary], bool]:
    """Cut positions in `buf`; the flag is False when the scan stopped at an undecided spot."""
    out: list[_Boundary] = []
    n = len(buf)
    letters = units = 0
    in_word = False
    i = 0
    while i < n:
        kind = _classify(buf, i, final)
        if kind is None:
            return out, False
        if kind == "word":
            in_word = True
            letters += 1
            i += 1
            continue
        if in_word:
            in_word = False
            units += 1
            out.append(_Boundary(i, "word", letters, units))
        if kind == "cjk":
            letters += 1
            units += 1
            i += 1
            out.append(_Boundary(i, "cjk", letters, units))
            continue
        if kind in ("sentence", "clause"):
            j = i + 1
            # take the whole run of marks and closing quotes: "?!", "...", "。」"
            while j < n and (buf[j] in SENTENCE_MARKS or buf[j] in CLOSERS or buf[j] in CLAUSE_MARKS
                             or (buf[j] == "." and kind == "sentence")):
                j += 1
            if j >= n and not final and (
                _classify(buf, n - 1, final) is None or _open_quote(buf[:j])
            ):
                return out, False  # "3." / ".." may continue; a closing quote may follow
            if any(buf[k] in SENTENCE_MARKS or buf[k] == "." for k in range(i, j)):
                kind = "sentence"
            out.append(_Boundary(j, kind, letters, units))
            i = j
            continue
        i += 1  # space, closer, other
    if in_word:
        if not final:
            return out, False
        units += 1
        out.append(_Boundary(n, "word", letters, units))
    return out, True


class ContinuationJoiner:
    """Append a continuation stream to `already` without repeating it.

    A backend that honours the continuation request sends new text, which
    passes straight through (after a short hold while it still matches the
    start of `already`). A backend that restarts the answer sends `already`
    again first; that prefix is recognised (whitespace-insensitively) and
    dropped.
    """

    def __init__(self, already: str) -> None:
        self._target = "".join(already.split())
        self._held = ""
        self._matched = 0  # chars of the target matched so far (spaces ignored)
        self._passing = not self._target

    @property
    def passing(self) -> bool:
        return self._passing

    def push(self, token: str) -> str:
        if self._passing:
            return token
        self._held += token
        for ch in token:
            if ch.isspace():
                continue
            if self._matched < len(self._target) and ch == self._target[self._matched]:
                self._matched += 1
                continue
            # diverged: this is genuinely new text
            self._passing = True
            out, self._held = self._held, ""
            return out
        if self._matched >= len(self._target):
            # the whole earlier answer came again: drop it, keep what follows it
            self._passing = True
            rest = _after_nonspace(self._held, len(self._target))
            self._held = ""
            return rest
        return ""

    def finish(self) -> str:
        """End of the continuation stream: a held partial repeat is dropped."""
        if self._passing:
            return ""
        self._held = ""
        return ""


def _after_nonspace(text: str, count: int) -> str:
    """The part of `text` after its first `count` non-space characters."""
    seen = 0
    for i, ch in enumerate(text):
        if ch.isspace():
            continue
        seen += 1
        if seen == count:
            return text[i + 1 :]
    return ""
