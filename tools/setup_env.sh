#!/usr/bin/env bash
# Creates a virtual environment with a tested, pinned stack (torch, torchvision, mmcv with its compiled ops, mmengine,
# mmdet, timm ...) and mmvanilla itself (editable), then proves the install. Idempotent: a second run only re-checks
# the install.
#
#   STACK=current (default): .venv/ with requirements/current.txt (Python 3.11, torch 2.14), the README's figures;
#   STACK=oldest:            .venv-oldest/ with requirements/oldest.txt (Python 3.10, torch 2.1), the oldest stack
#                            mmvanilla supports (pyproject.toml's floors).
#
# The lock file is a pip constraints file: every install below is held to it, so a fresh machine gets exactly those
# versions. mmcv has no wheel for these torches; its sdist builds once (about 3.5 minutes on 2 cores for the CPU ops)
# with no build isolation, with C++20 for torch >= 2.10's headers. Its ops get CUDA kernels when torch is a CUDA
# build, nvcc is there to compile them and a GPU to run them (build target "cuda<version>"; MMVANILLA_MMCV_CUDA=1
# without a GPU, =0 never), else CPU ones only (target "cpu"); see tools/mmcv_ops.py. The wheel is cached outside
# the clone, keyed by mmcv, torch and Python versions and the build target, so another clone installs it in seconds
# and a wheel without CUDA kernels is never reused where they are wanted (a home directory shared by CPU and GPU
# nodes).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${STACK:-current}
case "$STACK" in
  current) VENV="$ROOT/.venv"; PYVER=3.11; EXTRAS=test,deploy,benchmark ;;
  # The oldest stack leaves the deploy extra out: its torch has no ONNX exporter of the kind mmvanilla uses.
  oldest) VENV="$ROOT/.venv-oldest"; PYVER=3.10; EXTRAS=test ;;
  *) printf '[setup] ERROR: unknown STACK=%s: current (the default) or oldest\n' "$STACK" >&2; exit 2 ;;
esac
LOCK="$ROOT/requirements/$STACK.txt"
pinned() { sed -n "s/^$1==//p" "$LOCK"; }
TORCH=$(pinned torch)
TORCHVISION=$(pinned torchvision)
MMCV=$(pinned mmcv)
CACHE=${MMVANILLA_CACHE:-$HOME/.cache/mmvanilla}
STAMP="$VENV/.mmvanilla-setup"

log() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# tools/mmcv_ops.py: the build target of mmcv's ops ("cuda<version>" or "cpu"), and the check of the install.
build_target() { "$VENV/bin/python" "$ROOT/tools/mmcv_ops.py" target; }
verify() { "$VENV/bin/python" "$ROOT/tools/mmcv_ops.py" verify "$1"; }

want=$(cat "$ROOT/pyproject.toml" "$LOCK" "$ROOT/tools/setup_env.sh" "$ROOT/tools/mmcv_ops.py" | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && -x "$VENV/bin/python" ]]; then
  read -r stamped built < "$STAMP" || true
  target=$(build_target)
  # The stamp records what the ops were built for: CUDA kernels wanted now (a GPU node sharing this clone, nvcc
  # installed since) over a CPU-only build rebuilds; a CUDA build also serves the CPU.
  if [[ "$stamped" == "$want" && -n "${built:-}" && ( "$built" == "$target" || "$target" == cpu ) ]]; then
    log "environment up to date: $VENV (mmcv ops for $built)"
    verify "$built"
    exit 0
  fi
fi

# Anything below that fails removes the half-made environment: the next run starts clean.
cleanup() { rc=$?; if [[ $rc -ne 0 ]]; then log "set-up failed (exit $rc): removing $VENV"; rm -rf "$VENV"; fi; }
trap cleanup EXIT

# python$PYVER on PATH, else a pyenv-installed one (its shim answers only where pyenv selects that version).
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  for candidate in "python$PYVER" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$PYVER".*/bin/"python$PYVER"; do
    if "$candidate" -c 'import sys' >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi
[[ -n "$PY" ]] && "$PY" -c 'import sys' >/dev/null 2>&1 \
  || fail "python$PYVER not found: install Python $PYVER or set PYTHON=/path/to/python$PYVER"
[[ -n "$TORCH" && -n "$TORCHVISION" && -n "$MMCV" ]] || fail "$LOCK must pin torch, torchvision and mmcv"
rm -rf "$VENV"
log "creating $VENV with $($PY --version)"
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$LOCK")
log "installing the $STACK stack pinned by ${LOCK#"$ROOT/"}"
# mmengine imports pkg_resources, which setuptools 81 removed.
"${PIP[@]}" --upgrade pip 'setuptools<81' wheel ninja
log "installing torch $TORCH and torchvision $TORCHVISION"
"${PIP[@]}" "torch==$TORCH" "torchvision==$TORCHVISION"

pytag=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
target=$(build_target)
if [[ "$target" == cpu ]]; then
  # The folder name CPU wheels had before the key held the target: wheels cached then are still found.
  WHEELDIR="$CACHE/wheels/mmcv-$MMCV-torch$TORCH-$pytag"
  # No CUDA kernels without nvcc: hide any GPU, or mmcv's setup.py would ask for them.
  build_env=(CUDA_VISIBLE_DEVICES= FORCE_CUDA=0)
else
  WHEELDIR="$CACHE/wheels/mmcv-$MMCV-torch$TORCH-$pytag-$target"
  build_env=(FORCE_CUDA=1)
fi
log "mmcv ops will be built for $target (torch CUDA: $("$VENV/bin/python" -c 'import torch; print(torch.version.cuda)'))"
wheel=$(ls "$WHEELDIR"/mmcv-"$MMCV"-*.whl 2>/dev/null | head -n1 || true)
if [[ -z "$wheel" ]]; then
  log "no cached mmcv wheel in $WHEELDIR: building mmcv $MMCV from source (about 3.5 minutes on 2 cores for the CPU ops; longer with CUDA kernels)"
  build=$(mktemp -d)
  "$VENV/bin/python" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==$MMCV" -d "$build" || fail "could not download the mmcv $MMCV sdist from the package index"
  tar -xzf "$build/mmcv-$MMCV.tar.gz" -C "$build"
  src="$build/mmcv-$MMCV"
  # torch >= 2.10 headers need C++20; mmcv 2.1.0 asks for C++17, which older torches take as it is.
  if "$VENV/bin/python" -c 'import sys, torch; sys.exit(tuple(map(int, torch.__version__.split(".")[:2])) < (2, 10))'; then
    grep -q 'c++17' "$src/setup.py" || fail "mmcv's setup.py no longer mentions c++17: update the patch in $0"
    sed -i 's/c++17/c++20/g' "$src/setup.py"
  fi
  # CFLAGS replaces Python's own compile flags (-O3 -DNDEBUG ...): keep them, less the debug information.
  cflags="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS"))') ${CFLAGS:-} -g0"
  # tools/pch_cxx.sh parses ATen's headers once for all sources; -g0 leaves out debug information. Together they
  # take the build from about 13 s a source to about 2.5 (one core), with the same code.
  if ! (cd "$src" && env "${build_env[@]}" MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        MMVANILLA_CXX="${CXX:-c++}" CXX="$ROOT/tools/pch_cxx.sh" CFLAGS="$cflags" \
        "$VENV/bin/python" -m pip wheel --no-deps --no-build-isolation -w "$build/dist" . > "$build/build.log" 2>&1); then
    tail -n 40 "$build/build.log" >&2
    fail "mmcv $MMCV failed to build against torch $TORCH for $target (full log: $build/build.log)"
  fi
  mkdir -p "$WHEELDIR"
  built=$(ls "$build"/dist/mmcv-*.whl)
  cp "$built" "$WHEELDIR/.partial.whl" && mv "$WHEELDIR/.partial.whl" "$WHEELDIR/$(basename "$built")"
  wheel="$WHEELDIR/$(basename "$built")"
  rm -rf "$build"
  log "cached $wheel"
else
  log "using cached $wheel"
fi
"${PIP[@]}" "$wheel"

log "installing mmvanilla (editable, extras $EXTRAS) with mmengine, mmdet, timm, pycocotools"
"${PIP[@]}" -e "$ROOT[$EXTRAS]"
verify "$target"
echo "$want $target" > "$STAMP"
log "done: activate with 'source ${VENV#"$ROOT/"}/bin/activate'"
