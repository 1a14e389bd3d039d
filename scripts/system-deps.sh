#!/usr/bin/env bash
# Debian packages the test suite uses beyond Python: chromium + chromedriver (the workbench's browser test)
# and PostgreSQL (the audit store's server test). Installed only when missing, and only where apt-get
# can run as root; elsewhere it says what to install and those tests skip with that message.
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} (Debian packages; once per machine)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1; } \
        || echo "could not install ${need[*]}: the tests that need them will skip" >&2
else
    echo "not installed: ${need[*]} (sudo apt-get install ${need[*]}); the tests that need them will skip" >&2
fi
exit 0
