"""The experiment drivers: pipelines of runs (runs.py: steps as subprocesses, skipped once done), the
demo (`make demo`, demo.py) and the quality study (`make study`, study.py)."""
