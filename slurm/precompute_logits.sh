#!/usr/bin/env bash
# Offline teacher pass as a Slurm array job: array task i runs teacher i over the recipe's
# features and writes its teacher store to $STORES/<teacher name>. Each task uses all the GPUs of
# its node(s): one process per GPU (set --ntasks-per-node to the GPUs per node), launched by srun,
# ranks read from SLURM_PROCID / SLURM_NTASKS. A rerun or a requeue of a task keeps every shard that
# verifies and computes the rest.
#
#   TEACHERS="runs/t0/export runs/t1/export runs/t2/export" RECIPE=recipes/kit.yaml STORES=stores \
#     sbatch --array=0-2 slurm/precompute_logits.sh
#
# Edit the #SBATCH defaults below for your cluster (partition, GPUs, time), or override them on
# the sbatch command line.
#SBATCH --job-name=road-precompute
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=04:00:00
#SBATCH --array=0-2
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail

: "${TEACHERS:?set TEACHERS to the teacher directories, space separated}"
: "${RECIPE:?set RECIPE to the recipe YAML}"
: "${STORES:=stores}"
read -r -a teachers <<< "$TEACHERS"
task=${SLURM_ARRAY_TASK_ID:-0}
if (( task >= ${#teachers[@]} )); then
  echo "array task $task has no teacher: TEACHERS lists ${#teachers[@]}" >&2
  exit 2
fi
teacher=${teachers[$task]}
name=$(basename "$(dirname "$teacher")")
[[ $(basename "$teacher") == export ]] || name=$(basename "$teacher")
out="$STORES/$name"
PYTHON=${PYTHON:-python}
cd "${SLURM_SUBMIT_DIR:-.}"
mkdir -p logs "$STORES"

split_args=()
for s in ${SPLITS:-train}; do split_args+=(--split "$s"); done
set_args=()  # SETS: recipe overrides, one key=value per line (the student's features)
while IFS= read -r line; do if [[ -n $line ]]; then set_args+=(--set "$line"); fi; done <<< "${SETS:-}"

echo "task $task: teacher $teacher -> $out on ${SLURM_JOB_NODELIST:-localhost} (${SLURM_NTASKS:-1} ranks)"
srun --kill-on-bad-exit=1 "$PYTHON" road_ds/precompute.py "$RECIPE" "${set_args[@]}" --teacher "$teacher" --out "$out" \
  --top-k "${TOP_K:-8}" --dtype "${DTYPE:-float16}" --batch-size "${BATCH_SIZE:-64}" "${split_args[@]}"
