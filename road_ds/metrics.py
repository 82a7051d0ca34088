"""Classification metrics for GLUE-style evaluation (accuracy, macro-F1, MCC).

Delegates to scikit-learn so the numbers match what published GLUE results use
(MCC for CoLA is sklearn's multiclass ``matthews_corrcoef``).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def classification_metrics(labels, predictions, num_labels: int | None = None) -> dict:
    """``{"accuracy", "macro_f1", "mcc"}`` as floats.

    With ``num_labels``, macro-F1 averages over all classes ``0..num_labels-1``, so a class
    that never occurs (neither in labels nor predictions) counts as F1 0 instead of being
    left out; without it, only the classes seen in either array are averaged.
    """
    y_true, y_pred = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("no labels to score")
    classes = list(range(num_labels)) if num_labels is not None else None
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro",
                                   zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
    }
