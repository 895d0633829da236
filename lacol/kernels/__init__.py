"""Fused Triton kernels for the contrastive losses (``loss.kernel``); the eager reference in
``lacol/losses.py`` is the ground truth they are tested against."""
