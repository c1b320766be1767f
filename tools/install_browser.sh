#!/usr/bin/env bash
# Install Debian's chromium + chromium-driver for the browser test of the web page (idempotent).
# Without root and apt it says so and returns 0: the browser test then skips, except under CI, where it fails.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo -n"; else
    echo "[browser] not root and no sudo: install chromium and chromium-driver to run the web page test" >&2
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "[browser] no apt-get: install chromium and chromedriver to run the web page test" >&2
  exit 0
fi
echo "[browser] installing Debian's chromium and chromium-driver (about a minute)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
