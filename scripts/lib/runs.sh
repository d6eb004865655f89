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
