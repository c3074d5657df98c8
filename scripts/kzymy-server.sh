#!/bin/sh
# kzymy-server for the operator on the appliance, installed by scripts/provision.sh as
# /usr/local/bin/kzymy-server: runs the installed server as the kzymy user (from root)
# with the appliance's configuration, e.g. `kzymy-server stats`, `kzymy-server users list`.
set -eu
config=${KZYMY_CONFIG:-/etc/kzymy/config.json}
cd /
if [ "$(id -u)" -eq 0 ]; then
	exec runuser -u kzymy -g kzymy -G debian-tor -- \
		/usr/bin/env KZYMY_CONFIG="$config" NODE_ENV=production /usr/bin/node /opt/kzymy/dist/cli/server.js "$@"
fi
exec /usr/bin/env KZYMY_CONFIG="$config" NODE_ENV=production /usr/bin/node /opt/kzymy/dist/cli/server.js "$@"
