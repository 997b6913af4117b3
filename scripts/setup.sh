#!/usr/bin/env bash
# One-command, idempotent setup of the project's virtual environment (.venv).
#   - checks Python 3.11 and the system libraries that wheels need (installs them with apt when
#     root, otherwise stops and names them);
#   - installs the pinned dependencies (requirements.txt + constraints.txt) and the six workspace
#     packages in editable mode;
#   - records a stamp of its inputs, so a second run with nothing changed takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP="$VENV/.fowm-setup-stamp"

# Debian packages: libusb for pyrealsense2; EGL + Mesa's software rasteriser for headless MuJoCo.
SYSTEM_LIBS=("libusb-1.0.so.0:libusb-1.0-0" "libEGL.so.1:libegl1" "libGL.so.1:libgl1" "swrast_dri.so:libgl1-mesa-dri")

missing_debs() {
  local entry lib deb
  for entry in "${SYSTEM_LIBS[@]}"; do
    lib=${entry%%:*}; deb=${entry##*:}
    if ! ldconfig -p | grep -q "$lib" && ! find /usr/lib -name "$lib" -print -quit 2>/dev/null | grep -q .; then
      echo "$deb"
    fi
  done
}

missing=$(missing_debs | sort -u | tr '\n' ' ')
if [ -n "${missing// /}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system libraries: $missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "setup: missing system libraries (Debian packages): $missing" >&2
    echo "setup: install them as root, e.g.: sudo apt-get install $missing" >&2
    exit 1
  fi
fi

if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; fowm-ros needs Python 3.11 (the ROS 2 Jazzy wheels are built for it)." >&2
  exit 1
fi

inputs_hash=$(cat requirements.txt constraints.txt scripts/setup.sh ros2_ws/src/*/setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$inputs_hash" ] && [ -x "$VENV/bin/python" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
# torch first, on its own: with 2.13.0 (CPU build) in place nothing else can pull a CUDA build.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
editables=()
for pkg in ros2_ws/src/*/; do editables+=(-e "$pkg"); done
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation "${editables[@]}"
"$VENV/bin/python" - <<'PY'
import importlib
for mod in ("torch", "rclpy", "mujoco", "rosbags", "cv2", "safetensors", "fowm_core", "fowm_sim"):
    importlib.import_module(mod)
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"setup: ok (torch {torch.__version__}, cuda available: {torch.cuda.is_available()})")
PY
echo "$inputs_hash" > "$STAMP"
