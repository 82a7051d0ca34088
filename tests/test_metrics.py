import numpy as np
import pytest

from road_ds.metrics import classification_metrics


def test_binary_hand_computed():
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    preds = [1, 1, 1, 0, 0, 0, 1, 1]
    # TP 3, FN 1, TN 2, FP 2 -> accuracy 5/8
    # F1(1) = 2TP/(2TP+FP+FN) = 6/9; F1(0) = 4/(4+1+2) = 4/7; macro = (2/3 + 4/7) / 2 = 13/21
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 2) / sqrt(5*4*4*3)
    m = classification_metrics(labels, preds)
    assert m == pytest.approx({"accuracy": 5 / 8, "macro_f1": 13 / 21, "mcc": 4 / 240 ** 0.5},
                              abs=1e-12)
    assert all(type(v) is float for v in m.values())


def test_three_class_hand_computed():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    # correct at 0, 2, 3, 4 -> 4/6
    # F1: class 0 TP1 FP1 FN1 -> 2/4; class 1 TP2 FP1 FN0 -> 4/5; class 2 TP1 FP0 FN1 -> 2/3
    # multiclass MCC: c=4 correct, s=6, true counts t=(2,2,2), predicted counts p=(2,3,1)
    #   (c*s - sum t*p) / sqrt((s^2 - sum p^2)(s^2 - sum t^2)) = (24 - 12) / sqrt(22 * 24)
    m = classification_metrics(labels, preds)
    assert m == pytest.approx({"accuracy": 4 / 6, "macro_f1": (0.5 + 0.8 + 2 / 3) / 3,
                               "mcc": 12 / (22 * 24) ** 0.5}, abs=1e-12)


def test_num_labels_counts_absent_classes_in_macro_f1():
    # classes 0 and 1 perfect; class 2 never occurs -> F1 0 when declared
    assert classification_metrics([0, 0, 1, 1], [0, 0, 1, 1])["macro_f1"] == 1.0
    m = classification_metrics([0, 0, 1, 1], [0, 0, 1, 1], num_labels=3)
    assert m["macro_f1"] == pytest.approx(2 / 3) and m["accuracy"] == 1.0 and m["mcc"] == 1.0


def test_length_mismatch_and_empty():
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        classification_metrics([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="no labels"):
        classification_metrics([], [])
