"""The experiment drivers: pipelines of runs (runs.py: steps as subprocesses, skipped once done), plans
(`road-ds pipeline`, plan.py; `make demo` runs the plan recipes/road/demo.yaml) and the quality study
(`make study`, study.py)."""
