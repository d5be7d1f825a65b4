#!/usr/bin/env bash
# Sets up a fresh machine for n3rlhf: Debian packages, the project venv with pinned libtorch and
# peers. Idempotent: a second run only checks (scripts/build.sh builds).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libopenmpi-dev openmpi-bin
  libhdf5-dev
  libspdlog-dev libfmt-dev
  libboost-program-options-dev
  libgtest-dev libgmock-dev
  nlohmann-json3-dev
  libcpp-httplib-dev
  libpcre2-dev
  clang libclang-rt-14-dev
  iproute2
  python3-venv
  libsqlite3-dev libpqxx-dev postgresql
  wrk chromium chromium-driver
  libcurl4-openssl-dev libssl-dev curl
  prometheus
  slurm-wlm munge
)

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq > /dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

# The venv is rebuilt only when requirements.txt changed since it was last installed.
PYTHON=${N3RLHF_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (pinned in requirements.txt)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
  echo "$want" > "$stamp"
fi

echo "setup: ok (venv: .venv, torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
