"""RWKV-6 "Finch" language model for transformers, parameter names as in fla's RWKV6 (fla-hub checkpoints load as is).

One parameter set, two execution paths for the WKV recurrence (see wkv6.py): fla's Triton kernels on CUDA, an exact
pure-PyTorch chunked form elsewhere. Everything else (projections, token shift, norms) is plain PyTorch on both.

Padding: positions where attention_mask is 0 are skipped by the recurrence (their k and log-decay are zeroed and the
token shift reaches past them), so every row of a padded batch gives the logits it gives alone.
"""

import contextlib
import errno
import math
import os
import uuid

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save as serialize
from torch import nn
from transformers import GenerationMixin, LogitsProcessor, LogitsProcessorList, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .checkpoint_checks import CompleteCheckpointMixin
from .configuration_rwkv6 import Rwkv6Config
from .wkv6 import fla_is_available, wkv6_chunked, wkv6_fla, wkv6_step

# transformers 5.24 renamed the recurrent state's argument (of `forward`, `generate`) and output field from
# `past_key_values` to `cache`; 5.23 knows only the old name. The models here accept both names in `forward` and
# `generate`; CACHE_NAME is the one the installed transformers uses: outputs carry the state under it (where its
# `generate` looks), and it is the name to read the state from an output or to pass it to transformers' own models.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

# Positions fed at a time when a prompt is only read into the state (`feed`, the prompt of `generate`): the
# activations of one chunk live at a time (the tiny test model grew +800 MB reading 100k tokens at once), and
# 4,096 positions still fill a GPU (fla's kernels work in chunks of 64).
FEED_CHUNK_TOKENS = 4096


def resolve_cache_argument(cache, past_key_values):
    """The state passed as `cache=` (transformers >= 5.24) or `past_key_values=` (5.23); both at once must agree."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("Pass the recurrent state once, as `cache` or as `past_key_values` (its 5.23 name).")
    return cache if cache is not None else past_key_values


_MIX_1, _MIX_2, _MIX_3 = -7046029254386353131, -4658895280553007687, -7723592293110705685  # splitmix64, signed


def token_fingerprint(input_ids: torch.LongTensor, start: int = 0) -> torch.LongTensor:
    """A fingerprint [B] of the ids [B, T] at positions start .. start + T - 1: sum of (id + 1) times a hash of the
    position, in int64 arithmetic that wraps, so fingerprints of consecutive pieces add up to that of the whole."""
    positions = torch.arange(start, start + input_ids.shape[1], dtype=torch.int64, device=input_ids.device)
    weight = (positions + 1) * _MIX_1
    weight = (weight ^ (weight >> 30)) * _MIX_2
    weight = (weight ^ (weight >> 27)) * _MIX_3
    return ((input_ids.long() + 1) * (weight ^ (weight >> 31))).sum(dim=1)


class Rwkv6Cache(Cache):
    """The recurrent state of every layer; its size does not depend on how many tokens were seen.

    Per layer: `attn_shift` and `ffn_shift` [B, C] (the normalised input of the last token seen by the time-mix and
    the channel-mix, for the token shift) and `wkv` [B, H, K, K] fp32 (the WKV matrix state).
    `seen_tokens` counts the positions fed so far (padding included), which generation uses to slice its inputs.
    `fingerprint` [B] int64 identifies the token ids fed so far (`token_fingerprint`; None once something was fed
    as embeddings only, or states of different lengths were stacked): `generate` tells by it whether `input_ids`
    repeat what the state has seen or are new tokens only. Its size does not grow either.
    """

    is_compileable = False
    is_croppable = False  # transformers >= 5.24 asks before rolling a cache back (assisted decoding, mps deferral)

    @property
    def is_linear(self) -> list[bool]:
        # transformers >= 5.24 does not cut the already-seen prefix from `generate`'s inputs when every layer of a
        # cache is a linear-attention one, whose length it cannot track. This state counts what it has seen
        # (`seen_tokens`, the `get_seq_length`), so the prefix must be cut as for an attention cache.
        return [False] * len(self)

    def __init__(self, config: Rwkv6Config, batch_size: int, device=None, dtype=torch.float32):
        super().__init__(layers=[])
        shape = (batch_size, config.hidden_size)
        wkv_shape = (batch_size, config.num_heads, config.head_size, config.head_size)
        self.attn_shift = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.ffn_shift = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.wkv = [torch.zeros(wkv_shape, device=device, dtype=torch.float32) for _ in range(config.num_hidden_layers)]
        self.seen_tokens = 0
        self.fingerprint = torch.zeros(batch_size, dtype=torch.int64)
        self.fingerprint_length = 0  # the ids the fingerprint covers (seen_tokens, unless generate shifts that)

    def __len__(self) -> int:
        return len(self.wkv)

    def __repr__(self) -> str:
        return f"Rwkv6Cache(layers={len(self)}, batch_size={self.batch_size}, seen_tokens={self.seen_tokens})"

    @property
    def nbytes(self) -> int:
        """Bytes held by the state's tensors (shift vectors and WKV matrices of every layer); the same after any
        number of tokens."""
        return sum(t.numel() * t.element_size() for states in (self.attn_shift, self.ffn_shift, self.wkv)
                   for t in states)

    @property
    def batch_size(self) -> int:
        return self.wkv[0].shape[0]

    def check_compatible(self, config: Rwkv6Config, batch_size: int):
        """Raise a clear error when this state cannot continue a model of `config` on a batch of `batch_size`."""
        expected = (config.num_hidden_layers, config.hidden_size, config.num_heads, config.head_size)
        found = (len(self.wkv), self.attn_shift[0].shape[-1], self.wkv[0].shape[1], self.wkv[0].shape[-1])
        if found != expected:
            raise ValueError(
                "The state (cache) is of another geometry: (layers, hidden, heads, head size) = "
                f"{found}, the model has {expected}."
            )
        if self.batch_size != batch_size:
            raise ValueError(f"The state (cache) holds {self.batch_size} sequences, the input has {batch_size}.")

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # unbounded: a recurrent state has no maximum length

    def _map(self, fn):
        for states in (self.attn_shift, self.ffn_shift, self.wkv):
            states[:] = [fn(state) for state in states]

    def _map_rows(self, fn):
        self._map(fn)
        if self.fingerprint is not None:
            self.fingerprint = fn(self.fingerprint)

    def reorder_cache(self, beam_idx: torch.LongTensor):
        self._map_rows(lambda state: state.index_select(0, beam_idx.to(state.device)))

    def batch_repeat_interleave(self, repeats: int):
        self._map_rows(lambda state: state.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor):
        self._map_rows(lambda state: state[indices.to(state.device)])

    def reset(self):
        self._map(torch.zeros_like)
        self.seen_tokens = 0
        self.fingerprint = torch.zeros(self.batch_size, dtype=torch.int64)
        self.fingerprint_length = 0

    def record(self, input_ids: torch.LongTensor | None) -> None:
        """Account for ids [B, T] just fed (None: fed as embeddings only, the ids are unknown)."""
        if self.fingerprint is None or input_ids is None:
            self.fingerprint = None
            return
        self.fingerprint = self.fingerprint + token_fingerprint(input_ids, self.fingerprint_length).cpu()
        self.fingerprint_length += input_ids.shape[1]

    def has_seen(self, input_ids: torch.LongTensor) -> bool | None:
        """Whether ids [B, T] begin with exactly the ids this state has seen (None: unknown)."""
        if self.fingerprint is None:
            return None
        if input_ids.shape[1] < self.fingerprint_length:
            return False
        seen = token_fingerprint(input_ids[:, :self.fingerprint_length]).cpu()
        return bool(torch.equal(seen, self.fingerprint))

    def copy(self) -> "Rwkv6Cache":
        """An independent copy, e.g. to ask several questions from one encoded video."""
        clone = Rwkv6Cache.__new__(Rwkv6Cache)
        Cache.__init__(clone, layers=[])
        clone.attn_shift = [t.clone() for t in self.attn_shift]
        clone.ffn_shift = [t.clone() for t in self.ffn_shift]
        clone.wkv = [t.clone() for t in self.wkv]
        clone.seen_tokens = self.seen_tokens
        clone.fingerprint = None if self.fingerprint is None else self.fingerprint.clone()
        clone.fingerprint_length = self.fingerprint_length
        return clone

    @classmethod
    def stack(cls, states: list["Rwkv6Cache"]) -> "Rwkv6Cache":
        """One batched state holding the rows of `states` in order (e.g. videos prefilled one at a time, then
        decoded together). `seen_tokens` becomes the largest of theirs: generation only uses it to slice new input
        ids, so pass an attention mask of `seen_tokens + new tokens` columns."""
        if not states:
            raise ValueError("Rwkv6Cache.stack needs at least one state.")
        shapes = {(len(s), s.attn_shift[0].shape[1:], s.wkv[0].shape[1:]) for s in states}
        if len(shapes) > 1:
            raise ValueError(f"Rwkv6Cache.stack got states of different geometries: {sorted(map(str, shapes))}.")
        stacked = cls.__new__(cls)
        Cache.__init__(stacked, layers=[])
        for name in ("attn_shift", "ffn_shift", "wkv"):
            layers = zip(*(getattr(s, name) for s in states), strict=True)
            setattr(stacked, name, [torch.cat(rows) for rows in layers])
        stacked.seen_tokens = max(s.seen_tokens for s in states)
        length = states[0].fingerprint_length
        known = all(s.fingerprint is not None and s.fingerprint_length == length for s in states)
        stacked.fingerprint = torch.cat([s.fingerprint for s in states]) if known else None
        stacked.fingerprint_length = length
        return stacked

    def save(self, path, overwrite: bool = False) -> None:
        """Write the state to a safetensors file (fp32 WKV, shift vectors in their dtype, seen_tokens, fingerprint).

        The file is written beside `path` and renamed over it, so a failed or interrupted write (a full disk,
        Ctrl-C) leaves nothing half-written and an earlier state at `path` as it was. An existing file is replaced
        only when it is a state written here, or with `overwrite=True`: anything else (a video, a model's weights)
        raises FileExistsError and is left as it was. A folder raises IsADirectoryError. A write that fails raises
        the OSError of its cause (PermissionError, ENOSPC, EROFS, ...) naming `path`.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a folder; give the state's file name.")
        if os.path.lexists(path) and not overwrite and not self.is_state_file(path):
            raise FileExistsError(f"{path} exists and is not an RWKV-6 state written by Rwkv6Cache.save; it is left "
                                  "as it is (choose another path, or remove it).")

        tensors = {}
        for name, states in (("attn_shift", self.attn_shift), ("ffn_shift", self.ffn_shift), ("wkv", self.wkv)):
            tensors.update({f"{name}.{i}": state.detach().contiguous().cpu() for i, state in enumerate(states)})
        if self.fingerprint is not None:
            tensors["fingerprint"] = self.fingerprint.contiguous().cpu()
        metadata = {"format": "auroralong-rwkv6-state", "seen_tokens": str(self.seen_tokens),
                    "fingerprint_length": str(self.fingerprint_length)}
        # serialised in memory (a state is megabytes: 13 MB a row for Finch 1.6B) and written here, so that an I/O
        # error is an OSError of its own kind, not safetensors' error about a temporary file of its own
        data = serialize(tensors, metadata=metadata)
        # not auroralong_hf.outputs.write_file_atomically: modeling/ ships as remote code and imports nothing outside it
        folder = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
            os.replace(tmp, path)
        except OSError as error:
            if error.errno is None:
                raise
            # a full disk's write error names no file; the temporary file's name means nothing to the caller
            raise OSError(error.errno, f"the state could not be written: {error.strerror}", path) from None
        finally:  # any failure, KeyboardInterrupt included
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    @staticmethod
    def is_state_file(path) -> bool:
        """Whether `path` is a safetensors file that `save` wrote (read from its header only)."""
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                return (handle.metadata() or {}).get("format") == "auroralong-rwkv6-state"
        except Exception:  # noqa: BLE001 - not readable as safetensors: not a state
            return False

    @classmethod
    def load(cls, path, config: Rwkv6Config | None = None, device=None) -> "Rwkv6Cache":
        """Read a state written by `save`; its geometry (layers, batch, width, heads) comes from the file.

        `config`: when given, a state of another geometry raises a clear error here rather than at the first
        forward. A file of another kind, or whose tensors disagree in shape, raises ValueError naming it; a missing
        file FileNotFoundError, a folder IsADirectoryError.
        """
        if os.path.isdir(path):  # safetensors would say "No such device (os error 19)"
            raise IsADirectoryError(errno.EISDIR, "a folder, not a state file written by Rwkv6Cache.save", str(path))
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
        except FileNotFoundError:
            raise FileNotFoundError(f"State file not found: {path}") from None
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"{path} is not a readable safetensors state file: {error}") from None
        if metadata.get("format") != "auroralong-rwkv6-state":
            raise ValueError(f"{path} is not an RWKV-6 state written by Rwkv6Cache.save.")
        layers = sum(1 for key in tensors if key.startswith("wkv."))
        names = ("attn_shift", "ffn_shift", "wkv")
        if not layers or any(f"{name}.{i}" not in tensors for name in names for i in range(layers)):
            raise ValueError(f"{path}: the state's tensors are incomplete (every layer needs {', '.join(names)}).")
        state = cls.__new__(cls)
        Cache.__init__(state, layers=[])
        for name in names:
            setattr(state, name, [tensors[f"{name}.{i}"].to(device) for i in range(layers)])
        shift, wkv = state.attn_shift[0], state.wkv[0]
        consistent = (
            wkv.dim() == 4 and wkv.shape[-1] == wkv.shape[-2] and shift.dim() == 2
            and all(t.shape == shift.shape for t in state.attn_shift + state.ffn_shift)
            and all(t.shape == wkv.shape for t in state.wkv)
            and shift.shape == (wkv.shape[0], wkv.shape[1] * wkv.shape[2])
        )
        if not consistent:
            raise ValueError(f"{path}: the state's tensors disagree in shape (not a state written by Rwkv6Cache.save).")
        shifts = state.attn_shift + state.ffn_shift
        if not shift.dtype.is_floating_point or any(t.dtype != shift.dtype for t in shifts) or any(
                t.dtype != torch.float32 for t in state.wkv):
            raise ValueError(f"{path}: the state's tensors have the wrong dtypes (shift vectors must share one "
                             "floating dtype, the WKV matrices must be float32).")
        if not all(bool(torch.isfinite(t).all()) for t in shifts + state.wkv):
            raise ValueError(f"{path}: the state holds NaN or infinite values.")
        counts = {}
        for key in ("seen_tokens", "fingerprint_length"):
            text = metadata.get(key, metadata.get("seen_tokens", "0"))
            if not text.isdigit():
                raise ValueError(f"{path}: the state's {key} is {text!r}, not a count of tokens.")
            counts[key] = int(text)
        state.seen_tokens, state.fingerprint_length = counts["seen_tokens"], counts["fingerprint_length"]
        state.fingerprint = tensors.get("fingerprint")
        if state.fingerprint is not None and (state.fingerprint.shape != (state.batch_size,)
                                              or state.fingerprint.dtype != torch.int64):
            raise ValueError(f"{path}: the state's fingerprint is {state.fingerprint.dtype} "
                             f"{list(state.fingerprint.shape)}, expected int64 [{state.batch_size}].")
        if config is not None:
            try:
                state.check_compatible(config, state.batch_size)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
        return state

    def select_rows(self, rows: list[int]) -> "Rwkv6Cache":
        """A new state holding copies of the given rows, in that order (same `seen_tokens`)."""
        picked = Rwkv6Cache.__new__(Rwkv6Cache)
        Cache.__init__(picked, layers=[])
        index = torch.tensor(rows, dtype=torch.long)
        for name in ("attn_shift", "ffn_shift", "wkv"):
            setattr(picked, name, [t.index_select(0, index.to(t.device)) for t in getattr(self, name)])
        picked.seen_tokens = self.seen_tokens
        picked.fingerprint = None if self.fingerprint is None else self.fingerprint[index]
        picked.fingerprint_length = self.fingerprint_length
        return picked

    def crop(self, max_length: int):
        raise NotImplementedError(
            "A recurrent RWKV-6 state cannot be rolled back to an earlier position (needed by assisted and "
            "speculative decoding); re-run the prefix instead."
        )


def shift_tokens(x, previous, attention_mask=None):
    """The token shift: for each position, the input of the latest real token before it.

    x [B, T, C]; previous [B, C], the input of the token before x[:, 0] (zeros at the start of a sequence);
    attention_mask [B, T] or None (0 marks padding, which the shift reaches past).
    Returns (x_prev [B, T, C], last [B, C]): `last` is the input of the last real token, the next `previous`.
    """
    if attention_mask is None:
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
        return self.linear(x + delta * self.mu)

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
    """`linear(x + (x_prev - x) * mix)` where `mix` [B, T, C] comes from the token itself (RWKV-6's ddlerp)."""

    def __init__(self, linear: nn.Module):
        super().__init__()
        self.linear = linear

    def forward(self, x, delta, mix):
        return self.linear(x + delta * mix)

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
        mixes = self.x_proj[1](self.x_proj[0](x, delta)).view(batch, seq_len, 5, rank)
        mixes = torch.einsum("btnr,cnr->btnc", mixes, self.x_proj[2].weight.view(width, 5, rank)) + self.x_bias
        mix_r, mix_w, mix_k, mix_v, mix_g = mixes.unbind(dim=2)

        r = self.r_proj(x, delta, mix_r)
        k = self.k_proj(x, delta, mix_k)
        v = self.v_proj(x, delta, mix_v)
        g = self.g_proj(x, delta, mix_g)
        log_w = -self.w_proj(x, delta, mix_w).float().exp()  # per-step decay exp(log_w) in (0, 1)
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
            raise RuntimeError(
                f"wkv_backend='fla' needs a CUDA device and flash-linear-attention installed (device: {device}, "
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


class NaNLogitsCheck(LogitsProcessor):
    """Stops `generate` with a ValueError when the next-token scores [B, V] hold NaN or +inf (non-finite weights
    or inputs, or an overflow): greedy decoding would otherwise pick token 0 at every step, an empty answer with
    no error. -inf is left alone: other processors set it on purpose (e.g. to forbid the end before min_length)."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if bool((torch.isnan(scores) | torch.isposinf(scores)).any()):
            raise ValueError(
                f"The next-token scores hold NaN or infinite values after {input_ids.shape[1]} positions: the "
                "model's weights or its inputs are not finite, or its dtype overflowed."
            )
        return scores


def with_nan_logits_check(processors: LogitsProcessorList | None) -> LogitsProcessorList:
    """A user's `logits_processor` list (or none) with `NaNLogitsCheck` appended (transformers runs custom
    processors after its own and before the sampling warpers)."""
    return LogitsProcessorList([*(processors or ()), NaNLogitsCheck()])


class Rwkv6GenerationMixin(GenerationMixin):
    """`generate()` for models whose state is an `Rwkv6Cache`, the same on transformers 5.23 and 5.24.

    A user's state is passed as `cache=state` (or `past_key_values=state`, its name before transformers 5.24; both
    work on every supported version) and continues with the tokens it has not seen (`new_tokens_start`):
    `input_ids` are either the whole sequence, whose first `state.seen_tokens` ids the state has seen (only the
    rest is fed), or new tokens only. The user's state is not changed: generation advances a copy, which a
    `return_dict_in_generate` output carries.
    """

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the language model makes its own recurrent state (Rwkv6Cache) on the first forward

    def new_state(self, batch_size: int = 1) -> Rwkv6Cache:
        """An empty state for `batch_size` sequences, on the model's device (shift vectors in the model's dtype)."""
        return Rwkv6Cache(self.config.get_text_config(), batch_size, device=self.device, dtype=self.dtype)

    @staticmethod
    def new_tokens_start(input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, state: Rwkv6Cache) -> int:
        """Where the tokens `state` has not seen begin in `input_ids` [B, L]: 0 when they are all new, else
        `state.seen_tokens` (the whole sequence). New: an attention mask of `seen_tokens + L` columns (transformers'
        convention), or ids that do not begin with exactly what the state has seen (its `fingerprint`); a state
        whose fingerprint is unknown (fed embeddings only) takes ids longer than `seen_tokens` as the whole sequence.
        """
        seen, length = state.seen_tokens, input_ids.shape[1]
        if attention_mask is not None and attention_mask.shape[1] == seen + length:
            return 0
        known = state.has_seen(input_ids)
        if (length > seen and known is not False) or (length == seen and known):
            return seen  # the whole sequence (exactly what was seen: nothing is left to feed, an error later)
        return 0

    def generate(self, inputs: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                 cache: Rwkv6Cache | None = None, past_key_values: Rwkv6Cache | None = None, **kwargs):
        """transformers' `generate`, the prompt read into the state `FEED_CHUNK_TOKENS` at a time (memory does not
        grow with its length), continuing a copy of a user's state from the tokens it has not seen (see the class
        docstring)."""
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        state = resolve_cache_argument(cache, past_key_values)
        if input_ids is None or not self._uses_cache(state, kwargs):  # transformers' own path
            if state is not None:
                kwargs[CACHE_NAME] = state.copy()
            kwargs["logits_processor"] = with_nan_logits_check(kwargs.get("logits_processor"))
            return super().generate(input_ids, attention_mask=attention_mask, **kwargs)
        return self._generate_streamed(input_ids, attention_mask, state, **kwargs)

    def _uses_cache(self, state: Rwkv6Cache | None, kwargs: dict) -> bool:
        """Whether `generate` decodes from a state (`use_cache`, the default); without, transformers runs the
        whole sequence at every step."""
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = (kwargs.get("generation_config") or self.generation_config).use_cache
        if state is not None and use_cache is False:
            raise ValueError("A state (cache=) was given with use_cache=False: a state is decoded from, so it needs "
                             "use_cache=True (the default).")
        return use_cache is not False

    def _generate_streamed(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None,
                           state: Rwkv6Cache | None, prefill_kwargs: dict | None = None, **kwargs):
        """The prompt's unseen ids but the last go through `_prefill_prompt` into a copy of `state` (a new one
        without); transformers' decoding loop starts from there. Returns what transformers' `generate` returns."""
        state = self.new_state(input_ids.shape[0]) if state is None else state.copy()
        seen = state.seen_tokens
        batch, length = input_ids.shape
        new_from = self.new_tokens_start(input_ids, attention_mask, state)
        new_ids = input_ids[:, new_from:]
        if new_ids.shape[1] == 0:
            raise ValueError(f"The state has seen {seen} tokens and input_ids hold {length}: nothing is left to feed.")
        # masks cover the ids passed, never all the state has seen (a long video's state has seen ~10^5 tokens)
        new_mask = torch.ones(new_ids.shape, dtype=torch.long, device=input_ids.device)
        if attention_mask is not None:
            given = attention_mask[:, -new_ids.shape[1]:]
            new_mask[:, -given.shape[1]:] = given
        self._prefill_prompt(new_ids, new_mask, state, **(prefill_kwargs or {}))
        # transformers feeds `input_ids[:, seen_tokens:]` when the mask is as long as input_ids (and every id
        # otherwise), so the state counts as seen exactly what precedes the prompt's last id in the ids passed on
        ids, mask = new_ids, new_mask
        if new_from:
            seen_mask = torch.ones(batch, new_from, dtype=torch.long, device=input_ids.device)
            ids, mask = input_ids, torch.cat([seen_mask, new_mask], dim=1)
        offset = state.seen_tokens - (ids.shape[1] - 1)
        state.seen_tokens -= offset
        kwargs["logits_processor"] = with_nan_logits_check(kwargs.get("logits_processor"))
        # transformers' own generate (a subclass's would classify the ids again)
        output = GenerationMixin.generate(self, ids, attention_mask=mask, **{CACHE_NAME: state}, **kwargs)
        state.seen_tokens += offset  # the output's state (return_dict_in_generate) counts everything it has seen
        return output

    def _prefill_prompt(self, new_ids: torch.LongTensor, new_mask: torch.Tensor, state: Rwkv6Cache) -> None:
        """Read the new prompt ids [B, N] but the last into `state` (their mask [B, N], 0 at padding), through the
        model's `feed`."""
        if new_ids.shape[1] > 1:
            self.feed(state, new_ids[:, :-1], attention_mask=new_mask[:, :-1])

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        # transformers repeats only tensors for beams and returned sequences: a user's state needs a row for each too
        state = model_kwargs.get(CACHE_NAME)
        rows = None if input_ids is None else input_ids.shape[0]
        if expand_size > 1 and isinstance(state, Rwkv6Cache) and state.batch_size == rows:
            state.batch_repeat_interleave(expand_size)
        return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, is_first_iteration=False,
                                      **kwargs):
        state = kwargs.get("cache", kwargs.get("past_key_values"))
        nothing_new = next_sequence_length is not None and next_sequence_length <= 0
        if is_first_iteration and isinstance(state, Rwkv6Cache) and nothing_new:
            raise ValueError(
                f"The state has seen {state.seen_tokens} tokens and input_ids hold {input_ids.shape[1]}: nothing is "
                "left to feed. Pass the whole sequence, or only the new tokens with an attention mask of seen + new "
                "columns."
            )
        return super().prepare_inputs_for_generation(
            input_ids, next_sequence_length=next_sequence_length, is_first_iteration=is_first_iteration, **kwargs
        )


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
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits [B, T, V] (the last `logits_to_keep` positions when > 0); loss when labels [B, T] are given.

        `cache` (or its pre-5.24 name `past_key_values`): the state to continue, updated in place and returned in the
        output's `CACHE_NAME` field.
        """
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


__all__ = [
    "CACHE_NAME", "FEED_CHUNK_TOKENS", "Rwkv6Cache", "Rwkv6ForCausalLM", "Rwkv6GenerationMixin", "Rwkv6Model",
    "Rwkv6PreTrainedModel", "resolve_cache_argument",
]
