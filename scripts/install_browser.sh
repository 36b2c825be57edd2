#!/usr/bin/env bash
# Install (if needed) Debian's headless browser for the dashboard's tests:
# chromium and chromium-driver (driven by Selenium). Exits 0 even when they
# cannot be installed: the browser tests then skip and say why.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
    >/dev/null 2>&1 || echo "install_browser: apt-get install chromium chromium-driver failed" >&2
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "install_browser: chromium or chromedriver is not installed (browser tests will skip)" >&2
fi
exit 0
