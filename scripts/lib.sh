# shellcheck shell=bash
# scripts/lib.sh: what the scripts in scripts/ share. Sourced, never run; every script starts
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# It sets `root` (the repository's top directory) and `prog` (scripts/<name>, for messages)
# and defines:
#   die MSG...           print "<prog>: MSG" on stderr and exit 1
#   bad_argument ARG     the error for an argument the script does not know (exit 2)
#   on_exit CMD          run CMD (a string, eval'ed) when the script exits, after the earlier
#                        ones; INT and TERM exit (status 130) so that it runs then too
#   build_release [T...] configure the release preset (build/release) and build targets T
#                        (everything when none), LAKH_JOBS jobs at once (default 2)
#   cpu_model            the CPU's model name
#   print_machine        "machine: N cores, MODEL, load L1 L5 L15"
#   median               the median of the numbers on stdin, one per line
#   json_field KEY       the value of top-level KEY in the JSON document on stdin ("" when
#                        absent), read with python3
#   services_up          start servers of our own (scripts/services start, with a state file
#                        of our own), export their URLs (and LAKH_SERVICES_DIR), stop them at
#                        exit
# Scripts run with `set -euo pipefail` (set here too).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prog="scripts/$(basename "$0")"

die() {
  echo "$prog: $*" >&2
  exit 1
}

bad_argument() {
  echo "$prog: unknown argument '$1' (try --help)" >&2
  exit 2
}

lakh_exit_cmds=()
lakh_run_exit_cmds() {
  local c
  for c in "${lakh_exit_cmds[@]}"; do eval "$c" || true; done
}
on_exit() {
  lakh_exit_cmds+=("$1")
  trap lakh_run_exit_cmds EXIT
  trap 'exit 130' INT TERM
}

build_release() {
  local targets=()
  [ $# -eq 0 ] || targets=(--target "$@")
  (cd "$root" && cmake --preset release >/dev/null &&
    cmake --build --preset release -j "${LAKH_JOBS:-2}" "${targets[@]}" >/dev/null)
}

cpu_model() { sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1; }

print_machine() {
  echo "machine: $(nproc) cores, $(cpu_model), load $(cut -d' ' -f1-3 /proc/loadavg)"
}

median() {
  sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

json_field() {
  python3 -c 'import json, sys
print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"
}

services_up() {
  LAKH_SERVICES_STATE=$(mktemp -u "${TMPDIR:-/tmp}/lakh-services-state.XXXXXX")
  export LAKH_SERVICES_STATE
  on_exit '"$root/scripts/services" stop >/dev/null 2>&1'
  "$root/scripts/services" start >/dev/null
  eval "$("$root/scripts/services" env)"
}
