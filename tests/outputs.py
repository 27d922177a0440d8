"""A model output's recurrent state, on every supported transformers version."""

from auroralong_hf import CACHE_NAME


def state_of(output):
    """The `Rwkv6Cache` of a model or `generate` output: its field is `cache` from transformers 5.24 on and
    `past_key_values` before (reading the old name on 5.24 logs a deprecation warning)."""
    return getattr(output, CACHE_NAME)
