#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the console's browser tests, and print
# its path on stdout (the tests point Playwright at it; Playwright never downloads one).
#
#     scripts/chromium.sh        -> /usr/bin/chromium
#
# Installed with apt-get when missing and running as root (or with passwordless sudo),
# as scripts/services.sh does for Postgres and Redis. Otherwise it exits 1 and says on
# stderr what to install. GATEWAY_AUTO_INSTALL=0: never run apt-get.
# GATEWAY_CHROMIUM: use that binary instead.
set -euo pipefail

exec 3>&1 1>&2

CHROMIUM="${GATEWAY_CHROMIUM:-/usr/bin/chromium}"
AUTO_INSTALL="${GATEWAY_AUTO_INSTALL:-1}"

log() { printf '[chromium] %s\n' "$*" >&2; }

found() {
    printf '%s\n' "$CHROMIUM" >&3
    exit 0
}

[[ -x $CHROMIUM ]] && found

if [[ $AUTO_INSTALL != 1 ]]; then
    log "$CHROMIUM is missing and GATEWAY_AUTO_INSTALL=0: apt-get install chromium"
    exit 1
fi

if [[ $(id -u) -eq 0 ]]; then
    apt=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt=(sudo -n apt-get)
else
    log "$CHROMIUM is missing and this user cannot install packages: apt-get install chromium"
    exit 1
fi

log "installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${apt[@]}" update -qq || log "apt-get update failed; trying the install anyway"
if ! "${apt[@]}" install -y -qq --no-install-recommends chromium >/dev/null; then
    log "apt-get install chromium failed"
    exit 1
fi
[[ -x $CHROMIUM ]] && found
log "chromium was installed but $CHROMIUM is not there"
exit 1
