# Shared by the scripts: idempotent installation of Debian packages.
# shellcheck shell=bash

# apt_install PKG...: installs the packages that are not installed yet (apt-get update only
# when something is missing). Services the packages ship (nginx, ...) are not started: the
# tests start their own instances on loopback ports.
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    local rc=$?
    [ $created_policy -eq 1 ] && rm -f "$policy"
    return $rc
}

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: $1 needs root (eBPF capture and package installation)" >&2
        exit 1
    fi
}
