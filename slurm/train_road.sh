#!/usr/bin/env bash
# ROaD training (a student, or a teacher: a recipe without kd) as a Slurm batch job.
#
#   RECIPE=recipes/my_road.yaml OUT=runs/road sbatch slurm/train_road.sh
#   RECIPE=... OUT=... sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 slurm/train_road.sh
#   sbatch --dependency=afterok:<precompute array job id> slurm/train_road.sh   # after the teachers' stores
#   SEEDS="0 1 2" OUT='runs/teacher-s{seed}' sbatch --array=0-2 slurm/train_road.sh  # one run per seed
#
# SETS: recipe overrides, one `key=value` per line (values may hold spaces). With SEEDS, array task i
# runs seed i of the list: `{seed}` in OUT and SETS becomes it (add `train.seed={seed}` to SETS).
#
# Launch: one process per GPU with srun (set --ntasks-per-node to the GPUs per node; on CPU-only
# nodes, to the ranks you want). Each rank reads SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS, and
# the first host of SLURM_JOB_NODELIST is the master. srun needs no ssh between nodes (the deepspeed
# launcher's multi-node mode does), and Slurm itself then owns every rank's lifetime and signals.
#
# Time limits and preemption: Slurm sends SIGUSR1 to the ranks 5 minutes before the limit (and
# SIGTERM on preemption); the trainer saves a checkpoint at the next step boundary and exits. If the
# run is not finished (no eval_results.json), this script requeues the job, and the requeued job
# resumes from the latest checkpoint of $OUT by itself. A job whose ranks die abruptly is requeued as
# well and loses at most the steps since its last checkpoint (train.save_every). At most $MAX_REQUEUES
# times. A job Slurm itself is ending is not requeued by this script: a plain `scancel` stops the run
# for good (it checkpoints first; submitting again with the same OUT resumes it), and preemption
# requeues through Slurm's PreemptMode=REQUEUE.
#
# Edit the defaults below for your cluster (partition, GPUs, time), or override them on the command line.
#SBATCH --job-name=road-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=logs/%x-%j.out
set -uo pipefail

: "${RECIPE:?set RECIPE to the recipe YAML}"
: "${OUT:?set OUT to the output dir of the run (a rerun with the same dir resumes)}"
DS_CONFIG=${DS_CONFIG:-ds_configs/zero2.json}
MAX_REQUEUES=${MAX_REQUEUES:-20}
PYTHON=${PYTHON:-python}
cd "${SLURM_SUBMIT_DIR:-.}" || exit 2
mkdir -p logs
if [[ -n ${SEEDS:-} ]]; then
  read -r -a seeds <<< "$SEEDS"
  task=${SLURM_ARRAY_TASK_ID:-0}
  if (( task >= ${#seeds[@]} )); then
    echo "array task $task has no seed: SEEDS lists ${#seeds[@]}" >&2
    exit 2
  fi
  OUT=${OUT//\{seed\}/${seeds[$task]}}
  SETS=${SETS//\{seed\}/${seeds[$task]}}
fi
set_args=()
while IFS= read -r line; do if [[ -n $line ]]; then set_args+=(--set "$line"); fi; done <<< "${SETS:-}"

# the ranks get the signals and checkpoint; this shell only notes them and waits for srun
trap 'echo "signal received: the ranks checkpoint and stop"' USR1 TERM

echo "job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}): ${SLURM_NTASKS:-1} ranks on ${SLURM_JOB_NODELIST:-localhost}, output $OUT${NCCL_SOCKET_IFNAME:+, NCCL on $NCCL_SOCKET_IFNAME}${GLOO_SOCKET_IFNAME:+, gloo on $GLOO_SOCKET_IFNAME}"
# shellcheck disable=SC2086  # EXTRA_ARGS is a list of arguments on purpose
srun --kill-on-bad-exit=1 "$PYTHON" road_ds/train.py --deepspeed "$DS_CONFIG" --recipe "$RECIPE" --output-dir "$OUT" "${set_args[@]}" ${EXTRA_ARGS:-}
rc=$?

if [[ -f $OUT/eval_results.json ]]; then
  echo "finished: $OUT/eval_results.json"
  exit 0
fi
if (( ${SLURM_RESTART_COUNT:-0} >= MAX_REQUEUES )); then
  echo "not finished after ${SLURM_RESTART_COUNT:-0} requeues; giving up (srun exit $rc)" >&2
  exit 1
fi
if [[ -n ${SLURM_JOB_ID:-} ]]; then
  # RUNNING: the ranks stopped on their own (the time-limit signal, a crash, killed ranks). Any other
  # state (shown as COMPLETING) means Slurm is ending the job itself: scancel, the time limit passed,
  # or preemption, where PreemptMode=REQUEUE requeues a --requeue job without us.
  job_state=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n 1)
  job_state=${job_state#JobState=}
  if [[ -n $job_state && $job_state != RUNNING ]]; then
    echo "stopped before the end (srun exit $rc) while Slurm ends job $SLURM_JOB_ID ($job_state): not requeued; submit again with the same OUT to resume"
    exit 1
  fi
  echo "stopped before the end (srun exit $rc): requeueing job $SLURM_JOB_ID to resume from the latest checkpoint"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit 0
