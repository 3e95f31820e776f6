"""Detection quality: ROC-AUC, PR-AUC and precision / recall / F1 at a threshold. Pure numpy.

Abnormal sequences are the positive class; a higher error means "more abnormal".
"""

from __future__ import annotations

import numpy as np


def roc_auc(normal: np.ndarray, abnormal: np.ndarray) -> float:
    """Probability that an abnormal error exceeds a normal one, ties counting half (Mann–Whitney U / n₀n₁)."""
    normal, abnormal = np.asarray(normal, float), np.asarray(abnormal, float)
    if len(normal) == 0 or len(abnormal) == 0:
        return float("nan")
    s = np.sort(normal)
    below = np.searchsorted(s, abnormal, side="left")
    ties = np.searchsorted(s, abnormal, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (len(normal) * len(abnormal)))


def average_precision(normal: np.ndarray, abnormal: np.ndarray) -> float:
    """PR-AUC as average precision: Σ (Rₙ − Rₙ₋₁) Pₙ over distinct thresholds (scikit-learn's definition)."""
    scores = np.concatenate([np.asarray(normal, float), np.asarray(abnormal, float)])
    labels = np.concatenate([np.zeros(len(normal)), np.ones(len(abnormal))])
    if labels.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(labels)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def at_threshold(normal: np.ndarray, abnormal: np.ndarray, threshold: float) -> dict:
    """Precision, recall and F1 when an error strictly above ``threshold`` is flagged."""
    tp = int(np.sum(np.asarray(abnormal) > threshold))
    fp = int(np.sum(np.asarray(normal) > threshold))
    fn = len(abnormal) - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_positive_rate": fp / len(normal) if len(normal) else float("nan"),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
    }


def evaluate(normal: np.ndarray, abnormal: np.ndarray, threshold: float) -> dict:
    """All figures of ``seqmon evaluate`` for two sets of errors (NaN errors, unscorable rows, are left out)."""
    normal = np.asarray(normal, float)
    abnormal = np.asarray(abnormal, float)
    normal, abnormal = normal[~np.isnan(normal)], abnormal[~np.isnan(abnormal)]
    return {
        "normal": int(len(normal)),
        "abnormal": int(len(abnormal)),
        "roc_auc": roc_auc(normal, abnormal),
        "pr_auc": average_precision(normal, abnormal),
        "threshold": float(threshold),
        **at_threshold(normal, abnormal, threshold),
    }
