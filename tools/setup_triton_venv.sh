#!/usr/bin/env bash
# Create (or update) .venv-triton: the tritonserver bundled in nvidia-pytriton plus what the
# python models import inside it (requirements-triton.txt). Idempotent: a venv whose
# installed requirements match requirements-triton.txt is left alone in well under a second.
#
#   tools/setup_triton_venv.sh            # the Makefile's `triton-venv` target
#   TRITON_VENV=/path/venv TRITON_PYTHON=/usr/bin/python3.11 tools/setup_triton_venv.sh
#
# Python 3.11 on purpose: the pins were resolved for it, and the venv's Python must match a
# stub under pytriton/tritonserver/python_backend_stubs/ (3.8-3.13 exist).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRITON_VENV:-$ROOT/.venv-triton}"
REQ="$ROOT/requirements-triton.txt"
STAMP="$VENV/.requirements-triton.sha256"
WANT_PY="3.11"

die() { echo "setup_triton_venv: error: $*" >&2; exit 1; }

[[ -f "$REQ" ]] || die "$REQ not found (run from a project checkout)"
req_hash="$(sha256sum "$REQ" | cut -d' ' -f1)"

binary_ok() {
    compgen -G "$VENV/lib/python$WANT_PY/site-packages/pytriton/tritonserver/bin/tritonserver" >/dev/null
}

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$req_hash" ]] && binary_ok \
    && "$VENV/bin/python" -c "import numpy" 2>/dev/null; then
    echo "setup_triton_venv: $VENV is up to date"
    exit 0
fi

pick_python() {
    if [[ -n "${TRITON_PYTHON:-}" ]]; then echo "$TRITON_PYTHON"; return; fi
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}" candidate
    # Newest pyenv 3.11.x first, then whatever python3.11 is on PATH.
    for candidate in $(ls -d "$pyenv_root"/versions/"$WANT_PY".* 2>/dev/null | sort -V -r); do
        if [[ -x "$candidate/bin/python$WANT_PY" ]]; then echo "$candidate/bin/python$WANT_PY"; return; fi
    done
    command -v "python$WANT_PY" || true
}

start=$(date +%s)
# A venv from another Python (or a broken one) is rebuilt rather than patched.
if [[ -e "$VENV" ]]; then
    have="$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || true)"
    if [[ "$have" != "$WANT_PY" ]]; then
        echo "setup_triton_venv: $VENV is not a working Python $WANT_PY venv (found '${have:-none}'); recreating it"
        rm -rf "$VENV"
    fi
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    PY="$(pick_python)"
    [[ -n "$PY" ]] || die "no Python $WANT_PY found (pyenv install $WANT_PY, or set TRITON_PYTHON=/path/to/python$WANT_PY)"
    echo "setup_triton_venv: creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi

echo "setup_triton_venv: installing $(basename "$REQ") into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
"$VENV/bin/python" -m pip check >/dev/null || die "pip check failed in $VENV: $("$VENV/bin/python" -m pip check)"
"$VENV/bin/python" - <<'PY' || die "$VENV failed its self-check (see above)"
import numpy, onnxruntime, cv2, scipy, yaml  # noqa: F401  what the python models import
assert int(numpy.__version__.split(".")[0]) < 2, f"numpy {numpy.__version__}: the python backend stub needs numpy<2"
PY
binary_ok || die "nvidia-pytriton installed but its bundled tritonserver is missing"
echo "$req_hash" > "$STAMP"
echo "setup_triton_venv: $VENV ready in $(( $(date +%s) - start )) s"
