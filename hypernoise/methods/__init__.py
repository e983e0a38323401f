"""Noise methods that share one signature: (generator, reward, noise, prompts) -> images + cost."""
