"""Task balance: weights from running encoder-gradient norms, the probe that measures them, and the
proportional schedule counted in examples."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from road_ds.balance import EncoderProbe, TaskBalancer, cls_cosine
from road_ds.schedule import MTLSampler, TaskSchedule


def test_a_single_task_gets_weight_one_exactly():
    b = TaskBalancer()
    for n in (3.0, 0.5, 7.0):
        b.observe("qa", n * b.weight("qa"), b.weight("qa"))
        assert b.weight("qa") == pytest.approx(1.0, abs=1e-12)


def test_weights_equalise_the_tasks_gradients_at_their_geometric_mean():
    b = TaskBalancer(decay=0.0)  # no running mean: the last observation
    b.observe("qa", 6.0, 1.0)
    b.observe("qnli", 0.2, 1.0)
    b.observe("sentiment", 0.9, 1.0)
    g = math.exp((math.log(6.0) + math.log(0.2) + math.log(0.9)) / 3)
    assert b.weight("qa") * 6.0 == pytest.approx(g)
    assert b.weight("qnli") * 0.2 == pytest.approx(g)
    assert b.weight("qa") < 1.0 < b.weight("qnli")
    # a weighted observation is taken back to the loss's own scale: applying the weight changes nothing
    w = b.weight("qa")
    b.observe("qa", 6.0 * w, w)
    assert b.weight("qa") * 6.0 == pytest.approx(g)


def test_weights_do_not_depend_on_a_constant_gradient_scale():
    a, b = TaskBalancer(decay=0.5), TaskBalancer(decay=0.5)
    for t, n in [("x", 2.0), ("y", 0.1), ("x", 3.0), ("y", 0.3)]:
        a.observe(t, n * a.weight(t), a.weight(t))
        b.observe(t, 1000 * n * b.weight(t), b.weight(t))  # e.g. a loss scale or 1/accumulation
    assert a.weight("x") == pytest.approx(b.weight("x")) and a.weight("y") == pytest.approx(b.weight("y"))


def test_running_mean_state_round_trips_and_none_is_off():
    b = TaskBalancer(decay=0.9)
    b.observe("x", 2.0, 1.0)
    b.observe("x", 4.0, 1.0)
    assert b.norms["x"] == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)
    b.observe("y", float("nan"), 1.0)  # a non-finite norm (an overflowed step) is not taken in
    b.observe("y", 0.0, 1.0)
    assert "y" not in b.norms
    c = TaskBalancer(decay=0.9)
    c.load_state_dict(b.state_dict())
    assert c.norms == b.norms
    off = TaskBalancer("none")
    off.observe("x", 5.0, 1.0)
    off.observe("y", 0.1, 1.0)
    assert off.weight("x") == off.weight("y") == 1.0
    with pytest.raises(ValueError):
        TaskBalancer("pcgrad")


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return (self.lin(x),)


def test_probe_reads_the_encoder_parameter_gradient_of_one_backward():
    enc = _Encoder()
    head = nn.Linear(4, 1)
    probe = EncoderProbe(enc)
    x = torch.randn(5, 3, 4)
    for scale in (1.0, 10.0):
        probe.reset()
        enc.zero_grad()
        (scale * head(enc(x)[0]).sum()).backward()
        want = torch.cat([p.grad.flatten() for p in enc.parameters()]).norm().item()
        assert probe.grad_norm() == pytest.approx(want, rel=1e-5)
    assert probe.cls_cos is not None and -1.0 <= probe.cls_cos <= 1.0
    with torch.no_grad():  # evaluation leaves the diagnostic alone
        probe.reset()
        enc(x)
    assert probe.cls_cos is None and probe.grad_norm() is None
    probe.remove()


def test_cls_cosine_is_one_for_identical_rows_and_low_for_spread_ones():
    v = torch.randn(1, 16)
    assert cls_cosine(v.repeat(8, 1)) == pytest.approx(1.0, abs=1e-6)
    assert abs(cls_cosine(torch.eye(16))) < 1e-6
    assert cls_cosine(v) is None


def test_proportional_policy_weighs_examples_not_windows():
    # a QA set of 100 questions cut into 400 windows against a classification set of 300 rows
    s = MTLSampler({"qa": 400, "cls": 300}, micro_batch_size=2, passes=4, world=1, rank=0, task_sizes={"qa": 100, "cls": 300})
    assert s.schedule.probabilities() == pytest.approx({"qa": 0.25, "cls": 0.75})
    assert s.cursors["qa"].size == 400  # the cursor still walks every window
    assert TaskSchedule({"qa": 400, "cls": 300}).probabilities()["qa"] == pytest.approx(4 / 7)
    with pytest.raises(ValueError):
        MTLSampler({"qa": 400}, micro_batch_size=2, passes=1, world=1, rank=0, task_sizes={"other": 1})


def test_squad2_scores_report_the_best_non_null_spans_where_null_wins_everywhere(tmp_path, tiny_tokenizer_dir, cache_dir):
    """Early in training the null score wins on every question: the predictions as written are all ""
    and hide that the span head already points at the answers; the span_* metrics show it."""
    import json

    import numpy as np
    from conftest import squad_doc, write_recipe
    from test_features import CTX, QAS

    from road_ds.evaluate import score
    from road_ds.features import build_features
    from road_ds.recipe import load_recipe

    (tmp_path / "squad.json").write_text(json.dumps(squad_doc([{"title": "P", "paragraphs": [{"context": CTX, "qas": QAS}]}], "v2.0")))
    recipe = write_recipe(tmp_path / "qa.yaml", tiny_tokenizer_dir, [{"name": "sq", "task": "extractive_qa", "format": "squad_json",
                          "files": {"dev": "squad.json"}}], max_seq_length=40, doc_stride=12, max_query_length=8)
    ft = build_features(load_recipe(recipe), "sq", "dev")
    start, end = [], []
    for r in ft.table.select_columns(["input_ids", "start_positions", "end_positions"]):
        s, e = np.full(len(r["input_ids"]), -5.0), np.full(len(r["input_ids"]), -5.0)
        s[0] = e[0] = 10.0  # null wins in every window
        if r["start_positions"]:
            s[r["start_positions"]], e[r["end_positions"]] = 4.0, 4.0  # yet the gold span is the best non-null one
        start.append(s)
        end.append(e)
    res, files = score(ft, {"start": start, "end": end})
    assert res["HasAns_f1"] == 0.0 and res["NoAns_exact"] == 100.0  # as written: "no answer" everywhere
    assert res["span_HasAns_f1"] == 100.0 and res["span_best_f1"] == 100.0  # the spans and the na-prob ranking are right
    assert set(files["span_predictions"]) == set(files["predictions"])
