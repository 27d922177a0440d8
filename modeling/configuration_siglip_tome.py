"""Configuration of SigLIP's vision tower with sorted token merging (S-ToMe), and the merge schedule."""

import math

from huggingface_hub.dataclasses import strict
from transformers import SiglipVisionConfig

TOME_SCHEDULES = ("even", "aurora")
TOME_SORTS = ("ascending", "descending", "none", "random")


@strict
class SiglipToMeVisionConfig(SiglipVisionConfig):
    r"""
    SigLIP vision fields plus sorted token merging. In every layer l with r_l > 0, r_l patch tokens of each frame
    merge into similar ones (ToMe's bipartite soft matching on the attention keys), then the tokens are re-ordered
    by how many patches they cover.

    Args:
        token_kept_ratio: Fraction of the patches left after the tower, in (0, 1]; 1.0 merges nothing.
        tome_r: Tokens merged per layer: one int for every layer, a list (zeros padded at the end), or None to
            derive the schedule from `token_kept_ratio`.
        tome_schedule: "even" spreads the N * (1 - ratio) merges as evenly as possible over the layers, earlier
            layers taking the remainder; "aurora" merges int(N * (1 - ratio) / num_hidden_layers) in every layer,
            as the released AuroraCap/AuroraLong code does.
        tome_sort: Order of the tokens after each merging layer: "ascending" by size (never-merged first, the
            paper's choice), "descending", "none" (raster order of each token's first patch) or "random" (a seeded
            shuffle, for the ablation). Ties in size keep raster order.
        proportional_attention: Add log(size) of the key token to every attention logit, so a merged token counts
            for the patches it covers.
        protect_first_token: Token 0 is never merged away and stays first.
        drop_first_token: Drop token 0 from the output (the released checkpoint's convention).
        tome_random_seed: Seed of the "random" order (layer l uses seed + l).
    """

    model_type = "auroralong_siglip_tome"
    base_config_key = "vision_config"

    token_kept_ratio: float | int = 0.1
    tome_r: int | list[int] | tuple[int, ...] | None = None
    tome_schedule: str = "even"
    tome_sort: str = "ascending"
    proportional_attention: bool = True
    protect_first_token: bool = True
    drop_first_token: bool = False
    tome_random_seed: int = 0

    def __post_init__(self, **kwargs):
        # A SigLIP folder's config.json says model_type "siglip_vision_model": this config keeps its own.
        kwargs.pop("model_type", None)
        self.token_kept_ratio = float(self.token_kept_ratio)
        if isinstance(self.tome_r, tuple):
            self.tome_r = list(self.tome_r)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: the merging fields make sense for this geometry."""
        super().validate_architecture()
        if not (isinstance(self.token_kept_ratio, (int, float)) and 0 < self.token_kept_ratio <= 1):
            raise ValueError(f"token_kept_ratio must be in (0, 1], got {self.token_kept_ratio}.")
        if self.tome_schedule not in TOME_SCHEDULES:
            raise ValueError(f"tome_schedule must be one of {TOME_SCHEDULES}, got {self.tome_schedule!r}.")
        if self.tome_sort not in TOME_SORTS:
            raise ValueError(f"tome_sort must be one of {TOME_SORTS}, got {self.tome_sort!r}.")
        if self.tome_r is not None:
            r_values = [self.tome_r] if isinstance(self.tome_r, int) else list(self.tome_r)
            if any(r < 0 for r in r_values):
                raise ValueError(f"tome_r must not be negative, got {self.tome_r}.")
            if len(r_values) > self.num_hidden_layers:
                raise ValueError(
                    f"tome_r lists {len(r_values)} layers but the tower has {self.num_hidden_layers}."
                )
        if self.drop_first_token and tokens_per_frame(self) == 0:
            raise ValueError("drop_first_token would leave no token: the schedule keeps a single token.")

    def set_token_kept_ratio(self, ratio: float) -> int:
        """Keep `ratio` of each frame's patches, in (0, 1], the merge schedule derived from it: `tome_r` is cleared,
        since an explicit ratio wins over a fixed per-layer count. Returns the tokens per frame it gives.

        Raises ValueError, leaving the config as it was, for a ratio this geometry cannot keep (outside (0, 1], or
        none left with `drop_first_token`). A model built from this config reads it at its next forward; a
        processor's `tokens_per_frame` must follow (`auroralong_hf.loading.load_pretrained` does both)."""
        previous = self.token_kept_ratio, self.tome_r
        self.token_kept_ratio, self.tome_r = float(ratio), None
        try:
            self.validate_architecture()
        except ValueError:
            self.token_kept_ratio, self.tome_r = previous
            raise
        return tokens_per_frame(self)

    @property
    def num_patches(self) -> int:
        return _num_patches(self.image_size, self.patch_size)

    def merge_schedule(self) -> list[int]:
        """Tokens merged in each layer (see `merge_schedule`)."""
        return merge_schedule(
            self.num_patches, self.num_hidden_layers, token_kept_ratio=self.token_kept_ratio, tome_r=self.tome_r,
            schedule=self.tome_schedule, protect_first_token=self.protect_first_token,
        )


def _num_patches(image_size, patch_size) -> int:
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    patch_h, patch_w = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    return (height // patch_h) * (width // patch_w)


def merge_schedule(
    num_patches: int,
    num_layers: int,
    *,
    token_kept_ratio: float = 0.1,
    tome_r: int | list[int] | None = None,
    schedule: str = "even",
    protect_first_token: bool = True,
) -> list[int]:
    """How many tokens each of `num_layers` layers merges, for frames of `num_patches` patches.

    Asked-for counts come from `tome_r` (an int for every layer, or a list padded with zeros) or from the kept
    ratio (see SiglipToMeVisionConfig.tome_schedule). A layer entering with T tokens merges at most
    (T - protected) // 2 of them (one per token of the other half); what that cap drops moves to later layers.
    """
    protected = int(protect_first_token)
    if tome_r is not None:
        wanted = [tome_r] * num_layers if isinstance(tome_r, int) else list(tome_r) + [0] * (num_layers - len(tome_r))
    elif schedule == "aurora":
        wanted = [int(num_patches * (1 - token_kept_ratio) / num_layers)] * num_layers
    else:
        kept = max(1 + protected, math.floor(token_kept_ratio * num_patches + 0.5))
        merges = max(num_patches - kept, 0)
        per_layer, remainder = divmod(merges, num_layers)
        wanted = [per_layer + (1 if layer < remainder else 0) for layer in range(num_layers)]

    schedule_out, tokens, carried = [], num_patches, 0
    for r in wanted:
        r = r + carried
        merged = min(r, max(tokens - protected, 0) // 2)
        carried = r - merged
        schedule_out.append(merged)
        tokens -= merged
    return schedule_out


def tokens_per_frame(config: SiglipToMeVisionConfig) -> int:
    """Tokens one frame leaves the tower with: patches, less the merges, less the dropped first token.

    The single source of this count: the encoder checks its output against it and the processor expands one
    frame's placeholder run to it.
    """
    return config.num_patches - sum(config.merge_schedule()) - int(config.drop_first_token)


__all__ = ["SiglipToMeVisionConfig", "merge_schedule", "tokens_per_frame"]
