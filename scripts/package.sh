#!/usr/bin/env bash
# npm run package: builds statecast_<version>_all.deb in the repository root.
# Layout: /usr/lib/statecast (compiled code + production dependencies), /usr/bin/statecastd and
# /usr/bin/statecast, the systemd units, sysusers and tmpfiles snippets, /etc/statecast/statecast.conf
# (a conffile: every key documented, all commented out) and the README as documentation.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(node -p 'require("./package.json").version')
out="statecast_${version}_all.deb"
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT

lib="$stage/usr/lib/statecast"
mkdir -p "$lib" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/usr/lib/sysusers.d" "$stage/usr/lib/tmpfiles.d" \
  "$stage/etc/statecast" "$stage/usr/share/doc/statecast" "$stage/DEBIAN"
# Compiled into the stage, not into dist/: the tests (which build this package) run daemons from
# dist/ meanwhile, and a rebuild there would rewrite their files under them.
npx tsc -p tsconfig.build.json --outDir "$stage/build"
mkdir -p "$lib/dist" && mv "$stage/build/daemon" "$stage/build/protocol" "$stage/build/client" "$stage/build/cli" "$lib/dist/"
rm -rf "$stage/build"
chmod +x "$lib/dist/daemon/main.js" "$lib/dist/cli/main.js"
cp package.json package-lock.json "$lib/"
# Production dependencies exactly as the lockfile pins them.
(cd "$lib" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
rm -f "$lib/package-lock.json"
ln -s ../lib/statecast/dist/daemon/main.js "$stage/usr/bin/statecastd"
ln -s ../lib/statecast/dist/cli/main.js "$stage/usr/bin/statecast"
cp systemd/statecast.service systemd/statecast.socket "$stage/lib/systemd/system/"
cp systemd/statecast.sysusers "$stage/usr/lib/sysusers.d/statecast.conf"
cp systemd/statecast.tmpfiles "$stage/usr/lib/tmpfiles.d/statecast.conf"
cp systemd/statecast.conf.example "$stage/etc/statecast/statecast.conf"
cp README.md "$stage/usr/share/doc/statecast/"

size=$(du -sk "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: statecast
Version: ${version}
Architecture: all
Maintainer: statecast developers <dev@statecast.invalid>
Depends: nodejs (>= 20)
Installed-Size: ${size}
Section: net
Priority: optional
Description: distributed session-state cache for server fleets
 statecastd keeps TLS session state on every host and finds it on the others
 through sealed multicast (or listed peers), so clients resume their sessions
 whichever host they reach. statecast is its admin command.
CONTROL
echo /etc/statecast/statecast.conf > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  command -v systemd-sysusers >/dev/null && systemd-sysusers statecast.conf || true
  command -v systemd-tmpfiles >/dev/null && systemd-tmpfiles --create statecast.conf || true
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
  if [ ! -e /etc/statecast/cluster.key ]; then
    echo "statecast: create the cluster key before starting the service:"
    echo "  statecast keygen > /etc/statecast/cluster.key && chmod 600 /etc/statecast/cluster.key"
    echo "  (the same file on every host), set 'interface' in /etc/statecast/statecast.conf, then"
    echo "  systemctl enable --now statecast.socket statecast.service"
  fi
fi
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop statecast.service statecast.socket >/dev/null 2>&1 || true
fi
PRERM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm"
dpkg-deb --build --root-owner-group "$stage" "$out" >/dev/null
echo "$out"
