#!/usr/bin/env bash
# System packages the tests use (real peers, real tools). Installs only what is missing, so a
# machine that has them already does no network I/O. Needs root (CI and the dev machines are root).
set -euo pipefail
want=()
need() { command -v "$1" >/dev/null 2>&1 || want+=("$2"); }
need openssl openssl
need ip iproute2
need nft nftables
need systemd-analyze systemd
need python3 python3
need dpkg-deb dpkg
need apache2 apache2
need nginx nginx
need haproxy haproxy
need h2o h2o
# The memcache front end is compared with a real memcached, through pymemcache and libmemcached's tools.
need memcached memcached
need memcping libmemcached-tools
[ -e /usr/lib/python3/dist-packages/pymemcache ] || want+=(python3-pymemcache)
# PHP sessions through php-memcached (binary protocol by default) and php-memcache (both modes).
need php php-cli
php -m 2>/dev/null | grep -qx memcached || want+=(php-memcached)
php -m 2>/dev/null | grep -qx memcache || want+=(php-memcache)
if [ ${#want[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "missing: ${want[*]} (install them, or run as root)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  # The tests start their own instances; a package's service must not start (or stay) on install.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
