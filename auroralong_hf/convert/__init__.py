"""Checkpoint conversion into this package's `save_pretrained` folders (`auroralong convert ...`), split by layer:

* `checkpoint_io`: reading weight files (``.pth`` with ``weights_only=True``, safetensors, sharded folders) and
  checking their values; building the model from the tensors before it is written. Shared by every converter.
* `rwkv6_layout`: the RWKV-6 tensor layouts (BlinkDL, RWKV/v6-Finch-HF, fla = this package) and the maps between
  them, in both directions.
* `rwkv6`: RWKV-6 checkpoints in any of the three formats -> `Rwkv6ForCausalLM`.
* `siglip`: SigLIP vision checkpoints -> the S-ToMe tower's tensors and preprocessing.
* `auroralong`: the released xtuner layout, or a SigLIP tower + an RWKV-6 model (`compose`) -> one AuroraLong folder.

Nothing is imported here: import the module you need (each loads torch and transformers at its top).
"""
