"""Regional compilation (TTS_COMPILE=1): torch.compile of the decoder layers' parts.

Every talker and code-predictor layer runs a projection (`DecoderLayer.project`:
norm, q/k/v, RoPE) and `DecoderLayer.finish` (output projection, MLP, residuals);
the cache write and the attention between them stay eager (model/layers.py), but
for the code predictor's cache: there the projection is `project_into`, which
writes the new keys and values into the cache's slices itself, so that compiled,
the write is part of the kernel that makes them (150 copy kernels a frame fewer).
The parts see activations and slices only, never a cache or a layer index, so one
compiled code of each serves every layer of a geometry, every batch bucket and
every span:

    batch      dynamic (a bucket of 1 is specialised: torch always does for size 1)
    positions  dynamic (one position, a decode step, is specialised; two or more
               are the predictor's first step and every prefill)

which makes 4 compiled variants per part and geometry that runs it (12 graphs for
the 0.6B, whose talker and predictor layers have one geometry; 16 for the 1.7B,
whose talker runs `project` and predictor `project_into`), and one more of
`finish` wherever an attention kernel lays its output out differently.
Each stack's RoPE table (cos and sin of its positions) and final norm, run once a
step around the layers, are compiled the same way: 4 variants each, and one more of
the RoPE table for the predictor's positions in a batch (one row broadcast to all; their
eager kernels were some 190 of a frame's). The codec decoder's SnakeBeta activation
(`snake_beta`, 29 layers) is compiled the same way for one row, channels and length
dynamic: 1 more graph, one fused kernel per layer instead of eight over the signal.
Its pre_transformer's layer step (`window_layer`: 8 float32 layers of one frame, their
norms, RoPE, the window's shift, some 40 eager kernels each) is compiled for every batch,
batch dynamic: 2 graphs, one code for the 8 layers.
`precompile` compiles all of them at start-up, before the warm-up synthesis and
the CUDA graphs, which then capture the compiled kernels per bucket as before.
The mode is torch.compile's default: the engine captures its own graphs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..codec_stream import CodecStreamDecoder, window_layer
from ..model.codec_decoder import CodecDecoder, SnakeBeta, float32_numerics, snake_beta
from ..model.configs import TransformerGeometry
from ..model.layers import KVCache, StaticKVCache
from ..model.talker import Talker

# The dynamic dimensions of each part's arguments: batch and positions.
DYNAMIC_DIMS = {
    "project": ((0, 1), (0, 1), (0, 1)),  # x [B, S, C], cos and sin [B, S, D]
    # the same, and an appended cache's slices for the new k and v [B, Hkv, S, D]
    "project_into": ((0, 1), (0, 1), (0, 1), (0, 2), (0, 2)),
    "finish": ((0, 1), (0, 2)),  # x [B, S, C], attended [B, H, S, D]
}
# The same for each stack's RoPE table and final norm, run once a step around the layers
STACK_DYNAMIC_DIMS = {
    "rotary": ((0, 1), ()),  # positions [B, S], the dtype
    "norm": ((0, 1),),  # x [B, S, C]
}
# snake_beta's: x [1, C, L], the logs of alpha and beta [C]
SNAKE_DYNAMIC_DIMS = ((1, 2), (0,), (0,))
# window_layer's: the layer, x [B, n, C], cos and sin [B, n, D], the mask [B, 1, n, window-1+n],
# the window's keys and values [B, H_kv, window-1, D]
WINDOW_DYNAMIC_DIMS = ((), (0,), (0,), (0,), (0,), (0,), (0,))
# Compiled variants a part may hold before torch gives up and runs it eagerly: 4 per
# geometry, more where attention kernels lay their output out differently per path;
# torch's default (8) is too tight for the 1.7B's two geometries.
RECOMPILE_LIMIT = 32


def compile_layers(talker: Talker) -> None:
    """Route every decoder layer's `project` and `finish` through torch.compile (lazily:
    the first call of each variant compiles it; `precompile` makes those calls)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                               RECOMPILE_LIMIT)
    for stack in (talker.model, talker.code_predictor.model):
        for layer in stack.layers:
            for part, dims in DYNAMIC_DIMS.items():
                setattr(layer, part, _compiled(getattr(layer, part), dims))
        for name, dims in STACK_DYNAMIC_DIMS.items():
            module = getattr(stack, name)
            module.forward = _compiled(module.forward, dims)


def compile_decoder_activations(decoder: CodecDecoder) -> None:
    """Route every SnakeBeta of the codec decoder through one compiled `snake_beta` for a
    batch of one row. Larger batches stay eager: on an H100 the fused kernel, its sizes
    symbolic, took 0.14 ms a frame for one row against 0.41 ms of eager kernels, but 3.4
    against 2.7 ms for 64 rows (docs/PERFORMANCE.md, optimisation log item 19)."""
    compiled = _compiled(snake_beta, SNAKE_DYNAMIC_DIMS)

    def activation(x: Tensor, log_alpha: Tensor, log_beta: Tensor) -> Tensor:
        return (compiled if x.shape[0] == 1 else snake_beta)(x, log_alpha, log_beta)

    for module in decoder.modules():
        if isinstance(module, SnakeBeta):
            module.activation = activation


def compile_decoder_layers(decoder: CodecStreamDecoder) -> None:
    """Route the stream decoder's pre_transformer layer steps through one compiled
    `window_layer` (batch dynamic, one frame)."""
    decoder.window_layer = _compiled(window_layer, WINDOW_DYNAMIC_DIMS)


def _compiled(part: Callable[..., Any],
              dims: tuple[tuple[int, ...], ...]) -> Callable[..., Any]:
    compiled = torch.compile(part, dynamic=False)  # dynamic: only the dimensions marked below

    def call(*args: Any) -> Any:
        # detach(): the same memory, but not a view. Dynamo guards a view's base, which
        # differs between a stack's input (a row of the pool) and a layer's output, and
        # would compile every variant twice.
        args = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
        for a, marked in zip(args, dims):
            for dim in marked:
                torch._dynamo.maybe_mark_dynamic(a, dim)
        return compiled(*args)

    return call


@torch.no_grad()
def precompile(talker: Talker, decoder: CodecStreamDecoder, span: int) -> None:
    """Compile every variant now, by running both stacks as the engine does, on scratch
    caches, at batch 1 and 2 (2 stands for any larger batch): the talker's prefill (two
    positions or more, causal) and its decode step (one position over a static cache of
    `span` positions, masked), the predictor's first step (two positions) and the steps
    after it (one, unmasked) into a cache of its real capacity (the strides of its slices
    are part of `project_into`'s compiled code). The attention's output layout, on which
    `finish` is specialised, may differ between these paths. Then the decoder's activation
    for one row, under the decoder's numerics (their flags are guarded), on sizes no real
    signal has (sizes that happen to be equal would share a symbol); then a one-frame
    decoder step at batch 1 and 2, which compiles its layer step."""
    device, dtype = talker.codec_head.weight.device, talker.codec_head.weight.dtype
    talker_g, predictor_g = talker.model.geometry, talker.code_predictor.model.geometry

    def zeros(g: TransformerGeometry, batch: int, positions: int) -> Tensor:
        return torch.zeros(batch, positions, g.hidden_size, device=device, dtype=dtype)

    for batch in (1, 2):
        talker.model(zeros(talker_g, batch, 2), KVCache.allocate(talker_g, batch, 2, device, dtype))
        rows = KVCache.allocate(talker_g, batch, span, device, dtype)
        pos = torch.zeros(batch, dtype=torch.long, device=device)
        talker.model(zeros(talker_g, batch, 1), StaticKVCache(rows.k, rows.v, pos, span))
        predictor = KVCache.allocate(predictor_g, batch, talker.config.num_code_groups, device,
                                     dtype, written_by_projection=True)
        for positions in (2, 1):
            talker.code_predictor.model(zeros(predictor_g, batch, positions), predictor)
    snake = next(m for m in decoder.model.modules() if isinstance(m, SnakeBeta))
    channels = torch.zeros(3, device=device, dtype=snake.alpha.dtype)
    with float32_numerics(decoder.tf32):
        snake.activation(torch.zeros(1, 3, 5, device=device, dtype=snake.alpha.dtype),
                         channels, channels)
    for batch in (1, 2):
        codes = torch.zeros(batch, decoder.model.config.num_quantizers, 1, dtype=torch.long,
                            device=device)
        decoder.step(decoder.new_state(batch), codes, check_codes=False)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])

