# Shell helpers shared by the scripts that train many runs (sourced, not run).

# True when train.py finished DIR: its metrics.json holds the final test
# evaluation and no interruption. Re-running train.py would overwrite the
# wall time a report shows with that of a run that only evaluates.
training_finished() {  # DIR
  "${python:-python}" -c 'import json, sys
metrics = json.load(open(sys.argv[1]))
sys.exit(0 if "test" in metrics and not metrics.get("interrupted_by") else 1)' \
    "$1/metrics.json" 2>/dev/null
}

# Makes $DATA_DIR's TFRecords from $MNIST_DIR once, before runs start side
# by side: two trainings converting into one directory at once would race.
prepare_data() {
  [[ -f $DATA_DIR/dataset_info.json ]] && return 0
  if ! "${python:-python}" -m mnist_vae.data_prep.convert_to_records --mnist_dir="$MNIST_DIR" \
      --output_dir="$DATA_DIR"; then
    echo "$(basename "$0"): could not make the TFRecords in $DATA_DIR (above); no run started." >&2
    exit 1
  fi
}

# The value of --FLAG in configs/PRESET.flags (the last one), or nothing.
preset_setting() {  # PRESET FLAG
  [[ -f configs/$1.flags ]] || return 0
  sed -n "s/^--$2=//p" "configs/$1.flags" | tail -n 1
}

# A preset whose flag file names its own --data_dir (its own split, or
# another dataset) trains on TFRecords of its own, made here once, before
# runs start side by side: under that directory's name beside $DATA_DIR,
# from $MNIST_DIR, or $FASHION_MNIST_DIR for --dataset=fashion_mnist. Prints
# the train.py flags of that data (nothing for a preset without: it trains
# on $DATA_DIR); exits the script if the data cannot be made.
prepare_preset_data() {  # PRESET
  local own_data_dir dataset source_dir data_dir flag value split_flags=()
  own_data_dir=$(preset_setting "$1" data_dir)
  [[ -n $own_data_dir ]] || return 0
  dataset=$(preset_setting "$1" dataset)
  source_dir=$MNIST_DIR
  [[ $dataset == fashion_mnist ]] && source_dir=$FASHION_MNIST_DIR
  data_dir=$(dirname "$DATA_DIR")/$(basename "$own_data_dir")
  for flag in validation_size validation_from; do
    value=$(preset_setting "$1" $flag)
    [[ -z $value ]] || split_flags+=("--$flag=$value")
  done
  if [[ ! -f $data_dir/dataset_info.json ]] &&
      ! "${python:-python}" -m mnist_vae.data_prep.convert_to_records --mnist_dir="$source_dir" \
        --output_dir="$data_dir" --dataset="${dataset:-mnist}" "${split_flags[@]}" >&2; then
    echo "$(basename "$0"): could not make $1's TFRecords in $data_dir (above); no run" \
      "started." >&2
    exit 1
  fi
  echo "--mnist_dir=$source_dir --data_dir=$data_dir"
}

# A pool of up to $JOBS runs at once (scripts' --jobs N). With JOBS=1 a run
# goes in the foreground, its output on the terminal; otherwise in the
# background, its output in its own log file, and the pool waits for a free
# slot first. A run that fails gets the end of its log printed; no new run
# starts after it, and pool_wait_all returns non-zero.
JOBS=${JOBS:-1}
pool_failed=0
declare -A pool_logs=()

pool_run() {  # NAME LOG COMMAND...
  local name=$1 log=$2
  shift 2
  if ((JOBS == 1)); then
    progress_running "$name"
    "$@"
    progress_finished "$name"
    [[ -z $progress_line ]] || echo "  ${progress_line#, }"
    return
  fi
  while ((${#pool_logs[@]} >= JOBS)); do pool_wait_one; done
  ((pool_failed)) && return 0
  mkdir -p "$(dirname "$log")"
  progress_running "$name"
  "$@" >"$log" 2>&1 &
  pool_logs[$!]="$name|$log"
  echo "   started $name in the background (pid $!); its output: $log"
}

pool_wait_one() {
  local pid status=0
  wait -n -p pid "${!pool_logs[@]}" || status=$?
  local name=${pool_logs[$pid]%%|*} log=${pool_logs[$pid]#*|}
  unset "pool_logs[$pid]"
  if ((status)); then
    pool_failed=1
    echo "FAILED ($status): $name. The end of $log:" >&2
    tail -n 20 "$log" >&2
  else
    progress_finished "$name"
    echo "   finished $name$progress_line"
  fi
}

pool_wait_all() {
  while ((${#pool_logs[@]})); do pool_wait_one; done
  ((pool_failed == 0))
}

# Thread flags for train.py and evaluate.py when runs share the cores: the
# cores split evenly between the $JOBS runs (or $THREADS_PER_JOB each); none
# with one run at a time and no --threads_per_job (TensorFlow picks).
thread_flags() {
  local threads=${THREADS_PER_JOB:-}
  if [[ -z $threads ]]; then
    ((JOBS == 1)) && return 0
    threads=$(($(nproc) / JOBS))
    ((threads >= 1)) || threads=1
  fi
  echo "--intra_op_threads=$threads --inter_op_threads=$threads"
}

check_jobs_flags() {  # SCRIPT_NAME
  if ! [[ $JOBS =~ ^[1-9][0-9]*$ ]]; then
    echo "$1: --jobs takes a number of runs at once (1, 2, ...), not '$JOBS'" >&2
    exit 2
  fi
  if [[ -n ${THREADS_PER_JOB:-} && ! $THREADS_PER_JOB =~ ^[1-9][0-9]*$ ]]; then
    echo "$1: --threads_per_job takes a number of threads, not '$THREADS_PER_JOB'" >&2
    exit 2
  fi
}

# Progress over a script's runs, for a job of hours: progress_expect NAME
# WORK for every run before the first starts (WORK: its training steps plus
# what its evaluations cost in steps' worth; 0 for a run with nothing left to
# do), then progress_next NAME as each is announced (it may then wait for a
# slot), and pool_run reports each start (progress_running) and finish. Each
# sets progress_line (not printed from a subshell: it counts).
# The time left: the work still to come (less what the runs in flight have
# done by now) at the pace of the finished runs, each over its own time,
# spread over the --jobs runs at once. (The time so far scaled by the work
# finished would count none of the runs in flight: with two at once it said
# 14 minutes where 5 were left.)
declare -A progress_work=() progress_started_at=()
progress_runs=0 progress_started=0 progress_done=0 progress_line=
progress_total_work=0 progress_done_work=0 progress_done_seconds=0

progress_expect() {  # NAME WORK
  progress_work[$1]=$2
  ((progress_runs += 1, progress_total_work += $2)) || true
}

progress_next() {  # NAME -> progress_line "run K of N, about T left"
  progress_line=
  [[ -v "progress_work[$1]" ]] || return 0
  ((progress_started += 1))
  progress_line="run $progress_started of $progress_runs$(progress_time_left)"
}

progress_running() {  # NAME: it starts now (pool_run, once a slot is free).
  [[ -v "progress_work[$1]" ]] && progress_started_at[$1]=$SECONDS
  return 0
}

progress_finished() {  # NAME -> progress_line ", K of N runs done, about T left"
  progress_line=
  [[ -v "progress_work[$1]" ]] || return 0
  ((progress_done += 1, progress_done_work += progress_work[$1])) || true
  if [[ -v "progress_started_at[$1]" ]]; then
    ((progress_done_seconds += SECONDS - progress_started_at[$1])) || true
    unset "progress_started_at[$1]"
  fi
  progress_line=", $progress_done of $progress_runs runs done$(progress_time_left)"
}

progress_time_left() {
  ((progress_done_work > 0 && progress_done_work < progress_total_work)) || return 0
  local finished_seconds=$((progress_done_seconds > 0 ? progress_done_seconds : 1))
  local left=$((progress_total_work - progress_done_work)) name done_by_now
  for name in "${!progress_started_at[@]}"; do
    done_by_now=$(((SECONDS - progress_started_at[$name]) * progress_done_work
                   / finished_seconds))
    ((left -= done_by_now < progress_work[$name] ? done_by_now : progress_work[$name])) || true
  done
  ((left > 0)) || left=0
  local at_once=$((progress_runs - progress_done < JOBS ? progress_runs - progress_done : JOBS))
  local seconds=$((left * finished_seconds / progress_done_work / at_once))
  # As train.py's log says it: 45 s, 12 min 05 s, 1 h 20 min.
  if ((seconds < 60)); then
    echo ", about $seconds s left"
  elif ((seconds < 3600)); then
    printf ', about %d min %02d s left\n' $((seconds / 60)) $((seconds % 60))
  else
    printf ', about %d h %02d min left\n' $((seconds / 3600)) $((seconds % 3600 / 60))
  fi
}

