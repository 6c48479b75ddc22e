#!/usr/bin/env python3
"""Prints `tally report sla --format json` (stdin) as tables: requests, errors, availability and
latency per tenant and service (and per tenant over all its services when it has several); each
tenant's objective (the plan's SLO), error budget and credit when a plans file was given; and the
worst hours with their exemplar traces."""
import json
import sys
from decimal import Decimal

report = json.load(sys.stdin)
tenants = report["tenants"]
if not tenants:
    print("  (no requests recorded yet)")
    sys.exit(0)


def pct(v):
    return f"{v} %" if v is not None else "-"


def ms(v):
    return v if v is not None else "-"


print(f"  {'tenant':<12} {'service':<12} {'requests':>9} {'errors':>7} {'availability':>13} "
      f"{'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}")


def row(tenant, service, f):
    print(f"  {tenant:<12} {service:<12} {f['requests']:>9} {f['errors']:>7} {pct(f['availability_percent']):>13} "
          f"{ms(f['p50_ms']):>9} {ms(f['p95_ms']):>9} {ms(f['p99_ms']):>9}")


for t in tenants:
    if len(t["services"]) > 1:
        row(t["tenant"], "(all)", t)
    for s in t["services"]:
        row(t["tenant"], s["service"], s)

priced = [t for t in tenants if t["slo"] is not None or t["credits"] is not None]
if priced:
    print()
    print(f"  {'tenant':<12} {'plan':<10} {'objective':<18} {'availability':<13} {'budget used':>11}  "
          f"{'p99':<7} credit")
    for t in priced:
        slo, credits = t["slo"] or {}, t["credits"]
        target, p99_target = slo.get("availability_percent"), slo.get("p99_ms")
        objective = ", ".join(x for x in (pct(target) if target else "", f"{p99_target} ms" if p99_target else "") if x)
        if target is None or t["requests"] == 0:
            met = "-"
        else:  # exactly, as pricing compares: (requests - errors) / requests against the target
            met = "met" if Decimal(t["requests"] - t["errors"]) * 100 >= Decimal(target) * t["requests"] else "missed"
        p99 = {True: "met", False: "missed", None: "-"}[t["p99_met"]]
        if credits is None:
            credit = "-"
        else:
            bands = "; ".join(f"{c['percent']} % of {c['plan']}'s {c['charges']}: below {c['below']} %"
                              for c in credits["credits"])
            credit = f"{credits['total']} {credits['currency']}" + (f" ({bands})" if bands else "")
        print(f"  {t['tenant']:<12} {slo.get('plan', '-'):<10} {objective or '-':<18} {met:<13} "
              f"{pct(t['error_budget_used_percent']):>11}  {p99:<7} {credit}")

worst = [(t["tenant"], h) for t in tenants for h in t["worst_hours"]]
if worst:
    print()
    print("  worst hours (only hours with errors, lowest availability first) and their exemplar traces:")
    for tenant, h in worst:
        print(f"  {tenant:<12} {h['service']:<12} {h['start']:<22} {h['requests']:>9} requests {h['errors']:>7} errors "
              f"{pct(h['availability_percent']):>11}")
        for e in h["exemplars"]:
            print(f"      trace {e['trace_id']} {e['latency_ms']:>10} ms {'failed' if e['error'] else 'ok'}")
