"""RWKV-6 "Finch" language model for transformers, parameter names as in fla's RWKV6 (fla-hub checkpoints load as is).

One parameter set, two execution paths for the WKV recurrence (see wkv6.py): fla's Triton kernels on CUDA, an exact
pure-PyTorch chunked form elsewhere. Everything else (projections, token shift, norms) is plain PyTorch on both.

Padding: positions where attention_mask is 0 are skipped by the recurrence (their k and log-decay are zeroed and the
token shift reaches past them), so every row of a padded batch gives the logits it gives alone.

Layers and models only: the recurrent state (`Rwkv6Cache`) lives in cache_rwkv6.py and `generate()` in
generation_rwkv6.py, both shared with AuroraLong's model.
"""

import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .cache_rwkv6 import CACHE_NAME, Rwkv6Cache, resolve_cache_argument
from .checkpoint_checks import CompleteCheckpointMixin
from .configuration_rwkv6 import WKV_BACKEND_ENV, Rwkv6Config
from .decode_step_rwkv6 import Rwkv6DecodeStep
from .generation_rwkv6 import Rwkv6GenerationMixin
from .wkv6 import fla_is_available, wkv6_chunked, wkv6_fla, wkv6_step

# Positions fed at a time when a prompt is only read into the state (`feed`, the prompt of `generate`): the
# activations of one chunk live at a time (the tiny test model grew +800 MB reading 100k tokens at once), and
# 4,096 positions still fill a GPU (fla's kernels work in chunks of 64).
FEED_CHUNK_TOKENS = 4096


def shift_tokens(x, previous, attention_mask=None):
    """The token shift: for each position, the input of the latest real token before it.

    x [B, T, C]; previous [B, C], the input of the token before x[:, 0] (zeros at the start of a sequence);
    attention_mask [B, T] or None (0 marks padding, which the shift reaches past).
    Returns (x_prev [B, T, C], last [B, C]): `last` is the input of the last real token, the next `previous`.
    """
    if attention_mask is None:
        if x.shape[1] == 1:  # a decoded token: `previous` itself, no copy (one kernel fewer per layer and step)
            return previous.unsqueeze(1), x[:, -1]
        return torch.cat([previous.unsqueeze(1), x[:, :-1]], dim=1), x[:, -1]
    batch, seq_len, width = x.shape
    history = torch.cat([previous.unsqueeze(1), x], dim=1)  # index 0 is `previous`, index t + 1 is x[:, t]
    positions = torch.arange(1, seq_len + 1, device=x.device).expand(batch, -1)
    last_real = torch.where(attention_mask.bool(), positions, 0).cummax(dim=1).values  # last real index <= t
    before = F.pad(last_real[:, :-1], (1, 0))  # last real index < t
    x_prev = history.gather(1, before.unsqueeze(-1).expand(-1, -1, width))
    last = history.gather(1, last_real[:, -1:].unsqueeze(-1).expand(-1, -1, width)).squeeze(1)
    return x_prev, last


class LowRankLinear(nn.Module):
    """`x @ weight.T (+ bias)` for the small layers of Finch's data-dependent token shift and decay (x_proj, w_proj).

    Not an `nn.Linear` on purpose: tools that take every `nn.Linear` (PEFT's `target_modules="all-linear"`,
    quantisers) must leave this machinery alone; it is already low-rank (ranks 32 / 64) and drives the decay and
    the token shift of every channel. The parameters are named as `nn.Linear`'s (`weight` [out, in], `bias` [out]),
    so checkpoints are unchanged.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.register_parameter("bias", nn.Parameter(torch.empty(out_features)) if bias else None)
        # nn.Linear's initialisation, drawn in the same order, so a seeded random model is the one it was when these
        # layers were nn.Linear (Rwkv6PreTrainedModel._init_weights then sets Finch's values)
        nn.Linear.reset_parameters(self)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

# Shown in these wrappers' repr, so PEFT's "Target module ... is not supported" error (raised when a user names a
# wrapper, e.g. LLaMA's "v_proj") says where an adapter belongs: the inner nn.Linear, which gets the shifted input.
ADAPTER_HINT = (
    "adapters (LoRA) go on its .linear, which receives the token-shifted input; presets naming those: "
    "auroralong_hf.training.lora_target_modules('attention' | 'ffn' | 'all')"
)


class TokenShiftLinear(nn.Module):
    """`linear(x + (x_prev - x) * mu)`: a projection of the interpolation between a token and the one before.

    `linear` is an `nn.Linear` (a LoRA target: it receives the shifted input) or, inside the time-mix's x_proj,
    a `LowRankLinear`.
    """

    def __init__(self, in_features: int, out_features: int, linear: type[nn.Module] = nn.Linear):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(in_features))
        self.linear = linear(in_features, out_features, bias=False)

    def forward(self, x, delta):
        return self.linear(torch.addcmul(x, delta, self.mu))  # x + delta * mu in one kernel

    def extra_repr(self) -> str:
        return ADAPTER_HINT if isinstance(self.linear, nn.Linear) else ""


class DecayLoRA(nn.Module):
    """The data-dependent decay: `time_decay + tanh(x @ W1) @ W2` (the bias of the second layer is time_decay)."""

    def __init__(self, hidden_size: int, rank: int):
        super().__init__()
        self.lora = nn.Sequential(
            LowRankLinear(hidden_size, rank, bias=False), nn.Tanh(), LowRankLinear(rank, hidden_size)
        )

    def forward(self, x):
        return self.lora(x)


class DataDependentShiftLinear(nn.Module):
    """`linear(x + (x_prev - x) * mix)` where `mix` [B, T, C] comes from the token itself (RWKV-6's ddlerp).

    Takes the interpolated input `x + (x_prev - x) * mix`: `Rwkv6TimeMix` forms it for r, w, k, v and g in one
    batched op (one kernel instead of ten, which is what a decoded token's time is made of on a GPU).
    """

    def __init__(self, linear: nn.Module):
        super().__init__()
        self.linear = linear

    def forward(self, shifted):
        return self.linear(shifted)

    def extra_repr(self) -> str:
        return ADAPTER_HINT if isinstance(self.linear, nn.Linear) else ""


class Rwkv6TimeMix(nn.Module):
    """RWKV-6 time mixing: data-dependent token shift, WKV recurrence, per-head GroupNorm, SiLU gate."""

    def __init__(self, config: Rwkv6Config, layer_idx: int):
        super().__init__()
        width, rank = config.hidden_size, config.time_mix_lora_rank
        self.layer_idx = layer_idx
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.group_norm_eps = config.group_norm_eps
        # x_proj: the five token-shift mixes (for r, w, k, v, g), from one LoRA on x + (x_prev - x) * mu
        self.x_proj = nn.Sequential(
            TokenShiftLinear(width, 5 * rank, LowRankLinear), nn.Tanh(), LowRankLinear(5 * rank, width, bias=False)
        )
        self.x_bias = nn.Parameter(torch.zeros(5, width))  # static part of the mixes, rows r, w, k, v, g
        self.r_proj = DataDependentShiftLinear(nn.Linear(width, width, bias=False))
        self.w_proj = DataDependentShiftLinear(DecayLoRA(width, config.time_decay_lora_rank))
        self.k_proj = DataDependentShiftLinear(nn.Linear(width, width, bias=False))
        self.v_proj = DataDependentShiftLinear(nn.Linear(width, width, bias=False))
        self.g_proj = DataDependentShiftLinear(nn.Linear(width, width, bias=False))
        self.bonus = nn.Parameter(torch.zeros(self.num_heads, self.head_size))  # u: weight of the current token
        self.g_norm = nn.GroupNorm(self.num_heads, width, eps=config.group_norm_eps)
        self.o_proj = nn.Linear(width, width, bias=False)

    def forward(self, x, shift_state, wkv_state, attention_mask, backend: str, chunk_size: int):
        """x [B, T, C] (normalised); shift_state [B, C]; wkv_state [B, H, K, K] fp32 or None.

        Returns (out [B, T, C], last token's x [B, C], new WKV state [B, H, K, K] fp32).
        """
        batch, seq_len, width = x.shape
        x_prev, last_x = shift_tokens(x, shift_state, attention_mask)
        delta = x_prev - x

        rank = self.x_proj[2].in_features // 5
        lora = self.x_proj[1](self.x_proj[0](x, delta)).view(batch * seq_len, 5, rank).transpose(0, 1)  # [5, BT, R]
        w2 = self.x_proj[2].weight.view(width, 5, rank).permute(1, 2, 0)  # [5, R, C]
        mixes = torch.baddbmm(self.x_bias.unsqueeze(1), lora, w2)  # mix_n = x_bias_n + lora_n @ W2_n: [5, BT, C]
        mixes = mixes.transpose(0, 1).view(batch, seq_len, 5, width)
        shifted = torch.addcmul(x.unsqueeze(2), delta.unsqueeze(2), mixes)  # x + delta * mix, [B, T, 5, C]
        x_r, x_w, x_k, x_v, x_g = shifted.unbind(dim=2)

        r = self.r_proj(x_r)
        k = self.k_proj(x_k)
        v = self.v_proj(x_v)
        g = self.g_proj(x_g)
        log_w = -self.w_proj(x_w).float().exp()  # per-step decay exp(log_w) in (0, 1)
        if attention_mask is not None:  # padding: no key enters the state and nothing decays
            keep = attention_mask[:, :, None].to(k.dtype)
            k = k * keep
            log_w = log_w * keep

        heads = (batch, seq_len, self.num_heads, self.head_size)
        r, k, v, log_w = r.view(heads), k.view(heads), v.view(heads), log_w.view(heads)
        if backend == "fla":
            o, wkv_state = wkv6_fla(r, k, v, log_w, self.bonus, wkv_state)
        elif seq_len == 1 and wkv_state is not None:
            o, wkv_state = wkv6_step(r[:, 0], k[:, 0], v[:, 0], log_w[:, 0], self.bonus, wkv_state)
            o = o.unsqueeze(1)
        else:
            o, wkv_state = wkv6_chunked(r, k, v, log_w, self.bonus, wkv_state, chunk_size=chunk_size)

        # GroupNorm in fp32: per-head outputs are small and the eps matters (see Rwkv6Config.group_norm_eps)
        o = F.group_norm(
            o.reshape(batch * seq_len, width).float(), self.num_heads,
            self.g_norm.weight.float(), self.g_norm.bias.float(), self.group_norm_eps,
        ).view(batch, seq_len, width)
        out = self.o_proj((o * F.silu(g.float())).to(x.dtype))
        return out, last_x, wkv_state.float()


class Rwkv6ChannelMix(nn.Module):
    """RWKV-6 channel mixing: `sigmoid(receptance(xr)) * value(relu(key(xk))^2)` on token-shifted inputs."""

    def __init__(self, config: Rwkv6Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.key = TokenShiftLinear(config.hidden_size, config.intermediate_size)
        self.value = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.receptance = TokenShiftLinear(config.hidden_size, config.hidden_size)

    def forward(self, x, shift_state, attention_mask):
        """x [B, T, C] (normalised) -> (out [B, T, C], last token's x [B, C])."""
        x_prev, last_x = shift_tokens(x, shift_state, attention_mask)
        delta = x_prev - x
        hidden = torch.relu(self.key(x, delta)).square()
        return torch.sigmoid(self.receptance(x, delta)) * self.value(hidden), last_x


class Rwkv6Block(GradientCheckpointingLayer):
    """Pre-norm residual block: h += TimeMix(LN1(h)); h += ChannelMix(LN2(h)). Block 0 first applies `pre_norm`."""

    def __init__(self, config: Rwkv6Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        if layer_idx == 0:
            self.pre_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = Rwkv6TimeMix(config, layer_idx)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = Rwkv6ChannelMix(config, layer_idx)

    def forward(self, hidden_states, attn_shift, ffn_shift, wkv_state, attention_mask, backend: str,
                chunk_size: int):
        """hidden_states [B, T, C] -> (hidden_states, new attn_shift [B, C], new ffn_shift [B, C], new wkv)."""
        if self.layer_idx == 0:
            hidden_states = self.pre_norm(hidden_states)
        out, attn_shift, wkv_state = self.attn(
            self.attn_norm(hidden_states), attn_shift, wkv_state, attention_mask, backend, chunk_size
        )
        hidden_states = hidden_states + out
        out, ffn_shift = self.ffn(self.ffn_norm(hidden_states), ffn_shift, attention_mask)
        return hidden_states + out, attn_shift, ffn_shift, wkv_state


class Rwkv6PreTrainedModel(CompleteCheckpointMixin, PreTrainedModel):
    config_class = Rwkv6Config
    config: Rwkv6Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Rwkv6Block"]
    _is_stateful = True  # generate() refuses assisted/speculative decoding: a recurrent state cannot roll back

    @torch.no_grad()
    def _init_weights(self, module):
        """Finch's initialisation (RWKV-LM's RWKV-6 recipe), so random models behave like young real ones."""
        config = self.config
        if isinstance(module, Rwkv6TimeMix):
            layers, width = config.num_hidden_layers, config.hidden_size
            ratio_0_to_1 = module.layer_idx / max(layers - 1, 1)
            ratio_1_to_almost_0 = 1.0 - module.layer_idx / layers
            ddd = torch.arange(width, dtype=torch.float32) / width
            mix = lambda power: 1.0 - ddd.pow(power)  # noqa: E731
            init.copy_(module.x_proj[0].mu, mix(ratio_1_to_almost_0))
            # rows r, w, k, v, g (fla's order)
            init.copy_(module.x_bias, torch.stack([
                mix(0.5 * ratio_1_to_almost_0),
                mix(ratio_1_to_almost_0),
                mix(ratio_1_to_almost_0),
                1.0 - (ddd.pow(ratio_1_to_almost_0) + 0.3 * ratio_0_to_1),
                mix(0.5 * ratio_1_to_almost_0),
            ]))
            n = torch.arange(width, dtype=torch.float32)
            decay_speed = -6 + 5 * (n / (width - 1)).pow(0.7 + 1.3 * ratio_0_to_1)
            init.copy_(module.w_proj.linear.lora[2].bias, decay_speed)
            zigzag = ((n + 1) % 3 - 1) * 0.1
            bonus = ratio_0_to_1 * (1 - n / (width - 1)) + zigzag
            init.copy_(module.bonus, bonus.view(module.num_heads, module.head_size))
            init.uniform_(module.x_proj[0].linear.weight, -1e-4, 1e-4)
            init.uniform_(module.x_proj[2].weight, -1e-2, 1e-2)
            init.uniform_(module.w_proj.linear.lora[0].weight, -1e-2, 1e-2)
            init.uniform_(module.w_proj.linear.lora[2].weight, -1e-2, 1e-2)
            for proj in (module.r_proj, module.k_proj, module.v_proj, module.g_proj):
                init.normal_(proj.linear.weight, std=1.0 / math.sqrt(width))
            init.normal_(module.o_proj.weight, std=0.5 / math.sqrt(width * layers))
            init.ones_(module.g_norm.weight)
            init.zeros_(module.g_norm.bias)
        elif isinstance(module, Rwkv6ChannelMix):
            ratio_1_to_almost_0 = 1.0 - module.layer_idx / config.num_hidden_layers
            ddd = torch.arange(config.hidden_size, dtype=torch.float32) / config.hidden_size
            init.copy_(module.key.mu, 1.0 - ddd.pow(ratio_1_to_almost_0))
            init.copy_(module.receptance.mu, 1.0 - ddd.pow(ratio_1_to_almost_0))
            init.normal_(module.key.linear.weight, std=1.0 / math.sqrt(config.hidden_size))
            init.normal_(module.receptance.linear.weight, std=1.0 / math.sqrt(config.hidden_size))
            init.normal_(module.value.weight, std=0.5 / math.sqrt(config.intermediate_size * config.num_hidden_layers))
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.uniform_(module.weight, -1e-4, 1e-4)
        elif module is getattr(self, "lm_head", None):
            init.normal_(module.weight, std=config.initializer_range)


class Rwkv6Model(Rwkv6PreTrainedModel):
    def __init__(self, config: Rwkv6Config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Rwkv6Block(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def wkv_backend(self, device: torch.device) -> str:
        """"fla" or "torch": the config/environment choice, "auto" resolved for `device`."""
        backend = self.config.resolved_wkv_backend()
        if backend == "auto":
            return "fla" if device.type == "cuda" and fla_is_available() else "torch"
        if backend == "fla" and (device.type != "cuda" or not fla_is_available()):
            source = WKV_BACKEND_ENV if os.environ.get(WKV_BACKEND_ENV, "").strip() else "wkv_backend"
            raise RuntimeError(
                f"{source}='fla' needs a CUDA device and flash-linear-attention installed (device: {device}, "
                f"fla installed: {fla_is_available()}); use 'torch' or 'auto'."
            )
        return backend

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        cache: Rwkv6Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Rwkv6Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """input_ids [B, T] (or inputs_embeds [B, T, C]); attention_mask [B, T] or [B, past + T], 0 at padding.

        With `cache` (named `past_key_values` before transformers 5.24; both names are accepted) the sequence continues
        from that state, which is updated in place and returned in the output's `CACHE_NAME` field.
        """
        cache = resolve_cache_argument(cache, past_key_values)
        inputs_embeds = self._embed(input_ids, inputs_embeds)
        batch, seq_len, _ = inputs_embeds.shape
        attention_mask = self._check_attention_mask(attention_mask, batch, seq_len)
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )

        if cache is None and use_cache:
            cache = Rwkv6Cache(self.config, batch, inputs_embeds.device, inputs_embeds.dtype)
        if cache is not None:
            if not isinstance(cache, Rwkv6Cache):
                raise TypeError(f"The recurrent state must be an Rwkv6Cache, got {type(cache).__name__}.")
            cache.check_compatible(self.config, batch)
        backend = self.wkv_backend(inputs_embeds.device)

        hidden_states = inputs_embeds
        all_hidden_states = () if output_hidden_states else None
        for i, block in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if cache is not None:
                state = (cache.attn_shift[i], cache.ffn_shift[i], cache.wkv[i])
            else:
                zeros = hidden_states.new_zeros(batch, self.config.hidden_size)
                state = (zeros, zeros, None)
            hidden_states, attn_shift, ffn_shift, wkv = block(
                hidden_states, *state, attention_mask, backend, self.config.wkv_chunk_size
            )
            if cache is not None:
                # copies: the shift vectors are views of [B, T, C] activations, which must not outlive this call
                cache.attn_shift[i] = attn_shift.to(cache.attn_shift[i].dtype, copy=True)
                cache.ffn_shift[i] = ffn_shift.to(cache.ffn_shift[i].dtype, copy=True)
                cache.wkv[i] = wkv

        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if cache is not None:
            cache.record(input_ids)
            cache.seen_tokens += seq_len
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            **{CACHE_NAME: cache if use_cache else None},
        )

    @torch.no_grad()
    def feed(self, cache: Rwkv6Cache, input_ids: torch.LongTensor | None = None,
             inputs_embeds: torch.FloatTensor | None = None, attention_mask: torch.Tensor | None = None,
             chunk_tokens: int = FEED_CHUNK_TOKENS) -> Rwkv6Cache:
        """Advance `cache` over ids [B, T] or embeddings [B, T, C] (attention_mask [B, T], 0 at padding) without
        keeping any output, `chunk_tokens` positions at a time: memory does not grow with T.

        The result is the state one `forward` over all T positions gives, up to float rounding (the WKV sums
        run in other chunks). Returns `cache`, updated in place.
        """
        if not isinstance(chunk_tokens, int) or chunk_tokens <= 0:
            raise ValueError(f"chunk_tokens must be an int > 0, got {chunk_tokens!r}.")
        inputs = input_ids if input_ids is not None else inputs_embeds
        if inputs is None or (input_ids is not None and inputs_embeds is not None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        if attention_mask is not None:
            attention_mask = self._check_attention_mask(attention_mask, inputs.shape[0], inputs.shape[1])
        for start in range(0, inputs.shape[1], chunk_tokens):
            piece = slice(start, start + chunk_tokens)
            self(
                input_ids=None if input_ids is None else input_ids[:, piece],
                inputs_embeds=None if inputs_embeds is None else inputs_embeds[:, piece],
                attention_mask=None if attention_mask is None else attention_mask[:, piece],
                cache=cache, use_cache=True, output_hidden_states=False,
            )
        return cache

    def embed(self, input_ids: torch.LongTensor) -> torch.FloatTensor:
        """input_ids [B, T] -> embeddings [B, T, C], after checking shape and vocabulary range."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq_len], got shape {list(input_ids.shape)}.")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids has no tokens (seq_len 0).")
        if input_ids.dtype.is_floating_point:
            raise TypeError(f"input_ids must hold integer token ids, got {input_ids.dtype}.")
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.config.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"input_ids holds token id {bad}, outside the vocabulary [0, {self.config.vocab_size}).")
        return self.embeddings(input_ids)

    def _embed(self, input_ids, inputs_embeds):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        if input_ids is not None:
            return self.embed(input_ids)
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must be [batch, seq_len, {self.config.hidden_size}], got {list(inputs_embeds.shape)}."
            )
        if inputs_embeds.shape[1] == 0:
            raise ValueError("inputs_embeds has no positions (seq_len 0).")
        return inputs_embeds

    @staticmethod
    def _check_attention_mask(attention_mask, batch: int, seq_len: int):
        """Keep the columns of the new positions; None when there is no padding (the fast path)."""
        if attention_mask is None:
            return None
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] < seq_len:
            raise ValueError(
                f"attention_mask must be [batch, seq_len] (0 at padding) covering the {seq_len} new positions of "
                f"{batch} sequences, got shape {list(attention_mask.shape)}."
            )
        attention_mask = attention_mask[:, -seq_len:]
        return None if bool(attention_mask.all()) else attention_mask



class Rwkv6ForCausalLM(Rwkv6PreTrainedModel, Rwkv6GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: Rwkv6Config):
        super().__init__(config)
        self.model = Rwkv6Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def feed(self, cache: Rwkv6Cache, input_ids: torch.LongTensor | None = None,
             inputs_embeds: torch.FloatTensor | None = None, attention_mask: torch.Tensor | None = None,
             chunk_tokens: int = FEED_CHUNK_TOKENS) -> Rwkv6Cache:
        """`Rwkv6Model.feed`: advance `cache` over ids [B, T] or embeddings [B, T, C] keeping no output."""
        return self.model.feed(cache, input_ids, inputs_embeds, attention_mask, chunk_tokens)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        cache: Rwkv6Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Rwkv6Cache | None = None,
        decode_step: Rwkv6DecodeStep | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits [B, T, V] (the last `logits_to_keep` positions when > 0); loss when labels [B, T] are given.

        `cache` (or its pre-5.24 name `past_key_values`): the state to continue, updated in place and returned in the
        output's `CACHE_NAME` field. `decode_step`: what `generate` passes for a decoded token (ids [B, 1], real, with
        a cache): the token runs through that `Rwkv6DecodeStep` instead (same logits and state; the mask is unused).
        """
        if decode_step is not None:
            return decode_step(input_ids, resolve_cache_argument(cache, past_key_values))
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=resolve_cache_argument(cache, past_key_values),
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = outputs.last_hidden_state
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, kept])

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
        )


__all__ = ["FEED_CHUNK_TOKENS", "Rwkv6ForCausalLM", "Rwkv6Model", "Rwkv6PreTrainedModel"]
