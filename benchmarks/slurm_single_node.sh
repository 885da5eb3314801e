#!/usr/bin/env bash
# trainkit under a real, single-node Slurm (Debian's slurm-wlm): srun tasks form the
# world from Slurm's variables, and a job stopped by `sbatch --signal=USR1` and requeued
# continues its run in slurm-<job id>.
#
#   sudo apt-get install slurm-wlm munge     # once
#   sudo bash benchmarks/slurm_single_node.sh [TRAINKIT]   # TRAINKIT: default .venv/bin/trainkit
#
# Starts munged, slurmctld and slurmd with a configuration in a temporary folder (root:
# the daemons run as root there), runs the two checks, stops the daemons. Prints what
# happened; exits 1 if a check fails.
set -euo pipefail
trainkit=$(realpath "${1:-.venv/bin/trainkit}")
work=$(mktemp -d /tmp/trainkit-slurm-XXXX)
mkdir -p "$work"/{state,spool,runs} /run/munge
chown munge:munge /run/munge
pgrep -x munged >/dev/null || sudo -u munge /usr/sbin/munged
host=$(hostname)
cat >"$work/slurm.conf" <<EOF
ClusterName=trainkit
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmdSpoolDir=$work/spool
StateSaveLocation=$work/state
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$work/slurm.conf GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=1
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
trap 'scancel --full -u root 2>/dev/null || true; kill $(cat "$work"/slurmd.pid "$work"/slurmctld.pid) 2>/dev/null || true' EXIT
for _ in $(seq 30); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 1; done

cat >"$work/short.yaml" <<EOF
name: short
seed: 3
model: {name: mlp, hidden: [16]}
data: {name: synthetic_logistic, n_train: 400, batch_size: 12}
optimizer: {name: sgd, lr: 0.1}
trainer: {epochs: 2, device: cpu}
checkpoint: {runs_dir: $work/runs}
EOF
echo "== srun -n 2: the world from Slurm's variables"
srun -n 2 "$trainkit" train "$work/short.yaml" -q
"$trainkit" runs "$work/runs/short"
python_of_trainkit=$(dirname "$trainkit")/python
"$python_of_trainkit" - "$work/runs/short" <<'EOF'
import sys
from pathlib import Path
from trainkit.training.checkpoint import read_payload
(run,) = Path(sys.argv[1]).iterdir()
payload = read_payload(run / "last.pt")
assert run.name.startswith("slurm-") and payload["world_size"] == 2, (run, payload["world_size"])
print(f"{run.name}: trained by {payload['world_size']} tasks")
EOF

cat >"$work/long.yaml" <<EOF
name: long
seed: 3
model: {name: mlp, hidden: [64]}
data: {name: synthetic_logistic, n_train: 50000, batch_size: 64}
optimizer: {name: sgd, lr: 0.05}
trainer: {epochs: 40, device: cpu}
checkpoint: {runs_dir: $work/runs, every_minutes: 0.25}
logging: {log_every_steps: 200}
EOF
cat >"$work/job.sh" <<EOF
#!/bin/bash
#SBATCH --ntasks=2
#SBATCH --time=00:02:00
#SBATCH --signal=USR1@60
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=$work/job.out
echo "start \$(date +%T), restart \${SLURM_RESTART_COUNT:-0}"
srun "$trainkit" train "$work/long.yaml"
code=\$?
echo "srun exit \$code at \$(date +%T)"
if [ \$code -eq 138 ]; then scontrol requeue \$SLURM_JOB_ID; fi
EOF
echo "== sbatch --signal=USR1@60 --requeue: stopped a minute in, requeued, continued"
job=$(sbatch --parsable "$work/job.sh")
for _ in $(seq 600); do
  state=$(scontrol show job "$job" 2>/dev/null | grep -o 'JobState=[A-Z]*' || true)
  [[ $state == JobState=COMPLETED || $state == JobState=FAILED || $state == JobState=CANCELLED ]] && break
  sleep 1
done
grep -E "^start|^srun exit|restart|continues from|completed:|stopped" "$work/job.out"
ls "$work/runs/long"
[[ $(ls "$work/runs/long") == "slurm-$job" ]] && grep -q "^completed:" "$work/job.out" \
  && grep -q "requeue 1 of Slurm job $job: .* continues from last.pt" "$work/job.out" && echo "requeued job continued its run: ok"
