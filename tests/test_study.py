"""The study's plan and the step runner behind `make study` / `make demo` (no training here)."""

import sys
from pathlib import Path

import pytest
import yaml

from road_ds.errors import DataError
from road_ds.recipe import load_recipe
from road_ds.runs import Step, run_steps
from road_ds.study import load_plan, plan_steps

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


def test_a_step_needing_an_unknown_step_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown steps"):
        run_steps([touch_step("x", tmp_path, ["nope"])], tmp_path, log=lambda m: None)


def test_the_study_plan_makes_valid_recipes_and_the_core_comparison():
    plan_path = REPO / "recipes" / "study" / "runs.yaml"
    plan = load_plan(plan_path)
    recipe = str(plan_path.parent / plan.recipe)
    steps, overrides = plan_steps(plan, recipe, Path("/tmp/study-out"))
    names = {s.name for s in steps}
    for core in ("l3-nokd", "l3-mean", "l3-wkd", "l3-wkd-passes1"):
        assert {f"{core}-s{s}" for s in (0, 1, 2)} <= names
    by_name = {s.name: s for s in steps}
    assert by_name["store-s1"].after == ["teacher-s1"]
    assert by_name["l3-wkd-s2"].after == ["store-s0", "store-s1", "store-s2"]
    assert by_name["l3-nokd-s0"].after == []
    for name, sets in overrides.items():
        r = load_recipe(recipe, sets[1::2])
        assert r.train.seed == int(name.rsplit("-s", 1)[1])
        if name.startswith("l3-wkd-s"):
            assert r.kd.combine == "wkd" and r.kd.W == 0.75 and len(r.kd.teachers) == 3
            assert "minilm-l3" in r.model.name_or_path and r.mtl.passes == 4
        if name.startswith("l3-wkd-passes1"):
            # the same rows seen: 4x the updates at one task each
            assert r.mtl.passes == 1 and r.train.max_steps == 4 * load_recipe(recipe, [a for a in overrides["l3-wkd-s0"] if a != "--set"]).train.max_steps
        if name.startswith("l3-nokd"):
            assert r.kd is None or not r.kd.teachers


@pytest.mark.parametrize("change, field", [
    (lambda p: p["runs"][0].update(bogus=1), "runs.0.bogus"),
    (lambda p: p["runs"][1].update(teachers=[7]), "runs.1.teachers"),
    (lambda p: p["comparisons"].append(["l3-wkd", "nope"]), "comparisons."),
    (lambda p: p["runs"].append(dict(p["runs"][0])), ".name"),
])
def test_a_bad_plan_is_named_with_its_field(tmp_path, change, field):
    plan = yaml.safe_load((REPO / "recipes" / "study" / "runs.yaml").read_text())
    change(plan)
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(DataError) as e:
        load_plan(path)
    assert str(path) in str(e.value) and field in str(e.value)


def test_the_tables_pair_runs_by_seed():
    from road_ds.study import paired_table, summary_table

    plan = load_plan(REPO / "recipes" / "study" / "runs.yaml")
    res = lambda sent, pair: {"qnli": {"accuracy": pair}, "sentiment": {"accuracy": sent}, "macro": (sent + pair) / 2, "peak_rss_mb": 1.0}  # noqa: E731
    results = {}
    for r in plan.runs:
        for s in r.seeds:
            bonus = 0.02 * s if r.name == "l3-wkd" else 0.0  # wkd beats no-KD by 0, 2, 4 points on seeds 0, 1, 2
            results[f"{r.name}-s{s}"] = res(0.70 + 0.01 * s + bonus, 0.60)
    text = summary_table(plan, results, {"t": res(0.8, 0.7)})
    assert "| qnli acc | sentiment acc | macro |" in text
    assert "| l3-wkd | 3 | 60.0 ± 0.0 | 73.0 ± 3.0 | 66.5 ± 1.5 |" in text
    row = next(line for line in paired_table(plan, results).splitlines() if line.startswith("| l3-wkd − l3-nokd |"))
    assert row.startswith("| l3-wkd − l3-nokd | 3 | 0.0 ± 0.0 | 2.0 ± 2.0 | 1.0 ± 1.0 | 2/3 |")


def test_a_running_step_reports_its_stage_and_last_log_line(tmp_path):
    code = "import time; print('working 1/3', flush=True); time.sleep(1.5)"
    said: list[str] = []
    run_steps([touch_step("slow", tmp_path, [], code), touch_step("next", tmp_path, ["slow"])], tmp_path / "logs", log=said.append, progress_every=0.4)
    progress = [m for m in said if "stage 1/2 slow:" in m and "| working 1/3" in m]
    assert progress, said
    assert any("done stage 2/2 next" in m for m in said)
