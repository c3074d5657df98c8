#!/usr/bin/env bash
# Installs what kzymy's tests need on a Debian machine, then runs them all.
# Run as root (or with sudo available). The closing line reads "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

# System binaries the suites drive for real: GnuPG and Sequoia (keys), swaks and
# Postfix's smtp-source (SMTP peers; libnet-ssleay-perl gives swaks STARTTLS), python3-dkim (DKIM), tor (onion service and a
# private Tor network), chromium (no-JavaScript pages), curl (the client download, as the pages
# show it), and the appliance's checkers.
# postgresql: the registry tests run a private server (unix socket only) for its engine.
# onionbalance: one onion for two nodes, on the private Tor network.
PACKAGES=(
  gnupg sq swaks postfix python3-dkim openssl tor chromium curl
  shellcheck nftables debootstrap systemd-container zstd vagrant
  strace rsync util-linux ca-certificates procps iproute2 libnet-ssleay-perl postgresql
  notmuch neomutt tmux onionbalance
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi
  echo "test.sh: installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  # Postfix must not ask questions nor start a system instance; systemd-container and
  # vagrant without recommends (they would pull in a different systemd and a hypervisor).
  echo "postfix postfix/main_mailer_type select No configuration" | "${SUDO[@]}" debconf-set-selections
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund
npm test
