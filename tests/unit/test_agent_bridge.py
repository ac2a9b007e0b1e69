"""The text bridge (LLM tokens -> TTS segments) and the continuation joiner: pure logic."""

from __future__ import annotations

import random
import re

import pytest

from agent.bridge import BridgeOptions, ContinuationJoiner, Segment, TextBridge


def run(tokens: list[str], options: BridgeOptions | None = None) -> list[Segment]:
    bridge = TextBridge(options)
    out: list[Segment] = []
    for t in tokens:
        out += bridge.push(t)
    out += bridge.flush()
    return out


def words(text: str) -> list[str]:
    """LLM-like tokens: each word with its leading space."""
    return re.findall(r"\s*\S+", text)


def texts(segs: list[Segment]) -> list[str]:
    return [s.text for s in segs]


EN = "Hello! I am the streamtalk demo assistant. How can I help you today?"
ZH = "你好，我是流式语音助手。今天天气很好，我们一起去公园散步吧，好不好？"
STORY = ("Once upon a time, a small voice agent learned to listen carefully. It waited for "
         "people to finish their sentences, then answered quickly and clearly, and it stopped "
         "talking the moment someone interrupted.")


@pytest.mark.parametrize("text", [EN, ZH, STORY, "The price is 3.5 dollars, or 1,000 yen.",
                                  "Short.", "", "a b c d e f g h i j k l m n o p q r s t"])
@pytest.mark.parametrize("split", ["words", "chars", "random"])
def test_segments_join_back_to_the_input(text: str, split: str) -> None:
    if split == "words":
        tokens = words(text)
    elif split == "chars":
        tokens = list(text)
    else:
        rng = random.Random(len(text))
        tokens, i = [], 0
        while i < len(text):
            n = rng.randint(1, 5)
            tokens.append(text[i : i + n])
            i += n
    segs = run(tokens)
    assert "".join(s.raw for s in segs) == text
    assert [s.index for s in segs] == list(range(len(segs)))


def test_segmentation_does_not_depend_on_token_boundaries() -> None:
    for text in (EN, ZH, STORY):
        assert texts(run(words(text))) == texts(run(list(text))) == texts(run([text]))


def test_starter_is_two_to_six_characters_and_goes_first() -> None:
    segs = run(words(EN))
    assert segs[0].reason == "starter" and segs[0].text == "Hello!"
    assert texts(run(words("I am the streamtalk demo.")))[0] == "I am"
    assert texts(run(words("Sure thing, here it is.")))[0] == "Sure"
    assert texts(run(list(ZH)))[0] == "你好，"
    assert texts(run(list("我今天很高兴见到你")))[0] == "我今天很高兴"  # six CJK characters
    for text in (EN, ZH, STORY, "Okay, let me think about that."):
        first = run(words(text) if " " in text else list(text))[0]
        assert 2 <= len(first.text) <= 6, first


def test_starter_is_emitted_as_soon_as_it_is_known() -> None:
    bridge = TextBridge()
    assert bridge.push("Hello") == []  # "Hello" might still grow ("Hellos")
    out = bridge.push("!")
    assert texts(out) == ["Hello!"]
    bridge = TextBridge()
    assert bridge.push("Sure") == []
    assert bridge.push(" t") == []  # "Sure t" still fits in 6
    assert texts(bridge.push("h")) == ["Sure"]  # "Sure th..." cannot


def test_a_long_first_word_is_the_whole_starter() -> None:
    segs = run(words("Absolutely right!"))
    assert texts(segs) == ["Absolutely", "right!"]
    assert segs[0].reason == "starter"


def test_flush_at_western_and_chinese_sentence_punctuation() -> None:
    assert texts(run(words(EN))) == [
        "Hello!", "I am the streamtalk demo assistant.", "How can I help you today?"]
    assert texts(run(list(ZH))) == ["你好，", "我是流式语音助手。", "今天天气很好，",
                                    "我们一起去公园散步吧，", "好不好？"]
    segs = run(words("Hi. Really? Yes! Fine; done."))
    assert texts(segs)[1:] == ["Really?", "Yes!", "Fine;", "done."]
    assert all(s.reason == "sentence" for s in segs[1:-1])


def test_a_sentence_is_flushed_without_waiting_for_the_next_token() -> None:
    bridge = TextBridge()
    bridge.push("Hello! ")
    assert texts(bridge.push("It is sunny today!")) == ["It is sunny today!"]
    assert bridge.pending == ""
    assert texts(bridge.push("你好。")) == ["你好。"]


def test_without_punctuation_flush_every_eight_to_twelve_units() -> None:
    text = " ".join(f"w{i}" for i in range(40))
    segs = run(words(text))
    assert segs[0].reason == "starter"
    for s in segs[1:-1]:
        assert 8 <= len(s.text.split()) <= 12, s
        assert s.reason == "length"
    cjk = "我们" * 20
    for s in run(list(cjk))[1:-1]:
        assert 8 <= len(s.text) <= 12, s


def test_a_clause_mark_after_eight_units_flushes() -> None:
    text = "one two three four five six seven eight nine, ten eleven twelve thirteen"
    segs = run(words("Hi. " + text))
    assert segs[1].text == "one two three four five six seven eight nine,"
    assert segs[1].reason == "clause"


def test_a_long_run_breaks_at_its_last_clause_mark() -> None:
    text = "then answered quickly and clearly, and it stopped talking the moment someone said"
    segs = run(words("Hi. " + text))
    assert segs[1].text == "then answered quickly and clearly,"


@pytest.mark.parametrize("text,kept", [
    ("It costs 3.5 dollars now.", "3.5"),
    ("We sold 1,000 units today.", "1,000"),
    ("Meet me at 10:30 tomorrow.", "10:30"),
    ("Use e.g. this one.", "e.g."),
    ("Ask Mr. Smith please.", "Mr. Smith"),
])
def test_numbers_and_abbreviations_are_not_split(text: str, kept: str) -> None:
    for tokens in (words(text), list(text)):
        segs = run(tokens)
        assert any(kept in s.text for s in segs), texts(segs)


def test_decimal_point_at_the_end_of_a_token_waits_for_the_next_one() -> None:
    bridge = TextBridge()
    bridge.push("Hi. ")
    assert bridge.push("It is 3.") == []  # "3." may be "3.5"
    assert texts(bridge.push("5 degrees.")) == ["It is 3.5 degrees."]  # a word before "." ends it
    assert bridge.push(" Then 2,") == []  # "2," may be "2,000"
    assert texts(bridge.push("000 came. ")) == ["Then 2,000 came."]


def test_ellipsis_and_closing_quotes_stay_with_their_sentence() -> None:
    segs = run(words('Hi. He said "stop." Then... nothing.'))
    assert texts(segs)[1:] == ['He said "stop."', "Then...", "nothing."]
    assert (texts(run(list("好。他说：「走吧。」然后呢？")))
            == ["好。他说：", "「走吧。」", "然后呢？"])


def test_punctuation_only_remainder_is_not_speakable() -> None:
    segs = run(["Okay.", " ..."])
    assert segs[-1].text == "..." and not segs[-1].speakable
    assert segs[0].speakable


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        BridgeOptions(starter_min_chars=5, starter_max_chars=3)
    with pytest.raises(ValueError):
        BridgeOptions(flush_min_units=0)
    custom = run(words(STORY), BridgeOptions(starter_max_chars=12, flush_min_units=3,
                                             flush_max_units=5))
    assert custom[0].text == "Once upon a"
    assert all(len(s.text.split()) <= 5 for s in custom[1:])


# --------------------------------------------------------------------------- continuation


def join(already: str, tokens: list[str]) -> str:
    j = ContinuationJoiner(already)
    return "".join(j.push(t) for t in tokens) + j.finish()


def test_a_true_continuation_passes_through() -> None:
    assert join("Once upon a time,", words(" a small agent learned.")) == " a small agent learned."


def test_a_restarted_answer_has_its_repeated_start_dropped() -> None:
    first = "Once upon a time, a small"
    full = STORY
    assert join(first, words(full)) == full[len(first):]
    assert first + join(first, list(full)) == full


def test_restart_detection_ignores_whitespace_differences() -> None:
    assert join("Hello!  I am", words("Hello! I am the agent.")) == " the agent."


def test_text_that_only_starts_like_the_answer_is_kept() -> None:
    # matches "Once" then diverges: nothing may be lost
    assert join("Once upon a time", words("Once more, then.")) == "Once more, then."


def test_a_repeat_that_ends_early_adds_nothing() -> None:
    assert join("Once upon a time, a small", words("Once upon")) == ""


def test_nothing_to_continue_passes_everything() -> None:
    assert join("", words("All new.")) == "All new."
