#!/bin/sh
# Slurm Epilog for wattledger: when a job ends, append its energy, facility
# energy and CO2e on this node to the job's output file (slurm-<id>.out or its
# --output), written as the job's user. docs/slurm.md explains the set-up.
#
# Install on every compute node (the agent must run there too):
#   install -m 0755 deploy/slurm/epilog.sh /etc/wattledger/slurm-epilog.sh
#   slurm.conf:  Epilog=/etc/wattledger/slurm-epilog.sh
# or, with an Epilog of your own, call this script from it. It runs as root
# (SlurmdUser), which it needs to read the ledger and to become the job's user.
#
# Slurm drains a node whose Epilog fails, so this script always exits 0; a
# problem is one line on stderr, which slurmd logs. Slurm gives Epilogs no
# PATH: the program is named in full. Override for a non-default install:
#   WATTLEDGER=/opt/wattledger/bin/wattledger  WATTLEDGER_CONFIG=/etc/wattledger/config.toml
WATTLEDGER="${WATTLEDGER:-/usr/local/bin/wattledger}"
WATTLEDGER_CONFIG="${WATTLEDGER_CONFIG:-/etc/wattledger/config.toml}"

if [ ! -x "$WATTLEDGER" ]; then
  echo "wattledger slurm epilog: $WATTLEDGER is not installed here; no energy summary for job ${SLURM_JOB_ID:-?}" >&2
  exit 0
fi
if [ -f "$WATTLEDGER_CONFIG" ]; then
  "$WATTLEDGER" slurm epilog --config "$WATTLEDGER_CONFIG" </dev/null || true
else
  "$WATTLEDGER" slurm epilog </dev/null || true
fi
exit 0
