#!/usr/bin/env bash
# Quick start (the README's first set-up command): no root, no server.
#
#   bash deploy/quickstart.sh
#
# 1. makes a venv in this checkout (./.venv) and installs wattledger into it
#    with the `plot` extra the README's tour uses (editable, so it shares the
#    venv with scripts/test.sh);
# 2. says what this machine can measure (`wattledger doctor`);
# 3. starts the agent on a local SQLite ledger in ./wl-state, 1 s ticks;
# 4. runs a tagged demo job: `wattledger run -t demo -- python -c <3 s busy loop>`,
#    which prints the job's own energy and CO2e;
# 5. stops the agent (SIGTERM: it finishes its tick and flushes) and prints
#    `wattledger report --state-dir ./wl-state`: energy, energy x PUE and CO2e
#    per job, the demo among them, and draws it (`--plot $STATE/report.png`).
# Safe to run again: the ledger accumulates.
#
# Environment: PYTHON (interpreter for the venv, >= 3.10), QUICKSTART_VENV
# (default ./.venv), QUICKSTART_STATE (default ./wl-state),
# QUICKSTART_NO_INSTALL=1 (use the venv as it is), QUICKSTART_DEMO_S (3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
VENV="${QUICKSTART_VENV:-.venv}"
STATE="${QUICKSTART_STATE:-wl-state}"
DEMO_S="${QUICKSTART_DEMO_S:-3}"

step() { printf '\n==> %s\n' "$*"; }

# --- 1. venv -------------------------------------------------------------------
if [ "${QUICKSTART_NO_INSTALL:-0}" != 1 ]; then
  step "installing wattledger into $VENV"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
      || { echo "quickstart: $PY is older than 3.10; set PYTHON=python3.10 or newer" >&2; exit 1; }
    "$PY" -m venv "$VENV" \
      || { echo "quickstart: cannot create a venv; on Debian/Ubuntu: sudo apt-get install python3-venv" >&2; exit 1; }
  fi
  # The `plot` extra (matplotlib): the tour's `wattledger report --plot` needs it.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[plot]' </dev/null
fi
WL="$VENV/bin/wattledger"
[ -x "$WL" ] || { echo "quickstart: $WL is missing (unset QUICKSTART_NO_INSTALL to install it)" >&2; exit 1; }
mkdir -p "$STATE"

# --- 2. doctor ---------------------------------------------------------------------
step "wattledger doctor: what this machine can measure"
# Exit 1 only means "no energy source": the agent then says so in its points.
"$WL" doctor --config /dev/null || true

# --- 3. agent --------------------------------------------------------------------------
# --config /dev/null: the built-in defaults, even if /etc/wattledger/config.toml
# exists (this is a private demo, not the service).
step "starting the agent: 1 s ticks, ledger in $STATE/ (log: $STATE/agent.log)"
"$WL" agent --config /dev/null --state-dir "$STATE" --interval 1 --sink none 2>"$STATE/agent.log" &
AGENT=$!
trap 'kill -TERM $AGENT 2>/dev/null || true' EXIT
for _ in $(seq 100); do  # until its first tick is in the ledger (at most ~20 s)
  [ -s "$STATE/ledger.sqlite3" ] && break
  kill -0 "$AGENT" 2>/dev/null || { cat "$STATE/agent.log" >&2; echo "quickstart: the agent exited" >&2; exit 1; }
  sleep 0.2
done
sleep 1.2  # one more tick: the baseline before the demo

# --- 4. demo job -------------------------------------------------------------------------
step "a tagged demo job: wattledger run -t demo -- python -c '<${DEMO_S} s busy loop>'"
"$WL" run -t demo -- "$VENV/bin/python" -c $'import time\nend = time.time() + '"$DEMO_S"$'\nwhile time.time() < end:\n    pass'
sleep 1.5  # let the agent's next tick see the demo's last CPU time

# --- 5. report ------------------------------------------------------------------------------
step "stopping the agent (SIGTERM: finish the tick, flush)"
if ! kill -TERM "$AGENT" 2>/dev/null; then
  tail -n 30 "$STATE/agent.log" >&2
  echo "quickstart: the agent died during the demo (the end of $STATE/agent.log is above)" >&2
  exit 1
fi
wait "$AGENT" || { tail -n 30 "$STATE/agent.log" >&2; echo "quickstart: the agent did not stop cleanly" >&2; exit 1; }
trap - EXIT
tail -n 2 "$STATE/agent.log"

step "wattledger report --state-dir $STATE --plot $STATE/report.png"
"$WL" report --config /dev/null --state-dir "$STATE" --plot "$STATE/report.png"

cat <<EOF

Next:
  . $VENV/bin/activate
  WATTLEDGER_JOB=my-experiment python train.py     # tag your own work
  wattledger agent --state-dir $STATE --interval 1 --sink stdout   # see every point
  sudo deploy/install.sh                            # the real service (docs/install.md)
EOF
