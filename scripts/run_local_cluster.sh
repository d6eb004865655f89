#!/usr/bin/env bash
# Runs train.py as a TensorFlow cluster (parameter servers + workers) on 127.0.0.1,
# for trying and testing between-graph replication on one machine.
#
# Usage:
#   scripts/run_local_cluster.sh --num_ps 1 --num_workers 2 -- --mnist_dir ../shared/mnist \
#       --train_dir /tmp/cluster --max_steps 2000 --optimizer adam
#
# TensorFlow's gRPC servers have no authentication and listen on every
# interface whatever host they are given, so by default the whole job runs in a
# network namespace of its own with only loopback: nothing outside this
# launcher can reach its ports. --no_isolation (or a machine where no
# namespace can be made) exposes them, and says so.
#
# Each process gets a free port and the classic flags (--ps_hosts, --worker_hosts,
# --job_name, --task_index; worker 0 is the chief); its log lines are prefixed with
# its role. The launcher waits for the workers (the parameter servers end when every
# worker reports done), prints each exit status, and stops everything it started on
# Ctrl-C, SIGTERM, or when any process fails. Exit status: 0 when all exited 0.
set -uo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

# bash cannot trap a signal that was ignored when it started (as SIGINT is for
# a background job of a non-interactive shell): say so instead of hanging on.
ignored_mask=$(awk '/^SigIgn:/ {print $2}' /proc/$$/status 2>/dev/null || echo 0)
if (( 0x${ignored_mask:-0} & 2 )) && [[ -z ${VAE_CLUSTER_NETNS:-} ]]; then
  echo "[launcher] started with SIGINT ignored (a background job?): Ctrl-C will not" \
    "stop this job; stop it with: kill -TERM $$" >&2
fi

orig_args=("$@")
num_ps=1
num_workers=2
isolate=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no_isolation) isolate=0; shift ;;
    --num_ps) num_ps=$2; shift 2 ;;
    --num_ps=*) num_ps=${1#*=}; shift ;;
    --num_workers) num_workers=$2; shift 2 ;;
    --num_workers=*) num_workers=${1#*=}; shift ;;
    --) shift; break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_local_cluster.sh: unknown option $1 (train.py flags go after --)" >&2; exit 2 ;;
  esac
done
if ! [[ $num_ps =~ ^[1-9][0-9]*$ && $num_workers =~ ^[1-9][0-9]*$ ]]; then
  echo "run_local_cluster.sh: --num_ps and --num_workers must be positive integers" >&2
  exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)

if ((isolate)) && [[ -z ${VAE_CLUSTER_NETNS:-} ]]; then
  # Root may make a network namespace; others need a user namespace too.
  unshare_flags=(--net)
  ((EUID == 0)) || unshare_flags=(--map-root-user --net)
  if unshare "${unshare_flags[@]}" true 2>/dev/null; then
    echo "[launcher] running the job in a network namespace of its own (loopback only)"
    # The same process, so signals sent to this launcher still reach it.
    exec unshare "${unshare_flags[@]}" bash -c \
      'ip link set lo up && VAE_CLUSTER_NETNS=1 exec bash "$@"' bash "$0" "${orig_args[@]}"
  fi
  echo "[launcher] WARNING: cannot create a network namespace here (unshare --net" \
    "failed): the job's ports are reachable from this machine's network" >&2
elif ((! isolate)); then
  echo "[launcher] WARNING: --no_isolation: the job's ports are reachable from this" \
    "machine's network; TensorFlow's servers have no authentication" >&2
fi
python=${PYTHON:-python}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

# Free ports, chosen by the kernel.
read -ra ports <<< "$("$python" -c '
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
' $((num_ps + num_workers)))"
ps_hosts=$(printf '127.0.0.1:%s,' "${ports[@]:0:num_ps}"); ps_hosts=${ps_hosts%,}
worker_hosts=$(printf '127.0.0.1:%s,' "${ports[@]:num_ps}"); worker_hosts=${worker_hosts%,}

declare -A pid_of
start() {  # start NAME JOB INDEX
  local name=$1 job=$2 index=$3
  "$python" "$repo/train.py" --ps_hosts="$ps_hosts" --worker_hosts="$worker_hosts" \
    --job_name="$job" --task_index="$index" "${train_flags[@]}" \
    > >(sed -u "s/^/[$name] /") 2>&1 &
  pid_of[$name]=$!
}

stop_all() {
  # Workers first: on SIGTERM the chief saves a checkpoint, which needs the
  # parameter servers, so they go last.
  local name
  for name in "${!pid_of[@]}"; do
    [[ $name == worker* ]] && kill -TERM "${pid_of[$name]}" 2>/dev/null
  done
  for _ in $(seq 1 300); do
    local alive=0
    for name in "${!pid_of[@]}"; do
      [[ $name == worker* ]] && kill -0 "${pid_of[$name]}" 2>/dev/null && alive=1
    done
    ((alive)) || break
    sleep 0.1
  done
  for name in "${!pid_of[@]}"; do kill -TERM "${pid_of[$name]}" 2>/dev/null; done
  sleep 1
  for name in "${!pid_of[@]}"; do kill -KILL "${pid_of[$name]}" 2>/dev/null; done
}
trap 'echo "[launcher] interrupted: stopping all processes" >&2; stop_all; exit 130' INT
trap 'echo "[launcher] terminated: stopping all processes" >&2; stop_all; exit 143' TERM

train_flags=("$@")
echo "[launcher] ps: $ps_hosts  workers: $worker_hosts"
for ((i = 0; i < num_ps; i++)); do start "ps$i" ps "$i"; done
for ((i = 0; i < num_workers; i++)); do start "worker$i" worker "$i"; done

failed=0
declare -A status_of
remaining=$num_workers
while ((remaining > 0)); do
  wait -n -p finished_pid "${pid_of[@]}" 2>/dev/null
  code=$?
  for name in "${!pid_of[@]}"; do
    if [[ ${pid_of[$name]} == "$finished_pid" && -z ${status_of[$name]:-} ]]; then
      status_of[$name]=$code
      echo "[launcher] $name exited with status $code"
      [[ $name == worker* ]] && remaining=$((remaining - 1))
      if ((code != 0)); then failed=1; fi
    fi
  done
  if ((failed)); then
    echo "[launcher] a process failed: stopping the others" >&2
    stop_all
    break
  fi
done

# Parameter servers end by themselves once every worker reported done.
for ((i = 0; i < num_ps; i++)); do
  name="ps$i"
  [[ -n ${status_of[$name]:-} ]] && continue
  for _ in $(seq 1 100); do kill -0 "${pid_of[$name]}" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "${pid_of[$name]}" 2>/dev/null; then
    echo "[launcher] $name still running after its workers ended: stopping it" >&2
    kill -TERM "${pid_of[$name]}"
    failed=1
  fi
  wait "${pid_of[$name]}"
  status_of[$name]=$?
  echo "[launcher] $name exited with status ${status_of[$name]}"
  ((status_of[$name] != 0)) && failed=1
done
exit $failed
