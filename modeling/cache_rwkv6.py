"""The RWKV-6 recurrent state (`Rwkv6Cache`) and how the models here name and accept it.

A state holds, per layer, two shift vectors and one WKV matrix: its size does not grow with the tokens seen. It is a
value: copy it to ask several questions from one encoded video, `stack` / `select_rows` to batch and unbatch, `save`
and `load` to keep it in a file. `token_fingerprint` identifies the ids a state has seen, so that `generate` can tell
a whole sequence from new tokens only. Kept apart from the layers (modeling_rwkv6.py) as fla keeps its cache outside
any one model: the generation mixin and AuroraLong's model use it too.
"""

import contextlib
import errno
import os
import uuid

import torch
from safetensors import safe_open
from safetensors.torch import save as serialize
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_rwkv6 import Rwkv6Config

# transformers 5.24 renamed the recurrent state's argument (of `forward`, `generate`) and output field from
# `past_key_values` to `cache`; 5.23 knows only the old name. The models here accept both names in `forward` and
# `generate`; CACHE_NAME is the one the installed transformers uses: outputs carry the state under it (where its
# `generate` looks), and it is the name to read the state from an output or to pass it to transformers' own models.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


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
    repeat what the state has seen or are new tokens only. Its size does not grow either. It lives on the device of
    the ids last fed (CPU when new), so that decoding never waits for the GPU to update it.
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
        added = token_fingerprint(input_ids, self.fingerprint_length)
        # summed where the ids are: taking it to the host would wait for the GPU at every decoded token
        self.fingerprint = self.fingerprint.to(added.device) + added
        self.fingerprint_length += input_ids.shape[1]

    def has_seen(self, input_ids: torch.LongTensor) -> bool | None:
        """Whether ids [B, T] begin with exactly the ids this state has seen (None: unknown)."""
        if self.fingerprint is None:
            return None
        if input_ids.shape[1] < self.fingerprint_length:
            return False
        seen = token_fingerprint(input_ids[:, :self.fingerprint_length])
        return bool(torch.equal(seen.cpu(), self.fingerprint.cpu()))

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
        stacked.fingerprint = torch.cat([s.fingerprint.cpu() for s in states]) if known else None
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
        picked.fingerprint = None if self.fingerprint is None else self.fingerprint[index.to(self.fingerprint.device)]
        picked.fingerprint_length = self.fingerprint_length
        return picked

    def crop(self, max_length: int):
        raise NotImplementedError(
            "A recurrent RWKV-6 state cannot be rolled back to an earlier position (needed by assisted and "
            "speculative decoding); re-run the prefix instead."
        )


__all__ = ["CACHE_NAME", "Rwkv6Cache", "resolve_cache_argument", "token_fingerprint"]
