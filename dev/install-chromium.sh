#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the labeling app's browser tests
# (labeling-ui/tests/browser.rs drives /usr/bin/chromium through /usr/bin/chromedriver).
# Does nothing when both are already installed; needs root (or sudo) otherwise.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
sudo_if_needed=()
if [[ $(id -u) -ne 0 ]]; then
    sudo_if_needed=(sudo)
fi
echo "installing chromium and chromium-driver (Debian packages) for the browser tests" >&2
"${sudo_if_needed[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_if_needed[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null
