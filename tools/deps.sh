#!/usr/bin/env bash
# The Debian packages the test suite needs, installed with apt-get when missing (as root, or
# through `sudo -n`). Used by `make test` and by .ci/run. When they cannot be installed it ends
# with one loud line naming what is missing and exits 1, so no test is skipped for want of them.
set -euo pipefail

# package -> the program that shows it is there. redis-server: the event stream tests start
# their own; chromium (+ chromium-driver): the dashboard's browser tests; util-linux: setpriv
# for the permission tests; faketime: libfaketime for the clock-step tests; git: everything.
declare -A program=(
  [git]=git [redis-server]=redis-server [chromium]=chromium [chromium-driver]=chromedriver
  [util-linux]=setpriv [faketime]=faketime
)
packages=(git redis-server chromium chromium-driver util-linux faketime)

missing=()
for pkg in "${packages[@]}"; do
  command -v "${program[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
((${#missing[@]})) || exit 0

loud() {
  echo "*** hystate: the tests need ${missing[*]} (Debian packages) and $1; install them:" \
    "apt-get install ${missing[*]} ***" >&2
  exit 1
}
command -v apt-get >/dev/null 2>&1 || loud "there is no apt-get here"
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || loud "this user is not root"
  as_root=(sudo -n)
fi
echo "hystate: installing ${missing[*]} (Debian packages the tests need)" >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
  || loud "apt-get update failed"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null \
  || loud "apt-get install failed"
