# Sourced by .ci/run and .ci/setup_comfyui.sh: sets PYTHON to a Python 3.10-3.12.
# MediaPipe 0.10.21, the last release with the bundled models the tests run offline, has no wheel for 3.13.
# A pyenv shim for a version that is not selected fails to run, so each candidate is run, not just found.
PYTHON=""
for candidate in python3.12 python3.11 python3.10 python3; do
  if "$candidate" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' >/dev/null 2>&1; then
    PYTHON="$candidate"
    break
  fi
done
if [ -z "$PYTHON" ]; then
  echo "!! CI needs Python 3.10, 3.11 or 3.12 (MediaPipe 0.10.21's bundled models); found none of them" >&2
  exit 1
fi
