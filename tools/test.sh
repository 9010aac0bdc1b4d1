#!/usr/bin/env bash
# `make test`: the main suite on both cores (pytest-xdist) and, at the same time, the Prefect and
# then the Airflow tests in their own venvs (their servers and schedulers spend much of their time
# waiting, so they fill the gaps the main suite leaves). The orchestrators' output is printed after
# the main suite's. Fails when any of the three fails; HYSTATE_NO_SKIPS=1 makes a skip a failure.
# Extra arguments go to every pytest (make test-fast passes -m "not slow").
set -uo pipefail
cd "$(dirname "$0")/.."

: "${BIN:=.venv/bin}" "${VENV_PREFECT:=.venv-prefect}" "${VENV_AIRFLOW:=.venv-airflow}"
: "${PYTEST_PAR:=-n 2 --dist loadgroup}"
export HYSTATE_NO_SKIPS=1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
started=$SECONDS

(
  # each run gets its own base temp folder: no run cleans up another's
  "$VENV_PREFECT/bin/python" -m pytest -q -p no:cacheprovider --basetemp "$scratch/prefect" \
    "$@" tests/integrations/prefect &&
    "$VENV_AIRFLOW/bin/python" -m pytest -q -p no:cacheprovider --basetemp "$scratch/airflow" \
      "$@" tests/integrations/airflow
) >"$scratch/orchestrators.log" 2>&1 &
orchestrators=$!

# shellcheck disable=SC2086  # PYTEST_PAR is a list of options
"$BIN/python" -m pytest -q $PYTEST_PAR "$@"
main=$?
wait "$orchestrators"
others=$?

echo "--- the Prefect and Airflow tests (run beside the main suite, in their own venvs):"
cat "$scratch/orchestrators.log"
echo "--- make test: $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s;" \
  "main suite exit $main, orchestrators exit $others"
[ "$main" -eq 0 ] && [ "$others" -eq 0 ]
