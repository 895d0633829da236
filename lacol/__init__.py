"""LaCoL: the method and the training loop. Knows nothing of files or decoders."""
