#!/usr/bin/env python3
"""Prints a /v1/usage response (JSON on stdin) as a table: one row per tenant, meter and bucket.

The agents' reconciliation meters (agent_*) are left out: they are bookkeeping, not usage."""
import json
import sys

page = json.load(sys.stdin)
rows = [r for r in page["data"] if not r["meter"].startswith("agent_")]
if not rows:
    print("  (no usage recorded yet)")
    sys.exit(0)
print(f"  {'tenant':<20} {'meter':<18} {'start':<22} {'value':>18} unit")
for r in rows:
    print(f"  {r['tenant']:<20} {r['meter']:<18} {r['start']:<22} {str(r['value']):>18} {r['unit']}")
