#!/usr/bin/env bash
# Installs the Debian packages sfa-ops runs and tests against. Idempotent: does nothing when present.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# Prometheus Alertmanager: the tests forward alerts to a real one (API v2, silences, webhooks).
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
  || need+=(prometheus-alertmanager)
# Headless Chromium opens the analysis reports' HTML in the tests (no console errors allowed).
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system: need ${need[*]}; run as root or install them with apt-get" >&2
  exit 1
fi
echo "install-system: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages start system services; sfa-ops starts its own throwaway instances instead.
for svc in mosquitto redis-server postgresql prometheus-alertmanager; do
  (service "$svc" stop >/dev/null 2>&1 || true)
done
