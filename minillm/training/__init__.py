"""Training: the LightningModules, the one MiniLLM round, the optimizer and schedule, resume state."""
