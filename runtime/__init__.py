"""The CPU runtime: tokenizer, model forward pass, sampling and generation."""
