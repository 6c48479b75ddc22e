#!/usr/bin/env python3
"""Prints `tally report sla --format json` (stdin) as a table: one row per tenant and service."""
import json
import sys

report = json.load(sys.stdin)
rows = [(t["tenant"], s["service"], s) for t in report["tenants"] for s in t["services"]]
if not rows:
    print("  (no requests recorded yet)")
    sys.exit(0)
print(f"  {'tenant':<12} {'service':<12} {'requests':>9} {'errors':>7} {'availability':>13} {'p50 ms':>9} {'p99 ms':>9}")
for tenant, service, f in rows:
    avail = f["availability_percent"] + " %" if f["availability_percent"] is not None else "-"
    print(f"  {tenant:<12} {service:<12} {f['requests']:>9} {f['errors']:>7} {avail:>13} {f['p50_ms'] or '-':>9} {f['p99_ms'] or '-':>9}")
