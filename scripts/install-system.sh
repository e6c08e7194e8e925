#!/usr/bin/env bash
# Installs the Debian packages sfa-ops runs and tests against. Idempotent: does nothing when present.
set -euo pipefail
. "$(dirname "$0")/apt.sh"
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# Prometheus Alertmanager: the tests forward alerts to a real one (API v2, silences, webhooks).
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
  || need+=(prometheus-alertmanager)
# Prometheus: a test scrapes operate's /metrics with the real server and queries it back.
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# Headless Chromium opens the analysis reports' HTML in the tests (no console errors allowed).
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
apt_install install-system "${need[@]}"
# The packages start system services; sfa-ops starts its own throwaway instances instead.
for svc in mosquitto redis-server postgresql prometheus-alertmanager prometheus prometheus-node-exporter; do
  (service "$svc" stop >/dev/null 2>&1 || true)
done
