"""SigLIP's vision tower with sorted token merging (S-ToMe): AuroraLong's frame encoder.

In every layer with r > 0, after the attention sub-block, r patch tokens of each frame merge into similar ones
(ToMe's bipartite soft matching on the attention keys, size-weighted means) and the tokens are re-ordered by how
many patches they cover; the MLP sub-block then runs on the merged tokens. Frames are the batch and never merge with
each other. The parameters are SigLIP's, under SigLIP's names: SigLIP checkpoints load unchanged.
"""

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint
from transformers import SiglipVisionModel
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.siglip.modeling_siglip import eager_attention_forward

from .checkpoint_checks import CompleteCheckpointMixin
from .configuration_siglip_tome import SiglipToMeVisionConfig, merge_schedule, tokens_per_frame


@dataclass
class SiglipToMeVisionOutput(ModelOutput):
    """
    last_hidden_state: [B, T_out, D] after post_layernorm, T_out = tokens_per_frame(config).
    pooler_output: [B, D] from SigLIP's attention-pooling head, when the config has one.
    hidden_states: the embeddings and every layer's output (the last before post_layernorm), when asked; they
        shrink layer by layer.
    last_layer_state: [B, T_out, D] the last layer's output before post_layernorm (LLaVA-style features).
    token_sizes: [B, T_out] how many patches each token covers.
    token_positions: [B, T_out] raster index of each token's first patch.
    merge_sources: [B, T_out, N] which patches each token covers, when asked.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    last_layer_state: torch.FloatTensor | None = None
    token_sizes: torch.LongTensor | None = None
    token_positions: torch.LongTensor | None = None
    merge_sources: torch.BoolTensor | None = None


@dataclass
class Tokens:
    """The tokens of a batch of frames between layers, with what merging tracks about each of them.

    x [B, T, D]; sizes [B, T] fp32 (patches covered, exact integers); positions [B, T] (first patch's raster index);
    sources [B, T, N] bool or None.
    """

    x: torch.Tensor
    sizes: torch.Tensor
    positions: torch.Tensor
    sources: torch.Tensor | None

    def select(self, index):
        """The tokens at `index` [B, T'] of every frame, in that order."""
        def pick(t):
            return t.gather(1, index.view(*index.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))

        return Tokens(pick(self.x), pick(self.sizes), pick(self.positions),
                      None if self.sources is None else pick(self.sources))


def bipartite_soft_matching(metric, r: int, protect_first_token: bool):
    """ToMe's matching: which r tokens of the even positions (A) merge into which odd-position token (B).

    metric [B, T, d]. Returns (merged [B, r], kept [B, |A| - r]) indices into A and partner [B, |A|], the index
    into B of each A token's most similar token (cosine; ties: the lowest index). The r A tokens with the highest
    similarity merge (ties: the lower A index first); a protected A_0 never does.
    """
    metric = metric / metric.norm(dim=-1, keepdim=True)
    scores = metric[:, ::2] @ metric[:, 1::2].transpose(1, 2)  # [B, |A|, |B|]
    if protect_first_token:
        scores[:, 0, :] = float("-inf")
    partner = scores.argmax(dim=-1)
    best = scores.gather(2, partner.unsqueeze(-1)).squeeze(-1)
    order = best.argsort(dim=-1, descending=True, stable=True)
    return order[:, :r], order[:, r:], partner


def merge_tokens(tokens: Tokens, merged, kept, partner) -> Tokens:
    """Merge the A tokens `merged` into their partners (size-weighted means); keep the other A tokens and all B.

    Returns the kept A tokens followed by the B tokens (the caller re-orders them).
    """
    batch, length, _ = tokens.x.shape
    even = torch.arange(0, length, 2, device=tokens.x.device).expand(batch, -1)
    odd = torch.arange(1, length, 2, device=tokens.x.device).expand(batch, -1)
    side_a, side_b = tokens.select(even), tokens.select(odd)
    leaving = side_a.select(merged)
    into = partner.gather(1, merged)  # [B, r]: index in B of each merging token's partner

    def scatter(base, values, reduce):
        index = into.view(*into.shape, *([1] * (values.dim() - 2))).expand_as(values)
        return base.scatter_reduce(1, index, values, reduce=reduce)

    weights = side_b.sizes.unsqueeze(-1)
    summed = scatter(side_b.x.float() * weights, leaving.x.float() * leaving.sizes.unsqueeze(-1), "sum")
    sizes = scatter(side_b.sizes, leaving.sizes, "sum")
    sources = None
    if tokens.sources is not None:
        sources = scatter(side_b.sources.byte(), leaving.sources.byte(), "amax").bool()
    merged_b = Tokens(
        x=(summed / sizes.unsqueeze(-1)).to(tokens.x.dtype),
        sizes=sizes,
        positions=scatter(side_b.positions, leaving.positions, "amin"),
        sources=sources,
    )
    staying = side_a.select(kept)
    return Tokens(
        x=torch.cat([staying.x, merged_b.x], dim=1),
        sizes=torch.cat([staying.sizes, merged_b.sizes], dim=1),
        positions=torch.cat([staying.positions, merged_b.positions], dim=1),
        sources=None if tokens.sources is None else torch.cat([staying.sources, merged_b.sources], dim=1),
    )


def sort_tokens(tokens: Tokens, order: str, protect_first_token: bool, num_patches: int, seed: int) -> Tokens:
    """Re-order the tokens of every frame: the protected token first, the others by `order` (see the config)."""
    positions = tokens.positions
    if order == "ascending":
        key = tokens.sizes.long() * (num_patches + 1) + positions
    elif order == "descending":
        key = -tokens.sizes.long() * (num_patches + 1) + positions
    else:  # "none", and "random" starts from raster order
        key = positions
    if protect_first_token:  # token 0 never merges, so it is the only one covering patch 0
        key = key.masked_fill(positions == 0, torch.iinfo(key.dtype).min)
    index = key.argsort(dim=1, stable=True)
    if order == "random":
        protected = int(protect_first_token)
        shuffle = torch.randperm(index.shape[1] - protected, generator=torch.Generator().manual_seed(seed))
        index = torch.cat([index[:, :protected], index[:, protected:][:, shuffle.to(index.device)]], dim=1)
    return tokens.select(index)


class SiglipToMeVisionModel(CompleteCheckpointMixin, SiglipVisionModel):
    config_class = SiglipToMeVisionConfig
    config: SiglipToMeVisionConfig

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        output_hidden_states: bool | None = None,
        output_merge_sources: bool = False,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SiglipToMeVisionOutput | tuple:
        """pixel_values [B, 3, H, W] (B frames) -> merged tokens [B, T_out, D] and what each of them covers."""
        config = self.config
        if output_attentions:
            raise ValueError("SiglipToMeVisionModel does not return attention maps (their size changes per layer).")
        self._check_inputs(pixel_values, interpolate_pos_encoding)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        x = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        batch, num_patches, _ = x.shape
        schedule = merge_schedule(
            num_patches, len(self.encoder.layers), token_kept_ratio=config.token_kept_ratio, tome_r=config.tome_r,
            schedule=config.tome_schedule, protect_first_token=config.protect_first_token,
        )
        positions = torch.arange(num_patches, device=x.device).expand(batch, -1)
        tokens = Tokens(
            x=x,
            sizes=torch.ones(batch, num_patches, device=x.device),
            positions=positions,
            sources=(positions.unsqueeze(-1) == positions[:1].unsqueeze(1)) if output_merge_sources else None,
        )

        all_hidden_states = (x,) if output_hidden_states else None
        merged_any = False  # until a merge, every size is 1 and proportional attention adds nothing
        for layer_idx, (layer, r) in enumerate(zip(self.encoder.layers, schedule, strict=True)):
            proportional = config.proportional_attention and merged_any
            if layer.gradient_checkpointing and self.training:
                tokens = checkpoint(
                    self._layer, layer, layer_idx, tokens, r, proportional, num_patches, use_reentrant=False
                )
            else:
                tokens = self._layer(layer, layer_idx, tokens, r, proportional, num_patches)
            merged_any = merged_any or r > 0
            if output_hidden_states:
                all_hidden_states += (tokens.x,)

        expected = num_patches - sum(schedule)
        if tokens.x.shape[1] != expected or (
            num_patches == config.num_patches and expected - int(config.drop_first_token) != tokens_per_frame(config)
        ):
            raise RuntimeError(f"S-ToMe produced {tokens.x.shape[1]} tokens per frame, its schedule says {expected}.")
        if config.drop_first_token:
            tokens = tokens.select(torch.arange(1, tokens.x.shape[1], device=x.device).expand(batch, -1))

        last_hidden_state = self.post_layernorm(tokens.x)
        output = SiglipToMeVisionOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=self.head(last_hidden_state) if self.use_head else None,
            hidden_states=all_hidden_states,
            last_layer_state=tokens.x,
            token_sizes=tokens.sizes.long(),
            token_positions=tokens.positions,
            merge_sources=tokens.sources,
        )
        return output.to_tuple() if return_dict is False else output

    def _layer(self, layer, layer_idx: int, tokens: Tokens, r: int, proportional: bool, num_patches: int) -> Tokens:
        """One encoder layer: attention (with log-size bias), then merge r tokens and re-order, then the MLP."""
        attention = layer.self_attn
        x = tokens.x
        batch, length, width = x.shape
        y = layer.layer_norm1(x)
        heads = (batch, length, attention.num_heads, attention.head_dim)
        queries = attention.q_proj(y).view(heads).transpose(1, 2)
        keys = attention.k_proj(y).view(heads).transpose(1, 2)  # [B, H, T, d]
        values = attention.v_proj(y).view(heads).transpose(1, 2)
        bias = tokens.sizes.log()[:, None, None, :].to(queries.dtype) if proportional else None  # [B, 1, 1, T]
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, _ = attend(
            attention, queries, keys, values, bias, is_causal=False, scaling=attention.scale,
            dropout=attention.dropout if self.training else 0.0,
        )
        x = x + attention.out_proj(out.reshape(batch, length, width))
        tokens = Tokens(x, tokens.sizes, tokens.positions, tokens.sources)

        if r > 0:
            merged, kept, partner = bipartite_soft_matching(
                keys.float().mean(dim=1), r, self.config.protect_first_token
            )
            tokens = merge_tokens(tokens, merged, kept, partner)
            tokens = sort_tokens(tokens, self.config.tome_sort, self.config.protect_first_token, num_patches,
                                 seed=self.config.tome_random_seed + layer_idx)

        x = tokens.x + layer.mlp(layer.layer_norm2(tokens.x))
        return Tokens(x, tokens.sizes, tokens.positions, tokens.sources)

    def _check_inputs(self, pixel_values, interpolate_pos_encoding: bool):
        config = self.config
        if pixel_values.dim() != 4 or pixel_values.shape[1] != config.num_channels:
            raise ValueError(
                f"pixel_values must be [frames, {config.num_channels}, height, width], "
                f"got shape {list(pixel_values.shape)}."
            )
        size = config.image_size if isinstance(config.image_size, (list, tuple)) else (config.image_size,) * 2
        if not interpolate_pos_encoding and tuple(pixel_values.shape[-2:]) != tuple(size):
            raise ValueError(
                f"pixel_values are {pixel_values.shape[-2]}x{pixel_values.shape[-1]}, the encoder takes "
                f"{size[0]}x{size[1]} (or pass interpolate_pos_encoding=True)."
            )
        implementation = config._attn_implementation or ""
        if config.proportional_attention and ("flash" in implementation or "flex" in implementation):
            raise ValueError(
                f"attn_implementation={implementation!r} cannot add the proportional-attention bias (log of each "
                "token's size); use 'sdpa' or 'eager', or set proportional_attention=False."
            )


__all__ = ["SiglipToMeVisionModel", "SiglipToMeVisionOutput", "bipartite_soft_matching", "merge_tokens",
           "sort_tokens"]
