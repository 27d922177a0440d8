"""Fine-tuning AuroraLong: LLaVA-style conversation data (data.py) and the training loop (train.py)."""
