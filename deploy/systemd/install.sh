#!/usr/bin/env bash
# Installs a Strata node under systemd: the strata binary, the strata system
# user, /var/lib/strata (owned by it), /etc/strata/strata.toml (from
# deploy/strata.toml, only when absent: an edited config is kept) and the
# unit strata.service. It does not enable or start the node: edit the config
# first (node_id, listen, initial_cluster), then `systemctl enable --now strata`.
#
#   deploy/systemd/install.sh --binary target/release/strata
#   deploy/systemd/install.sh --dry-run                   # print what it would do
#   deploy/systemd/install.sh --destdir /tmp/root         # stage into a directory (or DESTDIR=...)
#
# With a destination directory it only writes files below it: no user is
# created, nothing is chowned, systemd is not told; for packaging and tests.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --binary PATH    the strata binary [default: $CARGO_TARGET_DIR/release/strata,
                   else ~/.cache/strata-target-release/release/strata]
  --prefix DIR     install the binary in DIR/bin [default: /usr/local]
  --destdir DIR    stage everything below DIR instead of / (also DESTDIR)
  --dry-run        print the steps, change nothing
EOF
}

binary=""
prefix=/usr/local
destdir="${DESTDIR:-}"
dry_run=false
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --binary=*) binary="${1#*=}"; shift ;;
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    --destdir=*) destdir="${1#*=}"; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "install: error: $*" >&2; exit 1; }
say() { echo "install: $*"; }
# Runs a step, or only prints it with --dry-run.
run() {
  if $dry_run; then
    echo "would run: $*"
  else
    "$@"
  fi
}

case "$prefix" in /*) ;; *) die "--prefix must be an absolute path, not '$prefix'" ;; esac
prefix="${prefix%/}"
if [ -n "$destdir" ]; then
  case "$destdir" in /*) ;; *) destdir="$(pwd)/$destdir" ;; esac
  destdir="${destdir%/}"
fi
if [ -z "$binary" ]; then
  for candidate in "${CARGO_TARGET_DIR:-}/release/strata" "$HOME/.cache/strata-target-release/release/strata"; do
    if [ -x "$candidate" ]; then binary="$candidate"; break; fi
  done
  [ -n "$binary" ] || die "no strata binary found: build one (cargo build --release -p strata-cli) and pass --binary PATH"
fi
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then die "binary '$binary' is not an executable file"; fi
if [ -z "$destdir" ] && ! $dry_run && [ "$(id -u)" -ne 0 ]; then
  die "installing into / needs root (or use --destdir DIR / --dry-run)"
fi

bin_path="$prefix/bin/strata"
unit_path=/etc/systemd/system/strata.service
config_path=/etc/strata/strata.toml
data_dir=/var/lib/strata

# The unit with ExecStart pointing at the installed binary.
unit_text="$(sed "s|/usr/local/bin/strata|$bin_path|g" "$repo/deploy/systemd/strata.service")"
grep -q "^ExecStart=$bin_path server " <<<"$unit_text" || die "could not point the unit's ExecStart at $bin_path"

say "binary $binary -> $destdir$bin_path"
run install -D -m 0755 "$binary" "$destdir$bin_path"

say "unit -> $destdir$unit_path"
if $dry_run; then
  echo "would write $destdir$unit_path (ExecStart=$bin_path server --config $config_path)"
else
  install -d -m 0755 "$destdir$(dirname "$unit_path")"
  printf '%s\n' "$unit_text" >"$destdir$unit_path.tmp"
  chmod 0644 "$destdir$unit_path.tmp"
  mv "$destdir$unit_path.tmp" "$destdir$unit_path"
fi

# The user the unit runs as: a system account without a login shell, its
# home the data directory.
if [ -n "$destdir" ]; then
  say "user strata: not created (staging into $destdir)"
elif getent passwd strata >/dev/null 2>&1; then
  say "user strata: exists"
else
  say "user strata: creating"
  run useradd --system --user-group --home-dir "$data_dir" --no-create-home \
    --shell /usr/sbin/nologin --comment "Strata node" strata
fi

say "data directory -> $destdir$data_dir"
run install -d -m 0750 "$destdir$data_dir"
if [ -z "$destdir" ]; then
  run chown strata:strata "$data_dir"
fi

if [ -e "$destdir$config_path" ]; then
  say "config $destdir$config_path exists: kept as it is"
else
  say "config $repo/deploy/strata.toml -> $destdir$config_path"
  run install -d -m 0755 "$destdir$(dirname "$config_path")"
  run install -m 0640 "$repo/deploy/strata.toml" "$destdir$config_path"
  if [ -z "$destdir" ]; then
    # Readable by the node, not by every user (it may name internal addresses).
    run chgrp strata "$config_path"
  fi
fi

if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
  run systemctl daemon-reload
fi

if $dry_run; then
  say "dry run: nothing was changed"
else
  say "done. Next: set node_id, listen and initial_cluster in $config_path, then: systemctl enable --now strata"
fi
