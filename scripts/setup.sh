#!/bin/sh
# Install every Debian package cleanroom needs to build, test and run its
# example. Non-interactive and idempotent: packages already present are not
# touched, and nothing is downloaded when all are installed.
set -eu

PACKAGES="build-essential cmake pkg-config git sqlite3 zstd
libsqlite3-dev libgit2-dev libssl-dev libarchive-dev libjansson-dev
clang libclang-rt-14-dev
python3 python3-numpy python3-torch python3-sklearn python3-onnx"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -z "$missing" ]; then
	echo "setup: all packages present"
	exit 0
fi
echo "setup: installing$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
	SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q || echo "setup: apt-get update failed; trying the cached package lists"
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
