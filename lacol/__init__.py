"""LaCoL: the method and the training loop. Knows nothing of files or decoders."""

from . import methods  # noqa: E402,F401  (registers every method before any config is validated)
