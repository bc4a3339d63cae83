#!/usr/bin/env bash
# Remove what deploy/install.sh installed. See docs/install.md.
#
#   sudo deploy/uninstall.sh            stop and remove the service and the program;
#                                       keep /etc/wattledger and /var/lib/wattledger
#   sudo deploy/uninstall.sh --purge    also remove the config, the ledger and the user
#   DESTDIR=/tmp/root deploy/uninstall.sh   the same inside a staged tree
#
# Options: --destdir DIR (DESTDIR), --prefix DIR (PREFIX, default
# /opt/wattledger), --no-systemctl (WATTLEDGER_NO_SYSTEMCTL=1), --purge
# (WATTLEDGER_PURGE=1).
set -euo pipefail

DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/opt/wattledger}"
NO_SYSTEMCTL="${WATTLEDGER_NO_SYSTEMCTL:-0}"
PURGE="${WATTLEDGER_PURGE:-0}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "uninstall.sh: error: $*" >&2; exit 1; }
say() { echo "uninstall.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) DESTDIR="${2:?--destdir needs a directory}"; shift 2 ;;
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --no-systemctl) NO_SYSTEMCTL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

DESTDIR="${DESTDIR%/}"
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, got $PREFIX" ;; esac
# Guard the one recursive delete of a configurable path.
case "$PREFIX" in /|/usr|/usr/*|/etc|/etc/*|/var|/home|/root|/opt) die "refusing to remove PREFIX=$PREFIX" ;; esac
if [ -n "$DESTDIR" ]; then
  NO_SYSTEMCTL=1
  [ -d "$DESTDIR" ] || die "DESTDIR $DESTDIR does not exist"
elif [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0), or pass DESTDIR=..."
fi
D="$DESTDIR"

if [ "$NO_SYSTEMCTL" != 1 ] && [ -d /run/systemd/system ]; then
  # Stopping sends SIGTERM: the agent finishes its tick and flushes first.
  systemctl disable --now wattledger.service 2>/dev/null || true
fi

say "removing the unit, snippets, link and $PREFIX"
rm -f "$D/etc/systemd/system/wattledger.service" \
      "$D/usr/local/lib/sysusers.d/wattledger.conf" \
      "$D/usr/local/lib/tmpfiles.d/wattledger.conf"
# The link only if it is ours.
if [ -L "$D/usr/local/bin/wattledger" ] && [ "$(readlink "$D/usr/local/bin/wattledger")" = "$PREFIX/bin/wattledger" ]; then
  rm -f "$D/usr/local/bin/wattledger"
fi
rm -rf "${D:?}$PREFIX"

if [ "$NO_SYSTEMCTL" != 1 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl reset-failed wattledger.service 2>/dev/null || true
fi

if [ "$PURGE" = 1 ]; then
  say "purging /etc/wattledger, /var/lib/wattledger and the wattledger user"
  rm -rf "$D/etc/wattledger" "$D/var/lib/wattledger"
  if [ -n "$D" ]; then
    for f in passwd shadow group gshadow; do
      [ -f "$D/etc/$f" ] && sed -i '/^wattledger:/d' "$D/etc/$f"
    done
  else
    if getent passwd wattledger >/dev/null; then userdel wattledger; fi
    if getent group wattledger >/dev/null; then groupdel wattledger 2>/dev/null || true; fi
  fi
else
  say "kept /etc/wattledger and /var/lib/wattledger (and the user); --purge removes them"
fi
say "done"
