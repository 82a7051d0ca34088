#!/usr/bin/env bash
# ROaD training under Slurm through the deepspeed launcher instead of srun: a hostfile made from the
# allocation (each host with --ntasks-per-node slots), then `deepspeed --hostfile` from the first host
# (on one host, `deepspeed --num_gpus` with no hostfile).
#
#   RECIPE=recipes/my_road.yaml OUT=runs/road sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 slurm/deepspeed_launch.sh
#
# The launcher starts the other hosts' ranks over ssh (pdsh), so it needs pdsh here and passwordless
# ssh from this host to every host of the allocation; both are checked before anything starts, and a
# host that cannot be reached ends the job with its name and ssh's reason. Slurm then sees one task,
# not the ranks: its signals, its kill on a lost node and the requeue of slurm/train_road.sh do not
# reach them. slurm/train_road.sh (srun, no ssh) is the supported way; use this one where a cluster
# has ssh between nodes and a user wants the launcher's own behaviour.
#SBATCH --job-name=road-train-ds
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=24:00:00
#SBATCH --open-mode=append
#SBATCH --output=logs/%x-%j.out
set -uo pipefail

: "${RECIPE:?set RECIPE to the recipe YAML}"
: "${OUT:?set OUT to the output dir of the run (a rerun with the same dir resumes)}"
DS_CONFIG=${DS_CONFIG:-ds_configs/zero2.json}
DEEPSPEED=${DEEPSPEED:-deepspeed}
cd "${SLURM_SUBMIT_DIR:-.}" || exit 2
mkdir -p logs "$OUT"

read -r -a hosts <<< "$(scontrol show hostnames "${SLURM_JOB_NODELIST:?run this inside a Slurm allocation}" | tr '\n' ' ')"
slots=${SLURM_NTASKS_PER_NODE:-1}
hostfile=$OUT/hostfile
for h in "${hosts[@]}"; do echo "$h slots=$slots"; done > "$hostfile.tmp" && mv "$hostfile.tmp" "$hostfile"
echo "job ${SLURM_JOB_ID:-?}: hostfile $hostfile (${#hosts[@]} hosts x $slots slots): ${hosts[*]}"

port=$(( 29500 + ${SLURM_JOB_ID:-0} % 1000 ))  # as road_ds/dist.py picks it under srun: jobs sharing a host differ
if (( ${#hosts[@]} > 1 )); then
  for h in "${hosts[@]}"; do
    if ! why=$(ssh -o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=accept-new "$h" true 2>&1); then
      echo "deepspeed --hostfile needs passwordless ssh from $(hostname) to every host: $h is not reachable (${why:-ssh failed}); under Slurm, slurm/train_road.sh starts the ranks with srun and needs no ssh" >&2
      exit 2
    fi
  done
  if ! command -v pdsh >/dev/null; then
    echo "deepspeed --hostfile over ${#hosts[@]} hosts needs pdsh on $(hostname), and it is not installed; under Slurm, slurm/train_road.sh starts the ranks with srun and needs neither pdsh nor ssh" >&2
    exit 2
  fi
  where=(--hostfile "$hostfile" --master_addr "${hosts[0]}")
else  # with any hostfile the launcher goes through ssh, even to this host alone
  where=(--num_gpus "$slots")
fi
# shellcheck disable=SC2086  # EXTRA_ARGS is a list of arguments on purpose
"$DEEPSPEED" "${where[@]}" --master_port "$port" road_ds/train.py --deepspeed "$DS_CONFIG" \
  --recipe "$RECIPE" --output-dir "$OUT" ${EXTRA_ARGS:-}
