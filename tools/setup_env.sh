#!/usr/bin/env bash
# Creates .venv/ with torch 2.14.1, mmcv 2.1.0 (compiled CPU ops), mmengine, mmdet, timm and mmvanilla itself,
# then proves the install. Idempotent: a second run only re-checks the install.
#
# mmcv has no wheel for this torch; its sdist builds once (about 15 minutes on 2 cores) with C++20 and no build
# isolation. The wheel is cached outside the clone, keyed by mmcv, torch and Python versions, so another clone on
# the same machine installs it in seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3.11}
TORCH=2.14.1
TORCHVISION=0.29.1
MMCV=2.1.0
CACHE=${MMVANILLA_CACHE:-$HOME/.cache/mmvanilla}
STAMP="$VENV/.mmvanilla-setup"

log() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

verify() {
  "$VENV/bin/python" - <<'PYEOF'
import torch
from mmcv.ops import RoIAlign, nms
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
scores = torch.tensor([0.9, 0.8, 0.7])
_, keep = nms(boxes, scores, iou_threshold=0.5)
assert keep.tolist() == [0, 2], keep
feat = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
rois = torch.tensor([[0., 0., 0., 4., 4.]])
out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)(feat, rois)
assert out.shape == (1, 1, 2, 2), out.shape
import mmdet.models  # noqa: F401  (needs the compiled ops)
import mmvanilla  # noqa: F401
print(f'[setup] ok: torch {torch.__version__}, mmcv.ops nms + RoIAlign run on CPU, mmdet.models imports')
PYEOF
}

want=$(cat "$ROOT/pyproject.toml" "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  log "environment up to date: $VENV"
  verify
  exit 0
fi

# Anything below that fails removes the half-made environment: the next run starts clean.
cleanup() { rc=$?; if [[ $rc -ne 0 ]]; then log "set-up failed (exit $rc): removing $VENV"; rm -rf "$VENV"; fi; }
trap cleanup EXIT

command -v "$PY" >/dev/null || fail "$PY not found: install Python 3.11 or set PYTHON=/path/to/python3.11"
rm -rf "$VENV"
log "creating $VENV with $($PY --version)"
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# mmengine 0.10.7 imports pkg_resources, which setuptools 81 removed.
"${PIP[@]}" --upgrade pip 'setuptools<81' wheel ninja
log "installing torch $TORCH and torchvision $TORCHVISION"
"${PIP[@]}" "torch==$TORCH" "torchvision==$TORCHVISION"

pytag=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEELDIR="$CACHE/wheels/mmcv-$MMCV-torch$TORCH-$pytag"
wheel=$(ls "$WHEELDIR"/mmcv-"$MMCV"-*.whl 2>/dev/null | head -n1 || true)
if [[ -z "$wheel" ]]; then
  log "no cached mmcv wheel in $WHEELDIR: building mmcv $MMCV from source (about 15 minutes on 2 cores)"
  build=$(mktemp -d)
  "$VENV/bin/python" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==$MMCV" -d "$build" || fail "could not download the mmcv $MMCV sdist from the package index"
  tar -xzf "$build/mmcv-$MMCV.tar.gz" -C "$build"
  src="$build/mmcv-$MMCV"
  # torch >= 2.10 headers need C++20; mmcv 2.1.0 asks for C++17.
  grep -q 'c++17' "$src/setup.py" || fail "mmcv's setup.py no longer mentions c++17: update the patch in $0"
  sed -i 's/c++17/c++20/g' "$src/setup.py"
  if ! (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$VENV/bin/python" -m pip wheel --no-deps --no-build-isolation -w "$build/dist" . > "$build/build.log" 2>&1); then
    tail -n 40 "$build/build.log" >&2
    fail "mmcv $MMCV failed to build against torch $TORCH (full log: $build/build.log)"
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

log "installing mmvanilla (editable) with mmengine, mmdet, timm, pycocotools, pytest"
"${PIP[@]}" -e "$ROOT[test]"
verify
echo "$want" > "$STAMP"
log "done: activate with 'source .venv/bin/activate'"
