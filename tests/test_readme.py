"""Every command line README.md shows, checked against the code: each `road-ds X`, script and module
runs with `--help` and knows every option the line uses, each `make` target exists, each script an
`sbatch` or `bash` line names exists and reads the variables the line sets. A README that drifts from
the code fails here."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROGRAMS = ("road-ds", "make", "deepspeed", "torchrun", "srun", "sbatch", "bash", "python")


def readme_commands() -> list[str]:
    """Command lines of the README: the lines of its bash blocks (with `\\` continuations joined) and
    inline code that starts with a program users run."""
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                lines.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        words = span.split()
        if words and words[0] in PROGRAMS and len(words) > 1:
            lines.append(span)
    return lines


def split(line: str) -> tuple[dict[str, str], list[str]]:
    """Leading VAR=value assignments, then the words (optional `[...]` groups unwrapped)."""
    words = shlex.split(line.replace("[", " ").replace("]", " "))
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    return env, words


def options(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if w.startswith("--")]


@cache
def help_text(*argv: str) -> str:
    res = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(argv)}: exit {res.returncode}\n{res.stderr[-2000:]}"
    return res.stdout


def road_ds_help(words: list[str]) -> str:
    sub = words[:2] if words[0] in ("store", "data", "pipeline") and len(words) > 1 and not words[1].startswith("-") else words[:1]
    if words[0] == "data":  # the kit's own parser: `road-ds data fetch|path ...`
        sub = words[:1]
    return help_text(sys.executable, "-m", "road_ds.cli", *sub, "--help")


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


def check(line: str) -> None:
    env, words = split(line)
    prog, args = words[0], words[1:]
    if prog == "make":
        assert set(args) <= make_targets(), f"{line}: no such make target"
        return
    if prog == "road-ds":
        text = road_ds_help(args)
        missing = [o for o in options(args) if o not in text]
        assert not missing, f"{line}: `road-ds {args[0]} --help` knows no {missing}"
        return
    if prog in ("bash", "sbatch"):
        script = next(a for a in args if a.endswith((".sh", "run")) and not a.startswith("-"))
        path = REPO / script
        assert path.is_file(), f"{line}: no {script}"
        body = path.read_text()
        unread = [k for k in env if not re.search(rf"\${{?{k}\b", body)]
        assert not unread, f"{line}: {script} does not read {unread}"
        return
    # launchers and python: the script (or module) the line runs, with --help, knows the options after it
    if "-m" in args:
        i = args.index("-m")
        target, rest = ["-m", args[i + 1]], args[i + 2:]
    else:
        i = next(i for i, a in enumerate(args) if a.endswith(".py"))
        assert (REPO / args[i]).is_file(), f"{line}: no {args[i]}"
        target, rest = [args[i]], args[i + 1:]
    if rest[:1] == ["..."]:
        return  # `srun python road_ds/train.py ...`: the options are the lines above
    text = help_text(sys.executable, *target, "--help")
    missing = [o for o in options(rest) if o not in text]
    assert not missing, f"{line}: `{' '.join(target)} --help` knows no {missing}"


COMMANDS = list(dict.fromkeys(readme_commands()))


def test_the_readme_shows_the_commands_users_run():
    shown = " ".join(COMMANDS)
    for needed in ("make demo", "make test", "road-ds train", "deepspeed road_ds/train.py", "sbatch", "road-ds precompute", "road-ds evaluate"):
        assert needed in shown, needed


@pytest.mark.parametrize("line", COMMANDS)
def test_a_readme_command_matches_the_code(line):
    check(line)


def test_a_drifted_readme_line_fails():
    with pytest.raises(AssertionError, match="knows no"):
        check("road-ds train --recipe R.yaml --output-dirr runs/x")
    with pytest.raises(AssertionError, match="no such make target"):
        check("make demoo")
    with pytest.raises(AssertionError, match="does not read"):
        check("RECIPEE=r.yaml sbatch slurm/train_road.sh")
