#!/usr/bin/env bash
# The one test command (README, "Set up"): installs everything the tests need
# into this checkout (a .venv, Debian's influxdb server package, the npm
# packages of tests/node), then runs the whole suite. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# 1. The InfluxDB 1.x server the integration tests start on loopback.
if ! command -v influxd >/dev/null 2>&1; then
  echo "test.sh: installing Debian's influxdb package (real server for integration tests)" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb </dev/null >/dev/null
  # The package's own service is not needed: tests start their own server.
  $SUDO systemctl disable --now influxdb >/dev/null 2>&1 || true
fi

# 1b. systemd-analyze (Debian package systemd), which the service-unit tests
# run (verify, security --offline); setpriv (util-linux) is essential.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "test.sh: installing Debian's systemd package (systemd-analyze for the unit tests)" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd </dev/null >/dev/null
fi

# 1c. systemd-nspawn (Debian package systemd-container), which boots this
# machine's OS in a container to run the installed service under a real
# systemd (tests/test_systemd_nspawn.py).
if ! command -v systemd-nspawn >/dev/null 2>&1; then
  echo "test.sh: installing Debian's systemd-container package (systemd-nspawn for the service test)" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd-container \
    </dev/null >/dev/null
fi

# 1d. A real one-node Slurm (slurmctld, slurmd, the client commands, munge) and
# Prometheus: the Slurm and Prometheus end-to-end tests start their own daemons
# from temporary configs on free ports, so the packages' services are not needed.
need=""
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge prometheus:prometheus; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
if [ -n "$need" ]; then
  echo "test.sh: installing Debian's$need (Slurm and Prometheus integration tests)" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need </dev/null >/dev/null
  for unit in slurmctld slurmd munge prometheus; do
    $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
fi

# 2. Python: the package and its test dependencies in a private venv.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' </dev/null

# 2b. Wheels of the package's runtime dependencies, for the offline install of
# the package into the nspawn container by deploy/install.sh (the test builds
# the package's own wheel from the checkout; tests have no network).
WHEELHOUSE=.venv/wheelhouse
if [ ! -f "$WHEELHOUSE/.complete" ] || [ pyproject.toml -nt "$WHEELHOUSE/.complete" ]; then
  rm -rf "$WHEELHOUSE"
  .venv/bin/python - >.venv/runtime-requirements.txt <<'PYEOF'
import importlib.metadata as m
print("\n".join(r for r in m.requires("wattledger") or [] if "extra ==" not in r))
PYEOF
  .venv/bin/python -m pip download -q --disable-pip-version-check --only-binary=:all: \
    -d "$WHEELHOUSE" -r .venv/runtime-requirements.txt </dev/null
  touch "$WHEELHOUSE/.complete"
fi

# 3. Node: Grafana's own @grafana/data, to evaluate dashboard transformations.
#    (Debian's nodejs 18 is enough; tests/node/package-lock.json pins the tree.)
if [ -f tests/node/package.json ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "test.sh: installing Debian's nodejs and npm (dashboard transformation tests)" >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm </dev/null >/dev/null
  fi
  if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules/.package-lock.json ]; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error </dev/null >/dev/null)
  fi
fi

# 4. The suite. pytest's exit 5 ("no tests collected") is a failure here.
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
