#!/usr/bin/env bash
# weft local demo: one node (a network namespace) with three pods, the mesh in front.
#
#   test/bed/demo.sh run [--no-wait] [--bin-dir DIR]   (make demo)
#   test/bed/demo.sh down                               (make demo-down)
#
# `run` builds nothing (the Makefile built already). It creates pods web-a and
# web-b in namespace shop (labelled weft.dev/mesh: enabled) and legacy in
# namespace plain (not enrolled), a Service web-b (VIP) -> web-b:8080, starts
# weft-operator, weft-agent and weft-ztunnel, makes real curl calls and prints
# what happened. Then it waits for Ctrl-C (or exits at once with --no-wait)
# and removes everything it made. `down` removes a leftover demo.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PREFIX="${WEFT_DEMO_PREFIX:-wtdemo}"  # tests use their own
PY="${PYTHON:-python3}"
export PYTHONDONTWRITEBYTECODE=1  # keep the source tree clean
BED=("$PY" "$HERE/weftbed.py")

usage() {
  echo "usage: $0 run [--no-wait] [--bin-dir DIR] | down" >&2
  exit 2
}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "demo: needs root (it creates network namespaces, veths and loads eBPF programs);" >&2
    echo "      run: sudo $0 $*" >&2
    exit 1
  fi
}

down() {
  "${BED[@]}" down --prefix "$PREFIX" --missing-ok
}

run() {
  local wait=1 bin_dir="${WEFT_BUILD:-$REPO/build}"
  while [ $# -gt 0 ]; do
    case "$1" in
      --no-wait) wait=0 ;;
      --bin-dir) bin_dir="$2"; shift ;;
      *) usage ;;
    esac
    shift
  done
  # A demo left over from a killed run would hold the names.
  down >/dev/null 2>&1 || true
  cleanup() {
    trap - INT TERM EXIT
    echo
    echo "demo: tearing down (namespaces, veths, processes, BPF pins)..."
    down
  }
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  echo "demo: bringing up node1 with pods web-a, web-b (shop, enrolled) and legacy (plain)"
  "${BED[@]}" up --prefix "$PREFIX" --nodes 1 --bin-dir "$bin_dir" \
    --mesh-ns shop --pod shop/web-a --pod shop/web-b --pod plain/legacy \
    --service shop/web-b:80:8080 || exit 1
  "$PY" "$HERE/demo_report.py" --prefix "$PREFIX"
  local rc=$?
  if [ "$wait" -eq 0 ]; then
    exit "$rc"
  fi
  echo
  echo "demo: the mesh keeps running. Try:"
  echo "  $HERE/weftbed.py exec --prefix $PREFIX web-a -- curl -s http://10.96.0.10/"
  echo "  nsenter --net=/run/netns/$PREFIX-node1 $bin_dir/agent/ctl/weftctl connections"
  echo "Press Ctrl-C to stop and remove everything (or run: make demo-down)."
  while true; do
    sleep 1 &
    wait $!
  done
}

[ $# -ge 1 ] || usage
cmd="$1"
shift
case "$cmd" in
  run) need_root run; run "$@" ;;
  down) need_root down; down ;;
  *) usage ;;
esac
