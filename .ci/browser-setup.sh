#!/usr/bin/env bash
# Install Debian's chromium (+ fonts) for the Playwright browser tests. Idempotent.
# Playwright for Python launches /usr/bin/chromium via executable_path; it never downloads
# browsers here (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1).
set -euo pipefail

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
packages=(chromium fonts-liberation fonts-dejavu-core)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "browser-setup: already installed: ${packages[*]}"
else
    echo "browser-setup: installing ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

/usr/bin/chromium --version 2>/dev/null || { echo "browser-setup: /usr/bin/chromium missing" >&2; exit 1; }
