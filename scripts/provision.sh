#!/usr/bin/env bash
# Provisions the kzymy appliance on Debian 13 (trixie), with Debian's own packages only:
# tor (system service, the project's torrc: v3 onion service to the loopback web port)
# and kzymy-server under systemd as the unprivileged user kzymy, data in /var/lib/kzymy.
#
# Usage (as root):  scripts/provision.sh [SOURCE_DIR]
#   SOURCE_DIR   the kzymy project (default: $KZYMY_SRC, else /vagrant)
#        (anyone):   scripts/provision.sh --print-torrc [SOURCE_DIR]
#   prints the torrc provisioning installs for the system tor, and changes nothing; it runs
#   kzymy-server torrc of this checkout (npm ci or npm run build done), else of /opt/kzymy
# Environment, used when /etc/kzymy/config.json does not exist yet:
#   KZYMY_DOMAIN     the mail domain (default kzymy.example.com: change it)
#   KZYMY_MX_HOST    the MX target name (default mx.DOMAIN), kept as dns.mxHost
#   KZYMY_PUBLIC_IP  the public addresses of port 25 (IPv4, IPv6; comma-separated), kept as
#                    dns.addresses; the DNS records printed at the end use them
# One node of several (docs/scaling.md), also used only for a new config.json:
#   KZYMY_FRONTEND_ONION  the Onionbalance frontend's onion address (tor.frontendOnion): the
#                    system tor becomes one of its backend instances (ob_config)
#   KZYMY_REGISTRY_URL    the shared PostgreSQL registry (registry.engine "postgres")
#   KZYMY_MAILDIR_ROOT    the Maildir root on the shared file system (default $DATA/maildirs)
#
# Idempotent: a second run changes nothing unless the project or the packaged files
# changed, and then restarts only what is affected.
set -euo pipefail

readonly PACKAGES=(nodejs npm tor nftables ca-certificates rsync iproute2)

MODE=provision
if [[ ${1:-} == --print-torrc ]]; then
	MODE=print-torrc
	shift
	set -- "${1:-$(dirname "${BASH_SOURCE[0]}")/..}"
fi
readonly MODE
readonly SRC=${1:-${KZYMY_SRC:-/vagrant}}
readonly APP=/opt/kzymy
readonly ETC=/etc/kzymy
readonly CONFIG=$ETC/config.json
readonly DATA=/var/lib/kzymy
readonly HS_DIR=/var/lib/tor/kzymy
readonly WEB_HOST=127.0.0.1
readonly WEB_PORT=8080
readonly STAMP=$APP/.kzymy-provisioned

log() { printf 'provision: %s\n' "$*"; }
die() {
	printf 'provision: FAILED: %s\n' "$*" >&2
	exit 1
}

# What changed in this run, to restart only the affected services.
declare -A CHANGED=()

# put MODE OWNER GROUP DEST: installs stdin as DEST unless DEST already has exactly
# that content, mode and owner. Succeeds (0) only when it wrote something.
put() {
	local mode=$1 owner=$2 group=$3 dest=$4 tmp
	tmp=$(mktemp)
	cat >"$tmp"
	if [[ -f $dest ]] && cmp -s "$tmp" "$dest" &&
		[[ $(stat -c '%a %U %G' "$dest") == "${mode#0} $owner $group" ]]; then
		rm -f "$tmp"
		return 1
	fi
	install -D -m "$mode" -o "$owner" -g "$group" "$tmp" "$dest"
	rm -f "$tmp"
	log "wrote $dest"
	return 0
}

# True when systemd runs this machine (false in a chroot, e.g. while building an image).
systemd_live() {
	[[ -d /run/systemd/system ]] && ! systemd-detect-virt --quiet --chroot
}

# kzymy-server as installed in $APP, run as the kzymy user.
installed_cli() {
	(cd / && runuser -u kzymy -- /usr/bin/node "$APP/dist/cli/server.js" "$@")
}

# kzymy-server for --print-torrc: that of the checkout holding this script, from its source
# (dev dependencies installed) or built, else the one installed in $APP.
checkout_cli() {
	local root
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	if [[ -f $root/src/cli/server.ts && -f $root/node_modules/tsx/package.json ]]; then
		(cd "$root" && node --import tsx src/cli/server.ts "$@")
	elif [[ -f $root/dist/cli/server.js ]]; then
		node "$root/dist/cli/server.js" "$@"
	elif [[ -f $APP/dist/cli/server.js ]]; then
		node "$APP/dist/cli/server.js" "$@"
	else
		die "--print-torrc runs kzymy-server: install the project's packages (npm ci) or build it (npm run build) in $root first."
	fi
}

# render_torrc TEMPLATE KZYMY-SERVER...: the torrc for the appliance's system tor, rendered
# by `kzymy-server torrc --appliance` (src/tor/torrc.ts) from TEMPLATE: the project's torrc
# filled in, then the lines that make the hostname file readable by the group debian-tor,
# which kzymy.service joins.
render_torrc() {
	local template=$1 frontend
	shift
	frontend=$(frontend_onion)
	"$@" torrc --appliance --template "$template" --hidden-service-dir "$HS_DIR" --web-host "$WEB_HOST" --web-port "$WEB_PORT" \
		${frontend:+--onionbalance-frontend "$frontend"}
}

# The Onionbalance frontend this node serves (tor.frontendOnion of $CONFIG, else
# $KZYMY_FRONTEND_ONION before there is one), or nothing.
frontend_onion() {
	if [[ -f $CONFIG ]]; then
		node -e 'const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log((c.tor && c.tor.frontendOnion) || "")' "$CONFIG"
	else
		printf '%s\n' "${KZYMY_FRONTEND_ONION:-}"
	fi
}

if [[ $MODE == print-torrc ]]; then
	[[ -f $SRC/torrc ]] || die "$SRC/torrc does not exist."
	template=$(cd "$SRC" && pwd)/torrc
	render_torrc "$template" checkout_cli || die "kzymy-server torrc could not render $template; see above."
	exit 0
fi

[[ $EUID -eq 0 ]] || die "run me as root (sudo $0)."
[[ -f $SRC/package.json && -f $SRC/package-lock.json && -f $SRC/torrc && -f $SRC/scripts/kzymy.service ]] ||
	die "$SRC does not hold the kzymy project (give its folder as the first argument)."
SRC_ABS=$(cd "$SRC" && pwd)
readonly SRC_ABS

# --- 1. Debian packages ------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) == installed ]] || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' ||
	die "kzymy needs Node.js >= 20.19; this Debian has $(node --version)."

# --- 2. The kzymy system user ------------------------------------------------------
getent group kzymy >/dev/null || groupadd --system kzymy
if ! getent passwd kzymy >/dev/null; then
	useradd --system --gid kzymy --home-dir "$DATA" --no-create-home \
		--shell /usr/sbin/nologin --comment 'kzymy mail exchanger' kzymy
	log "created system user kzymy"
fi

# --- 3. The application in /opt/kzymy (owned by root, read-only to kzymy) -----------
install -d -m 0755 -o root -g root "$APP"
# Excluded names are neither copied nor deleted on this side: the build lives there (also
# packages/kzymy-client/kzymy-client.mjs, which the build copies in).
synced=$(rsync -a --omit-dir-times --delete --chown=root:root --chmod=go-w --itemize-changes \
	--exclude=/.git/ --exclude=/.vagrant/ --exclude=/.cache/ --exclude=/node_modules/ \
	--exclude=/dist/ --exclude=/data/ --exclude=/maildirs/ --exclude=/test-output/ \
	--exclude='*.log' --exclude="/${STAMP##*/}" --exclude=/packages/kzymy-client/kzymy-client.mjs \
	"$SRC_ABS/" "$APP/")
if [[ -n $synced || ! -f $STAMP || ! -f $APP/dist/cli/server.js ]]; then
	log "building kzymy in $APP (npm ci, build, prune)"
	rm -f "$STAMP"
	# One && chain: set -e does not apply inside a subshell that is tested.
	(
		cd "$APP" &&
			export HOME=/root npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false &&
			unset NODE_ENV &&
			npm ci --include=dev --no-progress &&
			npm run build &&
			npm prune --omit=dev --no-progress
	) || die "building kzymy failed (npm ci / npm run build / npm prune in $APP); see above."
	# npm prune rewrites the lockfile; put the project's back so the next run sees no change.
	rsync -a --chown=root:root --chmod=go-w "$SRC_ABS/package-lock.json" "$APP/package-lock.json"
	[[ -f $APP/dist/cli/server.js ]] || die "the build did not produce $APP/dist/cli/server.js."
	node --version >"$STAMP"
	CHANGED[app]=1
else
	log "kzymy in $APP is up to date"
fi
if put 0755 root root /usr/local/bin/kzymy-server <"$SRC_ABS/scripts/kzymy-server.sh"; then :; fi

# --- 4. Configuration (an existing one is kept) --------------------------------------
install -d -m 0750 -o root -g kzymy "$ETC"
if [[ ! -f $CONFIG ]]; then
	domain=${KZYMY_DOMAIN:-kzymy.example.com}
	[[ $domain =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] || die "KZYMY_DOMAIN \"$domain\" is not a domain name."
	mx_host=${KZYMY_MX_HOST:-mx.$domain}
	[[ $mx_host =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] || die "KZYMY_MX_HOST \"$mx_host\" is not a host name."
	addresses=
	ips_given=${KZYMY_PUBLIC_IP:-}
	read -ra public_ips <<<"${ips_given//,/ }"
	for a in "${public_ips[@]}"; do
		[[ $a =~ ^[0-9A-Fa-f:.]+$ ]] || die "KZYMY_PUBLIC_IP \"$a\" is not an IP address."
		addresses+="${addresses:+, }\"$a\""
	done
	frontend=${KZYMY_FRONTEND_ONION:-}
	[[ -z $frontend || $frontend =~ ^[a-z2-7]{56}\.onion$ ]] || die "KZYMY_FRONTEND_ONION \"$frontend\" is not a v3 onion address."
	maildir_root=${KZYMY_MAILDIR_ROOT:-$DATA/maildirs}
	[[ $maildir_root == /* && $maildir_root != *[\"\\]* ]] || die "KZYMY_MAILDIR_ROOT \"$maildir_root\" is not an absolute path."
	registry_url=${KZYMY_REGISTRY_URL:-}
	[[ -z $registry_url || ($registry_url =~ ^postgres(ql)?:// && $registry_url != *[\"\\]*) ]] ||
		die "KZYMY_REGISTRY_URL is not a postgresql:// URL."
	registry=
	# (a line of its own in the file below: a newline, then the file's two-space indent)
	[[ -z $registry_url ]] || registry=$'\n'"  \"registry\": { \"engine\": \"postgres\", \"url\": \"$registry_url\" },"
	tor_frontend=
	[[ -z $frontend ]] || tor_frontend=", \"frontendOnion\": \"$frontend\""
	put 0640 root kzymy "$CONFIG" <<-EOF
		{
		  "domain": "$domain",
		  "dataDir": "$DATA",
		  "maildirRoot": "$maildir_root",$registry
		  "smtp": { "host": "0.0.0.0", "port": 25 },
		  "web": { "host": "$WEB_HOST", "port": $WEB_PORT },
		  "tor": { "manage": false, "hostnameFile": "$HS_DIR/hostname"$tor_frontend },
		  "dns": { "mxHost": "$mx_host", "addresses": [$addresses] },
		  "log": { "level": "info" }
		}
	EOF
	CHANGED[config]=1
fi
domain=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).domain)' "$CONFIG") ||
	die "$CONFIG is not valid JSON; fix it or move it away to get a fresh one."
if [[ -n ${KZYMY_DOMAIN:-} && ${KZYMY_DOMAIN,,} != "${domain,,}" ]]; then
	log "note: KZYMY_DOMAIN=$KZYMY_DOMAIN ignored, $CONFIG (kept) says \"$domain\""
fi

# --- 5. tor: the project's torrc, rendered by kzymy-server (built above), for tor@default --
# One node of several: tor reads the Onionbalance frontend's address from ob_config (it must
# be there before tor --verify-config of a torrc in instance mode).
frontend=$(frontend_onion)
if [[ -n $frontend ]]; then
	[[ -d $HS_DIR ]] || install -d -m 0700 -o debian-tor -g debian-tor "$HS_DIR"
	if printf 'MasterOnionAddress %s\n' "$frontend" | put 0600 debian-tor debian-tor "$HS_DIR/ob_config"; then CHANGED[tor]=1; fi
elif [[ -f $HS_DIR/ob_config ]]; then
	rm -f "$HS_DIR/ob_config"
	log "removed $HS_DIR/ob_config (no tor.frontendOnion in $CONFIG)"
	CHANGED[tor]=1
fi
tmp_torrc=$(mktemp)
render_torrc "$APP/torrc" installed_cli >"$tmp_torrc" ||
	{
		rm -f "$tmp_torrc"
		die "kzymy-server torrc could not render $APP/torrc; see above."
	}
tor --defaults-torrc /usr/share/tor/tor-service-defaults-torrc -f "$tmp_torrc" --verify-config >/dev/null ||
	{
		rm -f "$tmp_torrc"
		die "tor refuses the rendered torrc (tor --verify-config)."
	}
if put 0644 root root /etc/tor/torrc <"$tmp_torrc"; then CHANGED[tor]=1; fi
rm -f "$tmp_torrc"

# --- 6. Data folders and the STARTTLS certificate -----------------------------------
install -d -m 0700 -o kzymy -g kzymy "$DATA"
installed_cli init --config "$CONFIG" ||
	die "kzymy-server init failed; see above."

# --- 7. systemd units and the firewall ----------------------------------------------
if put 0644 root root /etc/systemd/system/kzymy.service <"$SRC_ABS/scripts/kzymy.service"; then CHANGED[unit]=1; fi
nft -c -f "$SRC_ABS/scripts/nftables.conf" || die "nft refuses scripts/nftables.conf."
if put 0755 root root /etc/nftables.conf <"$SRC_ABS/scripts/nftables.conf"; then CHANGED[nftables]=1; fi
systemctl --quiet enable nftables.service tor.service kzymy.service

if systemd_live; then
	systemctl daemon-reload
	restart_or_start() { # UNIT CHANGED-KEYS...: restarts UNIT if one of the keys changed, else starts it
		local unit=$1 key
		shift
		for key in "$@"; do
			if [[ -n ${CHANGED[$key]:-} ]]; then
				log "restarting $unit"
				systemctl restart "$unit"
				return
			fi
		done
		systemctl start "$unit"
	}
	restart_or_start nftables.service nftables
	restart_or_start tor.service
	restart_or_start tor@default.service tor
	restart_or_start kzymy.service app config unit
	for _ in $(seq 1 120); do
		[[ -s $HS_DIR/hostname ]] && break
		sleep 0.5
	done
	[[ -s $HS_DIR/hostname ]] || die "tor did not write $HS_DIR/hostname within 60 s (journalctl -u tor@default)."
	for _ in $(seq 1 60); do
		[[ -n $(ss -Htln 'sport = :25') ]] && break
		sleep 0.5
	done
	if ! systemctl is-active --quiet kzymy.service || [[ -z $(ss -Htln 'sport = :25') ]]; then
		die "kzymy.service is not listening on port 25 (journalctl -u kzymy)."
	fi
	/usr/local/bin/kzymy-server check >/dev/null || die "kzymy-server check reports a problem; run it to see which."
else
	log "systemd is not running here (a chroot?): units enabled, they start on the next boot"
fi

# --- 8. What the operator must do next ----------------------------------------------
if [[ -r $HS_DIR/hostname ]]; then
	onion="http://$(<"$HS_DIR/hostname")/"
else
	onion="not known yet: tor writes $HS_DIR/hostname when it first runs"
fi
# The records come from the configuration (dns.mxHost, dns.addresses): the same as
# `kzymy-server dns` prints at any time.
records=$(installed_cli dns --config "$CONFIG") ||
	die "kzymy-server dns failed; run it to see why."
cat <<EOF

kzymy appliance provisioned.
  onion address (signup and pickup, Tor Browser): $onion
  mail domain:                                    $domain
  configuration: $CONFIG   data: $DATA   logs: journalctl -u kzymy

DNS records to create (kzymy-server dns prints them again at any time):
$records
EOF
if [[ $domain == kzymy.example.com ]]; then
	printf '\nThe domain is still the placeholder: set "domain" in %s and run: systemctl restart kzymy\n' "$CONFIG"
fi
