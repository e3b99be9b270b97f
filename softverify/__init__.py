"""softverify: GRPO on Ray against hard, soft (world-model) and knowledge verifiers."""

__version__ = "0.1.0"
