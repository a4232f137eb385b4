#!/usr/bin/env bash
# install.sh: what tests/test_browser.py needs, installed only where missing (safe to re-run):
# Debian's chromium at /usr/bin/chromium (never a downloaded browser) and playwright-core from
# package-lock.json in tests/browser/node_modules. Needs root (or sudo) for apt-get and npm.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi

if [ ! -d "$here/node_modules/playwright-core" ]; then
    if ! command -v npm >/dev/null; then
        echo "install.sh: npm is missing (install Node.js 20 or later)" >&2
        exit 1
    fi
    (cd "$here" && npm ci --no-audit --no-fund)
fi

echo "browser tests ready: $(/usr/bin/chromium --version 2>/dev/null || echo chromium), playwright-core $(node -p "require('$here/node_modules/playwright-core/package.json').version")"
