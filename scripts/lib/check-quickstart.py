#!/usr/bin/env python3
"""Checks the usage table `scripts/run --once` printed (stdin) against what its sample workload
sent: the exact count of every OTLP meter per tenant. Exits 1, saying what differs, otherwise."""
import sys

# What scripts/run sends through the agent (see "sending a sample workload" there): spans, a
# quarter of them SERVER spans (requests), metric points and log records per tenant.
WANT = {
    ("acme", "spans"): 1200, ("acme", "requests"): 300, ("acme", "metric_points"): 120, ("acme", "log_records"): 60,
    ("globex", "spans"): 800, ("globex", "requests"): 200, ("globex", "metric_points"): 40,
    ("initech", "spans"): 300, ("initech", "requests"): 75, ("initech", "log_records"): 30,
}
COUNTED = {"spans", "requests", "metric_points", "log_records"}

got = {}
for line in sys.stdin:
    fields = line.split()
    if len(fields) == 5 and fields[4] in ("count", "bytes", "seconds") and fields[0] != "tenant":
        tenant, meter, _start, value, _unit = fields
        if meter in COUNTED:
            got[(tenant, meter)] = got.get((tenant, meter), 0) + int(value)
wrong = {k: (got.get(k), v) for k, v in WANT.items() if got.get(k) != v}
extra = {k: v for k, v in got.items() if k not in WANT}
if wrong or extra:
    for (tenant, meter), (have, want) in sorted(wrong.items()):
        print(f"quickstart: {tenant} {meter} is {have}, the workload sent {want}", file=sys.stderr)
    for (tenant, meter), have in sorted(extra.items()):
        print(f"quickstart: unexpected {tenant} {meter} = {have}", file=sys.stderr)
    sys.exit(1)
print(f"quickstart: all {len(WANT)} counts exact")
