"""The step runner behind every plan, and the study's plan and report (no training here)."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from road_ds.errors import DataError
from road_ds.pipelines.plan import load_plan, steps, variants
from road_ds.pipelines.runs import Step, run_steps
from road_ds.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent


def touch_step(name: str, tmp: Path, after=(), code: str = "") -> Step:
    marker = tmp / f"{name}.done"
    script = f"import pathlib,sys; {code or 'pass'}; pathlib.Path({str(marker)!r}).write_text('x')"
    return Step(name, [sys.executable, "-c", script], marker, list(after))


def test_steps_run_after_what_they_need_and_are_skipped_once_done(tmp_path):
    order = tmp_path / "order.txt"
    log = lambda name: f"open({str(order)!r}, 'a').write('{name}\\n')"  # noqa: E731
    steps = [touch_step("c", tmp_path, ["a", "b"], log("c")), touch_step("a", tmp_path, [], log("a")), touch_step("b", tmp_path, ["a"], log("b"))]
    wall = run_steps(steps, tmp_path / "logs", jobs=2, log=lambda m: None)
    assert order.read_text().split() == ["a", "b", "c"]
    assert set(wall) == {"a", "b", "c"}
    run_steps(steps, tmp_path / "logs", jobs=2, log=lambda m: None)  # all done: nothing runs again
    assert order.read_text().split() == ["a", "b", "c"]


def test_a_failed_step_stops_its_dependents_and_names_its_log(tmp_path, capsys):
    steps = [touch_step("ok", tmp_path), touch_step("bad", tmp_path, [], "sys.exit('broken input')"), touch_step("later", tmp_path, ["bad"])]
    with pytest.raises(SystemExit, match="failed: bad"):
        run_steps(steps, tmp_path / "logs", jobs=1, log=lambda m: None)
    assert (tmp_path / "ok.done").exists() and not (tmp_path / "later.done").exists()
    assert "broken input" in (tmp_path / "logs" / "bad.log").read_text()
    # fixed, a rerun does only what is missing
    steps[1] = touch_step("bad", tmp_path)
    wall = run_steps(steps, tmp_path / "logs", jobs=1, log=lambda m: None)
    assert {"bad", "later"} <= set(wall)


def test_a_stopped_runner_stops_its_steps_and_the_rerun_counts_their_time(tmp_path):
    """SIGTERM to the runner (scancel, kill) reaches the running step, which must not live on beside the
    rerun's copy; the time it ran is added to the wall-clock of the rerun that finishes it."""
    started, stopped = tmp_path / "started", tmp_path / "stopped"
    code = (f"import signal,time; p=pathlib.Path; signal.signal(signal.SIGTERM, lambda *a: (p({str(stopped)!r}).write_text('x'), sys.exit(3)));"
            f"resumed = p({str(stopped)!r}).exists(); p({str(started)!r}).write_text('x'); time.sleep(0 if resumed else 120)")
    runner = (f"import pathlib,sys; sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r});"
              f"from test_study import touch_step; from road_ds.pipelines.runs import run_steps;"
              f"run_steps([touch_step('long', pathlib.Path({str(tmp_path)!r}), [], {code!r})], pathlib.Path({str(tmp_path / 'logs')!r}), log=print)")
    proc = subprocess.Popen([sys.executable, "-c", runner], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert stopped.exists() and "stopped long after" in out
    ran = json.loads((tmp_path / "logs" / "partial_s.json").read_text())["long"]
    assert ran >= 1.0
    wall = run_steps([touch_step("long", tmp_path, [], code)], tmp_path / "logs", log=lambda m: None)
    assert wall["long"] >= ran
    assert json.loads((tmp_path / "logs" / "partial_s.json").read_text()) == {}


def test_a_step_needing_an_unknown_step_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown steps"):
        run_steps([touch_step("x", tmp_path, ["nope"])], tmp_path, log=lambda m: None)


def _study(out="/tmp/study-out"):
    return load_plan(REPO / "recipes" / "study" / "plan.yaml", out)


def test_the_study_plan_makes_valid_recipes_and_the_core_comparison():
    plan = _study()
    out = plan.out
    by_name = {s.name: s for s in steps(plan)}
    for core in ("l6-nokd", "l6-mean", "l6-wkd"):
        assert {f"{core}-s{s}" for s in (0, 1, 2)} <= set(by_name)
    assert by_name["teacher-s1"].after == ["mtl"]
    assert by_name["store-qa.teacher-s1"].after == ["teacher-s1"]  # a store starts once its own teacher is done
    assert by_name["l6-wkd-s2"].after == ["mtl", "store-qa.teacher-s0", "store-qa.teacher-s1", "store-qa.teacher-s2"]
    assert by_name["l6-kd1-s0"].after == ["mtl", "store-qa.teacher-s0"]  # KD from one teacher waits for that one
    assert by_name["l3-wkd-s0"].after == ["store.teacher-s0", "store.teacher-s1", "store.teacher-s2"]
    assert by_name["l6-transfer-wkd-s0"].after == ["mtl", "store-transfer.teacher-s0", "store-transfer.teacher-s1", "store-transfer.teacher-s2"]
    assert by_name["l6-nokd-s0"].after == ["mtl"]  # the students start from the MTL step's export
    assert by_name["l6-squad2-only-s0"].after == [] and by_name["l3-nokd-s0"].after == []  # these fill the MTL step's spare core
    rec = {i.name: load_recipe(plan.recipe(st), i.sets) for st in plan.spec.stages if st.run == "train" for i in plan.instances[st.name]}
    for name, r in rec.items():
        assert r.train.seed == (int(name.rsplit("-s", 1)[1]) if name != "mtl" else 0)
        if name.startswith("teacher-s"):
            assert r.model.init_from == str(out / "mtl" / "export") and "minilm-l6" in r.model.name_or_path
        if name.startswith("l6-wkd-s"):  # ROaD's second stage with WKD, on the teachers' own encoder
            assert r.kd.combine == "wkd" and r.kd.W == 0.75 and len(r.kd.teachers) == 3
            assert "minilm-l6" in r.model.name_or_path and [d.name for d in r.datasets] == ["squad2"]
        if name.startswith("l6-nokd"):
            assert r.kd is None or not r.kd.teachers
        if name.startswith("l6-") and not name.startswith("l6-squad2-only"):  # ROaD's student: MTL step, then squad2
            assert r.model.init_from == str(out / "mtl" / "export"), name
        if name.startswith("l3-"):  # the compression arm: MiniLM-L3 on the MTL mix
            assert "minilm-l3" in r.model.name_or_path and len(r.datasets) == 3
    assert rec["l6-kd1-s0"].kd.teachers == [str(out / "store-qa" / "teacher-s0")]
    # students train on the slice their stores were made on: `pipeline check` compares the fingerprints
    assert rec["l6-wkd-s0"].dataset("squad2").limit["train"] == 500
    # the transfer set adds rows without gold
    xfer = rec["l6-transfer-wkd-s0"]
    assert all(d.labeled == rec["l6-wkd-s0"].dataset(d.name).limit["train"] < d.limit["train"] for d in xfer.datasets)
    # the two stages against one: the same encoder, the same total updates
    two, one = rec["l6-nokd-s0"], rec["l6-squad2-only-s0"]
    assert two.model.init_from == str(out / "mtl" / "export") and one.model.init_from is None
    assert two.train.max_steps + rec["mtl"].train.max_steps == one.train.max_steps
    assert two.model.name_or_path == one.model.name_or_path == rec["mtl"].model.name_or_path


def _stage(raw, name):
    return next(s for s in raw["stages"] if s["name"] == name)


@pytest.mark.parametrize("change, field", [
    (lambda p: p["study"].update(bogus=1), "study.bogus"),
    (lambda p: p["study"]["comparisons"].append(["l6-wkd", "nope"]), "study.comparisons.9"),
    (lambda p: p["study"]["comparisons"].append(["l6-wkd", "teacher"]), "study.comparisons.9"),  # the teachers are no variant
    (lambda p: p["study"].update(teachers="store"), "study.teachers"),
    (lambda p: p["study"].update(ensemble="mtl"), "study.ensemble"),
    (lambda p: p["study"]["kd_gain"].append(["l6-nokd", "l6-wkd"]), "study.kd_gain.1"),
    (lambda p: _stage(p, "l6-kd1").update(kd_seeds=[7]), "stages.l6-kd1.kd_seeds"),
    (lambda p: _stage(p, "l6-nokd").update(kd_seeds=[0]), "stages.l6-nokd.kd_seeds"),
])
def test_a_bad_study_is_named_with_its_field(tmp_path, change, field):
    raw = yaml.safe_load((REPO / "recipes" / "study" / "plan.yaml").read_text())
    change(raw)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError) as e:
        load_plan(path)
    assert str(path) in str(e.value) and field in str(e.value)


def _fake_results(plan):
    res = lambda sent, pair: {"qnli": {"accuracy": pair}, "sentiment": {"accuracy": sent}, "macro": (sent + pair) / 2, "peak_rss_mb": 1.0}  # noqa: E731
    results = {}
    for name, runs in variants(plan).items():
        for s, run in runs.items():
            bonus = 0.02 * s if name == "l6-wkd" else 0.0  # wkd beats no-KD by 0, 2, 4 points on seeds 0, 1, 2
            results[run] = res(0.70 + 0.01 * s + bonus, 0.60)
    return results, res


def test_the_tables_pair_runs_by_seed():
    from road_ds.pipelines.study import paired_table, summary_table

    plan = _study()
    results, res = _fake_results(plan)
    text = summary_table(plan, results, {"t": res(0.8, 0.7)})
    assert "| qnli acc | sentiment acc | macro |" in text
    assert "| l6-wkd | 3 | 60.0 ± 0.0 | 73.0 ± 3.0 | 66.5 ± 1.5 |" in text
    row = next(line for line in paired_table(plan, results).splitlines() if line.startswith("| l6-wkd − l6-nokd |"))
    assert row.startswith("| l6-wkd − l6-nokd | 3 | 0.0 ± 0.0 | 2.0 ± 2.0 | 1.0 ± 1.0 | 2/3 |")


def test_runs_with_other_columns_get_dashes_and_targets_say_what_is_met(tmp_path):
    from road_ds.pipelines.study import figure, paired, paired_table, summarize, summary_table, targets

    plan = _study()
    results, res = _fake_results(plan)
    qa = lambda f: {"squad2": {"f1": f, "exact": f, "HasAns_f1": f, "NoAns_exact": 50.0, "main": f / 100}, "macro": f / 100}  # noqa: E731
    results["l6-nokd-s0"] |= {"squad2": qa(40.0)["squad2"]}  # its macro stays the classifiers'
    results["l6-squad2-only-s0"] = qa(30.0)
    teachers = {f"teacher-s{s}": res(0.85, 0.79 + 0.02 * s) | {"squad2": {"f1": 60.0, "exact": 55.0, "HasAns_f1": 45.0, "NoAns_exact": 70.0}} for s in (0, 1, 2)}
    text = summary_table(plan, results, teachers)
    assert text.splitlines()[0].startswith("| model | seeds | qnli acc | sentiment acc | squad2 F1 |")
    line = next(x for x in text.splitlines() if x.startswith("| l6-squad2-only |"))
    assert line == "| l6-squad2-only | 1 | – | – | 30.0 | 30.0 | 30.0 | 50.0 | 30.0 |"  # no qnli, no sentiment
    row = next(x for x in paired_table(plan, results).splitlines() if x.startswith("| l6-nokd − l6-squad2-only |"))
    assert "| 10.0 |" in row and "1/1" in row
    goals = {g["name"]: g for g in targets(plan, teachers, paired(plan, results), 95.0)}
    assert goals["teacher-s0 squad2 HasAns F1 >= floor"] == {"name": "teacher-s0 squad2 HasAns F1 >= floor", "value": 45.0, "target": 50, "met": False}
    assert goals["teacher-s0 qnli acc >= floor"]["met"] is False and goals["teacher-s1 qnli acc >= floor"]["met"] is True
    kd = goals["l6-wkd − l6-nokd macro > 2 x paired std (3 seeds)"]
    assert kd["value"] == 1.0 and kd["target"] == 2.0 and kd["met"] is False  # +1.0 ± 1.0: inside the noise
    assert goals["study elapsed wall-clock (min) <= budget"]["met"] is True
    curve = {"teacher-s0": {"squad2/f1": [(100, 20.0), (160, 30.0)], "qnli/accuracy": [(100, 0.6), (160, 0.7)]}}
    figure(tmp_path / "r.png", list(variants(plan)), summarize(plan, results), teachers, curve)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_running_step_reports_its_stage_and_last_log_line(tmp_path):
    code = "import time; print('working 1/3', flush=True); time.sleep(1.5)"
    said: list[str] = []
    run_steps([touch_step("slow", tmp_path, [], code), touch_step("next", tmp_path, ["slow"])], tmp_path / "logs", log=said.append, progress_every=0.4)
    progress = [m for m in said if "stage 1/2 slow:" in m and "| working 1/3" in m]
    assert progress, said
    assert any("done stage 2/2 next" in m for m in said)


def test_the_example_commands_name_repo_paths_relative_even_inside_an_argument():
    from road_ds.pipelines.study import _example_commands

    text = _example_commands(steps(_study(str(REPO / "outputs" / "study"))))
    assert str(REPO) not in text
    assert '"outputs/study/store-qa/teacher-s0"' in text and "--recipe recipes/study/mtl.yaml" in text
