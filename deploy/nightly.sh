#!/usr/bin/env bash
# The nightly analysis RayJob's entrypoint (deploy/kuberay/scheduler.yaml): learn the baselines,
# then write yesterday's security and GDPR reports. Runs inside the Ray job, so the drivers join
# the job's cluster (--ray-address auto) instead of starting a local Ray. The store and the report
# directory come from the environment (SFA_OPS_STORE, SFA_OPS_OUT).
set -euo pipefail
to=$(date -u +%F)
from=$(date -u -d "$to - ${SFA_OPS_REPORT_DAYS:-1} days" +%F)
python -m drivers.baselines --ray-address auto --quiet
for kind in security gdpr; do
  python -m drivers.report "$kind" --from "$from" --to "$to" --ray-address auto --quiet
done
