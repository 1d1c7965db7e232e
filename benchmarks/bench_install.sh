#!/usr/bin/env bash
# What an install costs: a fresh venv with cnnlab's core (`pip install .`) against one with
# every extra (`pip install '.[all]'`), both from a clean clone of this repository's HEAD.
# Prints the wall time of each `pip install` and the venv's size (du -sh), then checks in the
# core venv that `cnnlab train --case 1 --epochs 1` works and that `cnnlab serve` answers
# with the one line naming the 'serve' extra.
#
# usage: benchmarks/bench_install.sh [DATA_DIR]   (DATA_DIR holds mnist/; default: shared/data
#        beside the checkout, as in CI). Needs the package indexes of pip's configuration;
#        pip's own download cache is used as pip uses it (a second run downloads nothing).
#
# Both installs take the versions of requirements.lock as constraints (-c): the tested
# versions, and torch 2.13.0+cpu from pip's find-links, where pip alone would pick PyPI's
# newest torch in range, a CUDA build of several GB.
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA_DIR="${1:-$REPO/../shared/data}"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d -t cnnlab-install.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

git clone --quiet "$REPO" "$WORK/src"
echo "clone of $(git -C "$WORK/src" rev-parse --short HEAD) in $WORK/src; $($PYTHON -V)"

now() { date +%s%N; }
secs() { local ms=$((($2 - $1) / 1000000)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

# install NAME SPEC: a fresh venv $WORK/NAME with `pip install SPEC`; prints time and size.
install() {
  local venv="$WORK/$1" start end
  "$PYTHON" -m venv "$venv"
  start=$(now)
  if ! (cd "$WORK/src" && "$venv/bin/pip" install --quiet "$2" -c requirements.lock) \
    >"$WORK/$1.log" 2>&1; then
    grep -v "^WARNING: Location" "$WORK/$1.log" >&2 # (pip.conf's indexes lack most names)
    exit 1
  fi
  end=$(now)
  "$venv/bin/python" -c "import cnnlab" # the install worked at all
  RESULT["$1"]="$(secs "$start" "$end") s, $(du -sh "$venv" | cut -f1),"
  RESULT["$1"]+=" $("$venv/bin/pip" list 2>/dev/null | tail -n +3 | wc -l) distributions"
  echo "$1: pip install $2: ${RESULT[$1]}"
}

declare -A RESULT
install core "."

# The core venv does the core job, and names the extra an optional command lacks.
start=$(now)
"$WORK/core/bin/cnnlab" train --case 1 --epochs 1 --quiet --data-dir "$DATA_DIR" \
  --out "$WORK/run" | tail -n 1
echo "core: cnnlab train --case 1 --epochs 1: ok in $(secs "$start" "$(now)") s"
set +e
line=$("$WORK/core/bin/cnnlab" serve "$WORK/run" 2>&1)
code=$?
set -e
echo "core: cnnlab serve: exit $code: $line"
if ! [[ $code == 2 && $(wc -l <<<"$line") == 1 && $line == *"cnnlab[serve]"* ]]; then
  echo "FAIL: expected one line naming the 'serve' extra, exit 2" >&2
  exit 1
fi

install all ".[all]"

echo
echo "| install | pip install time, venv size, distributions |"
echo "|---|---|"
echo "| \`pip install .\` (core) | ${RESULT[core]} |"
echo "| \`pip install '.[all]'\` | ${RESULT[all]} |"
