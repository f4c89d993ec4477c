"""Training without Lightning: the one MiniLLM round that OnPolicyModule runs and ``make bench`` times."""
