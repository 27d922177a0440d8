"""Fine-tuning AuroraLong: conversation data (data.py), LoRA target presets and setup (lora.py) and the training
loop (train.py)."""

from .lora import LORA_TARGET_PRESETS, lora_target_modules

# Samples longer than this many tokens are dropped (never truncated) unless the user says otherwise: training
# memory grows with the length, and one runaway record (a 400k-word turn) would otherwise grow the process to
# ~10 GB and fail in the allocator without naming itself. 8,192 holds the paper's longest training samples
# (videos of < 60 frames: 60 x 72 visual tokens at kept ratio 0.1) with their text.
DEFAULT_MAX_LENGTH = 8192

__all__ = ["DEFAULT_MAX_LENGTH", "LORA_TARGET_PRESETS", "lora_target_modules"]
