#!/bin/sh
# Installs every build and test dependency with apt-get, only when something is missing.
# Idempotent and quiet when all is there.  Run as root (or with sudo available).
set -eu

PACKAGES="build-essential cmake pkg-config clang libclang-rt-14-dev
libcurl4-openssl-dev libevent-dev libarchive-dev libjson-c-dev libsystemd-dev
libsqlite3-dev libdeflate-dev libcmocka-dev libssl-dev libpcre2-dev time pigz
python3 socat systemd util-linux procps curl
buildah docker-registry apache2-utils busybox-static scdoc valgrind bash-completion
nginx tinyproxy-bin openssl"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "setup: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
