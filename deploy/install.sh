#!/usr/bin/env bash
# Install (or upgrade) wattledger as a system service. See docs/install.md.
#
#   sudo deploy/install.sh                 install from this checkout, start it
#   sudo deploy/install.sh --no-start      install and enable, start later
#   DESTDIR=/tmp/root deploy/install.sh    stage everything under /tmp/root
#                                          (implies --no-systemctl; root is
#                                          not needed: see "Staging" below)
#
# What it writes (paths relative to DESTDIR):
#   /opt/wattledger/                      a Python venv holding the package
#   /usr/local/bin/wattledger            -> /opt/wattledger/bin/wattledger
#   /etc/systemd/system/wattledger.service
#   /usr/local/lib/sysusers.d/wattledger.conf   the `wattledger` system user
#   /usr/local/lib/tmpfiles.d/wattledger.conf   its directories
#   /etc/wattledger/config.toml           only if absent (root:wattledger 0640)
#   /etc/wattledger/config.toml.example   always the current example
#   /opt/wattledger/share/doc/wattledger/ install.md, config.example.toml
#   /var/lib/wattledger/                  state (ledger); never touched if present
#
# Upgrading is running it again: the venv is upgraded in place, the unit and
# snippets replaced, the config and the state directory kept.
#
# Staging (packagers, images): with DESTDIR as root the user and directories
# are made inside the staged tree (systemd-sysusers/-tmpfiles --root). As
# any other user nothing is chowned and no user is made (as with --no-users):
# the files are staged with their modes, and on the target the sysusers and
# tmpfiles snippets make the user, the directories and the config's owner
# (root:wattledger) at boot or when a package's postinst runs
# `systemd-sysusers wattledger.conf; systemd-tmpfiles --create wattledger.conf`.
#
# Options (each has an environment twin, used by tests and packagers):
#   --destdir DIR      DESTDIR      stage under DIR (implies --no-systemctl)
#   --prefix DIR       PREFIX       venv location (default /opt/wattledger)
#   --source SPEC      WATTLEDGER_SOURCE  what pip installs (default: this
#                                   checkout; or a wheel, or "wattledger==X")
#   --pip-args "ARGS"  WATTLEDGER_PIP_ARGS extra pip arguments, e.g.
#                                   "--no-index --find-links /srv/wheels"
#   --no-venv          WATTLEDGER_NO_VENV=1      do not create/upgrade the venv
#   --no-systemctl     WATTLEDGER_NO_SYSTEMCTL=1 do not call systemctl
#   --no-start         WATTLEDGER_NO_START=1     enable but do not (re)start
#   --no-users         WATTLEDGER_NO_USERS=1     do not create the user or
#                                   directories (packages do it at install time)
#   PYTHON=/usr/bin/python3.11      interpreter for the venv (>= 3.10)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHECKOUT="$(cd "$HERE/.." && pwd)"

DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/opt/wattledger}"
SOURCE="${WATTLEDGER_SOURCE:-$CHECKOUT}"
PIP_ARGS="${WATTLEDGER_PIP_ARGS:-}"
NO_VENV="${WATTLEDGER_NO_VENV:-0}"
NO_SYSTEMCTL="${WATTLEDGER_NO_SYSTEMCTL:-0}"
NO_START="${WATTLEDGER_NO_START:-0}"
NO_USERS="${WATTLEDGER_NO_USERS:-0}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) DESTDIR="${2:?--destdir needs a directory}"; shift 2 ;;
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --source) SOURCE="${2:?--source needs a pip requirement or path}"; shift 2 ;;
    --pip-args) PIP_ARGS="${2?}"; shift 2 ;;
    --no-venv) NO_VENV=1; shift ;;
    --no-systemctl) NO_SYSTEMCTL=1; shift ;;
    --no-start) NO_START=1; shift ;;
    --no-users) NO_USERS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

DESTDIR="${DESTDIR%/}"
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, got $PREFIX" ;; esac
ROOT=0
[ "$(id -u)" = 0 ] && ROOT=1
if [ -n "$DESTDIR" ]; then
  # A staged tree is not the running system: never touch the host's systemd.
  NO_SYSTEMCTL=1
  mkdir -p "$DESTDIR"
  DESTDIR="$(cd "$DESTDIR" && pwd)"
  if [ "$ROOT" = 0 ] && [ "$NO_USERS" != 1 ]; then
    # Only root can chown: ownership and users are the target's (sysusers/tmpfiles).
    say "staging as $(id -un 2>/dev/null || id -u), not root: no user is made and nothing is chowned here (as --no-users)"
    NO_USERS=1
  fi
elif [ "$ROOT" = 0 ]; then
  die "run as root (sudo $0), or stage into a directory with DESTDIR=..."
fi

UNIT_DIR="/etc/systemd/system"
SYSUSERS_DIR="/usr/local/lib/sysusers.d"
TMPFILES_DIR="/usr/local/lib/tmpfiles.d"
CONF_DIR="/etc/wattledger"
STATE_DIR="/var/lib/wattledger"
DOC_DIR="$PREFIX/share/doc/wattledger"
BIN_LINK="/usr/local/bin/wattledger"
D="$DESTDIR"

# --- 1. The venv -------------------------------------------------------------
if [ "$NO_VENV" = 1 ]; then
  say "skipping the venv (--no-venv): $D$PREFIX/bin/wattledger must come from elsewhere"
else
  if [ -z "${PYTHON:-}" ]; then
    # The system interpreter, not a user's pyenv/conda one: the service must
    # not depend on anybody's home directory (ProtectHome=yes hides them).
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$PYTHON is older than 3.10; set PYTHON=/path/to/python3.10+"
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$PYTHON cannot create venvs; on Debian/Ubuntu: apt-get install python3-venv"
  if [ ! -x "$D$PREFIX/bin/python" ]; then
    say "creating the venv $D$PREFIX"
    "$PYTHON" -m venv "$D$PREFIX"
  else
    say "upgrading the venv $D$PREFIX"
  fi
  say "installing $SOURCE into it"
  # --upgrade: a newer release replaces the old; --force-reinstall of the
  # package alone is not needed, pip rebuilds local paths every time.
  # shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
  "$D$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check \
    --upgrade $PIP_ARGS "$SOURCE" </dev/null
  [ -x "$D$PREFIX/bin/wattledger" ] || die "pip ran but $D$PREFIX/bin/wattledger is missing"
fi

# --- 2. Files ------------------------------------------------------------------
say "installing the unit, sysusers and tmpfiles snippets"
install -d -m 0755 "$D$UNIT_DIR" "$D$SYSUSERS_DIR" "$D$TMPFILES_DIR" "$D$DOC_DIR" "$D$(dirname "$BIN_LINK")"
# The unit names /opt/wattledger; follow --prefix.
sed "s#/opt/wattledger/#$PREFIX/#g" "$CHECKOUT/systemd/wattledger.service" > "$D$UNIT_DIR/wattledger.service.tmp"
chmod 0644 "$D$UNIT_DIR/wattledger.service.tmp"
mv -f "$D$UNIT_DIR/wattledger.service.tmp" "$D$UNIT_DIR/wattledger.service"
install -m 0644 "$CHECKOUT/systemd/wattledger.sysusers.conf" "$D$SYSUSERS_DIR/wattledger.conf"
install -m 0644 "$CHECKOUT/systemd/wattledger.tmpfiles.conf" "$D$TMPFILES_DIR/wattledger.conf"
install -m 0644 "$CHECKOUT/docs/install.md" "$HERE/config.example.toml" "$D$DOC_DIR/"
ln -sfn "$PREFIX/bin/wattledger" "$D$BIN_LINK"

# --- 3. User and directories ---------------------------------------------------
ROOT_ARGS=()
[ -n "$D" ] && ROOT_ARGS=(--root="$D")
if [ "$NO_USERS" = 1 ]; then
  say "skipping user and directories (--no-users)"
elif command -v systemd-sysusers >/dev/null 2>&1; then
  mkdir -p "$D/etc"
  systemd-sysusers "${ROOT_ARGS[@]}" wattledger.conf
  systemd-tmpfiles --create "${ROOT_ARGS[@]}" wattledger.conf
elif [ -z "$D" ]; then
  # No systemd-sysusers (old or non-systemd distribution): the same by hand.
  getent group wattledger >/dev/null || groupadd --system wattledger
  getent passwd wattledger >/dev/null || useradd --system --gid wattledger \
    --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
    --comment "wattledger energy and carbon ledger agent" wattledger
  install -d -m 0750 -o wattledger -g wattledger "$STATE_DIR"
else
  say "warning: no systemd-sysusers; the user is created on the target at boot"
fi

# The group id of `wattledger` in the target tree (a staged tree has its own
# /etc/group), for the config file's group.
gid_of_wattledger() {
  if [ -n "$D" ]; then
    awk -F: '$1 == "wattledger" { print $3 }' "$D/etc/group" 2>/dev/null || true
  else
    getent group wattledger | cut -d: -f3 || true
  fi
}

# --- 4. Config: the example always, config.toml only when absent ----------------
install -d -m 0755 "$D$CONF_DIR"
install -m 0644 "$HERE/config.example.toml" "$D$CONF_DIR/config.toml.example"
if [ -e "$D$CONF_DIR/config.toml" ]; then
  say "keeping the existing $CONF_DIR/config.toml (the new example is config.toml.example)"
else
  say "writing $CONF_DIR/config.toml from the example (every key commented at its default)"
  if [ "$ROOT" = 1 ]; then
    GID="$(gid_of_wattledger)"
    install -m 0640 -g "${GID:-0}" "$HERE/config.example.toml" "$D$CONF_DIR/config.toml"
  else
    # Not root: staged with its mode; the tmpfiles snippet makes it root:wattledger on the target.
    install -m 0640 "$HERE/config.example.toml" "$D$CONF_DIR/config.toml"
  fi
fi

# --- 5. systemd -------------------------------------------------------------------
if [ "$NO_SYSTEMCTL" = 1 ]; then
  say "not calling systemctl (--no-systemctl or DESTDIR)"
elif [ ! -d /run/systemd/system ]; then
  say "systemd is not running here: start the agent yourself ($PREFIX/bin/wattledger agent)"
else
  systemctl daemon-reload
  systemctl enable wattledger.service
  if [ "$NO_START" = 1 ]; then
    say "enabled; start it with: systemctl start wattledger"
  else
    # restart: an upgrade runs the new code; a first install starts it.
    systemctl restart wattledger.service
    say "started; status: systemctl status wattledger; logs: journalctl -u wattledger"
  fi
fi

if [ -z "$D" ]; then
  say "done. Check what can be measured here: $BIN_LINK doctor"
  exit 0
fi
# A staged tree: its links and the unit name the target's paths, true once it is installed at /.
say "done: staged under $D (links and the unit name the target's paths, e.g. $BIN_LINK -> $PREFIX/bin/wattledger)"
if [ "$NO_USERS" = 1 ]; then
  say "on the target, as root (a package's postinst does this): systemd-sysusers wattledger.conf;" \
      "systemd-tmpfiles --create wattledger.conf; systemctl daemon-reload; systemctl enable --now wattledger"
else
  say "on the target, as root: systemctl daemon-reload; systemctl enable --now wattledger"
fi
if [ "$NO_VENV" != 1 ]; then
  say "the staged venv runs only at the path it was built at: try it here with $D$PREFIX/bin/wattledger doctor"
fi
say "then, on the target: $BIN_LINK doctor"
