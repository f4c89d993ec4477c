"""minillm: config-driven distillation of causal LMs with MiniLLM (reverse-KL on-policy) and its baselines."""

__version__ = "0.1.0"
