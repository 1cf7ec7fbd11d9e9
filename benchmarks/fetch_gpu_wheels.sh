#!/usr/bin/env bash
# Download the wheels the GPU machine lacks, for CPython 3.12 manylinux x86_64, into an
# ignored folder (default .gpu-wheels/), plus a wheel of this project; print the sizes.
#
#   bash benchmarks/fetch_gpu_wheels.sh            # then carry .gpu-wheels to the GPU machine
#
# That machine has torch, transformers, peft, accelerate, pyarrow, matplotlib, rich, typer,
# pyyaml, fsspec and psutil, and no network. It lacks trl, bitsandbytes, datasets and
# pydantic; datasets and trl import pandas, dill, multiprocess and xxhash at import time, and
# pydantic 2.14 needs typing_extensions >= 4.16. Versions are the pins of
# container/constraints.txt. polars, orjson, prefect and ray are NOT shipped: the training
# program and the check must import without them (the smoke run blocks them to prove it).
# Everything that reaches the GPU machine (tracked tree + wheels) must stay under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${1:-.gpu-wheels}
# Leave a little of the 64 MiB for the tree to grow.
LIMIT_MIB=${GPU_CARRY_LIMIT_MIB:-62}
PYTHON=${PYTHON:-.venv/bin/python}
PACKAGES=(bitsandbytes trl datasets pandas dill multiprocess xxhash pydantic pydantic_core
          annotated-types typing-inspection typing_extensions)
# bitsandbytes and pandas are tagged manylinux_2_24/2_28, pydantic_core manylinux2014.
PLATFORMS=(manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_28_x86_64)

pin() {  # name==version from the constraints file ('-' and '_' are the same in names)
    local pattern
    pattern=$(printf '%s' "$1" | sed 's/[-_]/[-_]/g')
    grep -iE "^${pattern}==" container/constraints.txt | head -1
}

requirements=()
for name in "${PACKAGES[@]}"; do
    line=$(pin "$name")
    if [[ -z "$line" ]]; then
        echo "fetch_gpu_wheels: $name has no pin in container/constraints.txt" >&2
        exit 2
    fi
    requirements+=("$line")
done

rm -rf "$DEST"
mkdir -p "$DEST"
platform_flags=()
for tag in "${PLATFORMS[@]}"; do platform_flags+=(--platform "$tag"); done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
    --python-version 3.12 "${platform_flags[@]}" --dest "$DEST" "${requirements[@]}"
# The project itself (no dependencies; setuptools of this venv, so no download to build).
[[ -e build ]] && had_build=1 || had_build=0
build_log=$(mktemp)
if ! "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$DEST" . >"$build_log" 2>&1; then
    cat "$build_log" >&2
    exit 1
fi
rm -f "$build_log"
(( had_build )) || rm -rf build  # setuptools' scratch folder, not ours to leave

count=$(find "$DEST" -name '*.whl' | wc -l)
expected=$(( ${#PACKAGES[@]} + 1 ))
if [[ "$count" -ne "$expected" ]]; then
    echo "fetch_gpu_wheels: expected $expected wheels in $DEST, found $count" >&2
    exit 1
fi
ls -l "$DEST"/*.whl | awk '{printf "%8.2f MB  %s\n", $5 / 1e6, $9}'
wheels=$(find "$DEST" -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s}')
# What the device tool carries: tracked and untracked-but-not-ignored files, plus the wheels.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
awk -v w="$wheels" -v t="$tree" -v limit="$LIMIT_MIB" 'BEGIN {
    carry = (w + t) / 1048576
    printf "wheels: %.1f MB; working tree: %.1f MB; carry: %.1f MiB of the 64 MiB allowed\n", w / 1e6, t / 1e6, carry
    if (carry > limit) { printf "fetch_gpu_wheels: the carry exceeds %s MiB\n", limit > "/dev/stderr"; exit 1 }
}'
