#!/usr/bin/env bash
# Builds crid-pause (sandbox/pause/pause.c), statically: with musl-gcc when
# installed (13 KiB), else with gcc. Usage: build-pause.sh OUTPUT
set -euo pipefail
out=${1:?usage: build-pause.sh OUTPUT}
src="$(dirname "$0")/../sandbox/pause/pause.c"
cc=gcc
command -v musl-gcc >/dev/null && cc=musl-gcc
mkdir -p "$(dirname "$out")"
"$cc" -Os -static -s -Wall -Werror -o "$out.tmp" "$src"
mv "$out.tmp" "$out"
