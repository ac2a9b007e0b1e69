"""Shape the tiny preset's random weights so greedy output behaves like speech.

A plain random talker almost never picks EOS, so greedy synthesis would run to
the length guard. The tiny checkpoint instead carries a small, exact
"duration counter" built from ordinary weights (so the official code runs it
too and parity still holds):

* two indicator channels in the input embeddings: GEN is set by every
  codebook-0 embedding (present at each generated frame's input), TEXT by the
  codec pad embedding (present at each text position of the prompt);
* one attention head in layer 0 whose query is zero, so it averages its
  values uniformly over all positions so far; its values read the two
  indicators, its output writes the running fractions into two count
  channels that no other layer writes to;
* the EOS row of the codec head reads `GEN_count - FRAMES_PER_TEXT * TEXT_count`,
  strongly scaled, so EOS wins once the frames generated exceed
  FRAMES_PER_TEXT times the text positions: the length follows the text.

All other weights stay random; the four reserved channels are cut out of
every other read and write so the counter stays exact.
"""

from __future__ import annotations

import torch

from .model.configs import TTSModelConfig

FRAMES_PER_TEXT = 3.0  # frames of speech per text position (about 4 per English word)
INDICATOR = 2.0  # magnitude of the indicator channels in the embeddings
EOS_GAIN = 40.0  # sharpness of the EOS switch relative to the random logits
COUNT_GAIN = 4.0


def shape_tiny_weights(
    w: dict[str, torch.Tensor], cfg: TTSModelConfig, frames_per_text: float = FRAMES_PER_TEXT
) -> None:
    t = cfg.talker
    g = t.geometry
    hidden = g.hidden_size
    gen, text, gen_count, text_count = hidden - 1, hidden - 2, hidden - 3, hidden - 4
    reserved = [gen, text, gen_count, text_count]
    prefix = "talker."

    # Inputs: only the indicators live in the reserved channels.
    w[prefix + "model.codec_embedding.weight"][:, reserved] = 0.0
    for i in range(t.num_code_groups - 1):
        w[prefix + f"code_predictor.model.codec_embedding.{i}.weight"][:, reserved] = 0.0
    w[prefix + "text_projection.linear_fc2.weight"][reserved, :] = 0.0
    w[prefix + "text_projection.linear_fc2.bias"][reserved] = 0.0
    w[prefix + "model.codec_embedding.weight"][:2048, gen] = INDICATOR
    w[prefix + "model.codec_embedding.weight"][t.codec_pad_id, text] = INDICATOR

    # Every layer ignores and leaves alone the reserved channels...
    for layer in range(g.num_hidden_layers):
        base = prefix + f"model.layers.{layer}."
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj",
                     "mlp.up_proj"):
            w[base + name + ".weight"][:, reserved] = 0.0
        for name in ("self_attn.o_proj", "mlp.down_proj"):
            w[base + name + ".weight"][reserved, :] = 0.0

    # ...except the counter: query heads of key/value head 0 in layer 0.
    base = prefix + "model.layers.0.self_attn."
    d = g.head_dim
    heads_per_kv = g.num_attention_heads // g.num_key_value_heads
    counter_heads = range(heads_per_kv)
    for h in counter_heads:
        w[base + "q_proj.weight"][h * d:(h + 1) * d, :] = 0.0  # zero query: uniform attention
        w[base + "o_proj.weight"][:, h * d:(h + 1) * d] = 0.0
    w[base + "v_proj.weight"][0:d, :] = 0.0
    w[base + "v_proj.weight"][0, gen] = 1.0
    w[base + "v_proj.weight"][1, text] = 1.0
    w[base + "o_proj.weight"][gen_count, 0] = COUNT_GAIN
    w[base + "o_proj.weight"][text_count, 1] = COUNT_GAIN

    # Output: EOS reads the counter; no other logit sees the reserved channels.
    head = w[prefix + "codec_head.weight"]
    head[:, reserved] = 0.0
    head[t.codec_eos_id, :] = 0.0
    head[t.codec_eos_id, gen_count] = EOS_GAIN
    head[t.codec_eos_id, text_count] = -EOS_GAIN * frames_per_text
