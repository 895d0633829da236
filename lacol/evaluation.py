"""Evaluation: every sample of an evaluation loader once, gathered from every process."""
from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def predict_probs(accelerator, model, loader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, softmax probabilities, labels) of every sample of an evaluation loader, gathered
    from every process, once each (padding deduplicated by index), in index order."""
    model.eval()
    probs, labels, index = [], [], []
    for batch in loader:
        with accelerator.autocast():
            logits, _ = model(batch.image, embed=False)
        probs.append(logits.float().softmax(1))
        labels.append(batch.label)
        index.append(batch.index)
    p, y, i = (accelerator.gather(torch.cat(t)).cpu().numpy() for t in (probs, labels, index))
    i, first = np.unique(i, return_index=True)
    return i, p[first], y[first]


def evaluate(accelerator, model, loader, clean: np.ndarray | None = None) -> dict:
    """Top-1 accuracy over the split, every sample counted once; with ``clean`` (the split's clean
    labels, -1 unknown), also the accuracy on the rows whose clean label is known (``clean_acc``)."""
    i, p, y = predict_probs(accelerator, model, loader)
    pred = p.argmax(1)
    out = {"acc": float((pred == y).mean()), "n": int(len(i))}
    if clean is not None:
        c = clean[i]
        known = c >= 0
        out["clean_acc"] = float((pred[known] == c[known]).mean()) if known.any() else float("nan")
    return out
