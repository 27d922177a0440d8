"""Fine-tuning AuroraLong: conversation data (data.py), LoRA target presets and setup (lora.py) and the training
loop (train.py)."""

from .lora import LORA_TARGET_PRESETS, lora_target_modules

__all__ = ["LORA_TARGET_PRESETS", "lora_target_modules"]
