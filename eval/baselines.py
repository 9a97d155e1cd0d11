"""Baselines every results table carries, and the collapse flag.

- ``majority``: always predict the most frequent training class (its test accuracy and macro F1);
- ``test_majority_rate``: the share of the most frequent test class, what a collapsed classifier scores at best;
- ``chance``: expected accuracy of a uniform random guess over the classes (1 / C).

A run is ``collapsed`` when it predicts a single class for every test clip, or when its accuracy equals the
majority-class accuracy on the test set (the same number of correct clips): on about 10 of SurgRec's 16 datasets
the published baselines score exactly that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from eval.metrics import accuracy, macro_prf


def baselines(train_labels: Sequence, test_labels: Sequence, n_classes: int) -> dict[str, float]:
    top_train = Counter(train_labels).most_common(1)[0][0]
    majority = [top_train] * len(test_labels)
    return {
        "majority_accuracy": accuracy(test_labels, majority),
        "majority_macro_f1": macro_prf(test_labels, majority)["f1"],
        "test_majority_rate": Counter(test_labels).most_common(1)[0][1] / len(test_labels),
        "chance_accuracy": 1.0 / n_classes,
    }


def collapse_reason(y_true: Sequence, y_pred: Sequence) -> str | None:
    """Why a run counts as collapsed, or None."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(np.unique(p)) == 1:
        return f"predicts one class ({p[0]}) for every clip"
    n_majority = Counter(t.tolist()).most_common(1)[0][1]
    if int(np.sum(t == p)) == n_majority:
        return f"accuracy equals the test majority-class rate ({n_majority}/{len(t)})"
    return None
