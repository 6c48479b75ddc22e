#!/usr/bin/env python3
"""Checks the report `scripts/run --once` printed (stdin) against what its sample workload sent and
what scripts/lib/quickstart-plans.yaml charges for it: the exact count of every OTLP meter per
tenant; the exact requests, errors and availability per tenant and service; the latency
percentiles of the requests whose latencies were set explicitly; each tenant's credit; the errors
and exemplars of the worst hours; and acme's invoice. Exits 1, saying what differs, otherwise."""
import re
import sys
from decimal import Decimal

# What scripts/run sends through the agent (see "sending a sample workload" there). send_otlp.py:
# spans, a quarter of them SERVER spans (requests), metric points and log records; globex's first
# request fails (--failed-requests 1). send_sla.py (acme's payments): 200 /pay and 100 /users/{id}
# SERVER spans, 5 CONSUMER spans (305 requests), 40 of them failed, plus 3 INTERNAL and 3 CLIENT
# spans that are not requests (311 spans).
WANT_USAGE = {
    ("acme", "spans"): 1200 + 311, ("acme", "requests"): 300 + 305,
    ("acme", "metric_points"): 120, ("acme", "log_records"): 60,
    ("globex", "spans"): 800, ("globex", "requests"): 200, ("globex", "metric_points"): 40,
    ("initech", "spans"): 300, ("initech", "requests"): 75, ("initech", "log_records"): 30,
}
COUNTED = {"spans", "requests", "metric_points", "log_records"}

# Requests, errors, availability (4 decimals) per tenant and service; "(all)" is a tenant's total,
# shown when it has more than one service.
WANT_SLA = {
    ("acme", "(all)"): (605, 40, "93.3884"),
    ("acme", "checkout"): (300, 0, "100"),
    ("acme", "payments"): (305, 40, "86.8852"),
    ("globex", "search"): (200, 1, "99.5"),
    ("initech", "billing"): (75, 0, "100"),
}
# acme/payments' latencies are set by send_sla.py: /pay 5, 10, ..., 1000 ms, /users/{id} 2, 4, ...,
# 200 ms, CONSUMER 7, 14, ..., 35 ms. The exact value at rank ceil(q * 305): p50 is the 153rd (240
# ms), p95 the 290th (925 ms), p99 the 302nd (985 ms); the sketch answers within 1/256 of it. (The
# other services' spans last what the SDK took to open and close them: not checked.)
WANT_PAYMENTS_MS = {"p50": Decimal(240), "p95": Decimal(925), "p99": Decimal(985)}

# Objectives and credits (quickstart-plans.yaml). Charges and credits, by hand:
#   acme, starter: base 30 + spans (1511 - 1000 free) x 0.50 / 100 = 2.555 -> 2.56 + requests
#     605 x 0.10 / 10 = 6.05 + metric points 120 x 0.20 / 100 = 0.24 + log records 60 x 1 / 100 =
#     0.60 = 39.45; 93.3884 % is below 99: 25 % -> 9.8625 -> 9.86. Budget: 40 / (605 x 0.1 %) =
#     6611.57 %. p99 about 971 ms (the 599th of 605: acme's 7th slowest, /pay's 970 ms) > 500 ms.
#   globex, growth: base 90 + spans 800 - 500 free = 300 in the volume tier up to 1000, x 0.40 / 100
#     = 1.20 + requests (200 - 100 free) x 0.05 / 10 = 0.50 = 91.70; 99.5 % is below 99.95 but not
#     below 99.5: 15 % -> 13.755 -> 13.76 (half away from zero). Budget: 1 / (200 x 0.05 %) = 1000 %.
#   initech, starter: 100 %, no credit; budget 0 %.
# Tenant: (plan, availability target met, budget used, credit). p99 is checked for acme only.
WANT_CREDITS = {
    "acme": ("starter", "missed", "6611.57", "9.86 USD"),
    "globex": ("growth", "missed", "1000", "13.76 USD"),
    "initech": ("starter", "met", "0", "0.00 USD"),
}
# The worst hours' errors add up to each tenant's errors (all of them fall in hours with errors;
# the workload takes seconds, so one hour, or two across an hour's end).
WANT_WORST_ERRORS = {"acme": 40, "globex": 1}
# In one hour, acme's exemplars are its 3 slowest requests (/pay 1000 ms, failed; 995, 990) and its
# 3 slowest failed ones (1000 ms, the same trace, shown once; 950, 900): every tenth /pay fails.
WANT_ACME_EXEMPLARS = [("1000", True), ("995", False), ("990", False), ("950", True), ("900", True)]

# acme's invoice (text), the figures above.
WANT_INVOICE = {
    "availability": "93.3884 % (605 requests, 40 errors)",
    "charges": "39.45 USD", "SLA credit": "9.86 USD", "subtotal": "29.59 USD", "tax 19 %": "5.62 USD",
    "total": "35.21 USD",
}
WANT_INVOICE_USAGE = {"spans": 1511, "requests": 605, "metric_points": 120, "log_records": 60}

problems = []


def check(what, have, want):
    if have != want:
        problems.append(f"{what} is {have}, want {want}")


usage, sla, credits, worst, invoice, invoice_usage = {}, {}, {}, [], {}, {}
section, invoice_meter = None, None
for line in sys.stdin:
    fields = line.split()
    text = line.strip()
    if fields[:5] == ["tenant", "meter", "start", "value", "unit"]:
        section = "usage"
    elif fields[:4] == ["tenant", "service", "requests", "errors"]:
        section = "sla"
    elif fields[:3] == ["tenant", "plan", "objective"]:
        section = "credits"
    elif text.startswith("worst hours"):
        section = "worst"
    elif re.match(r"Invoice \d{4}-\d{2} for tenant acme ", text):
        section = "invoice"
    elif not fields:
        if section != "invoice":
            section = None
    elif section == "usage" and len(fields) == 5:
        tenant, meter, _start, value, _unit = fields
        if meter in COUNTED:
            usage[(tenant, meter)] = usage.get((tenant, meter), 0) + int(value)
    elif section == "sla" and len(fields) >= 6:
        tenant, service, requests, errors, avail = fields[:5]
        p50, p95, p99 = fields[-3:]
        sla[(tenant, service)] = (int(requests), int(errors), avail, {"p50": p50, "p95": p95, "p99": p99})
    elif section == "credits" and len(fields) >= 7:
        # tenant plan objective... met budget % p99 credit...
        m = re.match(r"(\S+)\s+(\S+)\s+.*?\s(met|missed|-)\s+(\S+) %\s+(met|missed|-)\s+(.*)$", text)
        if m:
            tenant, plan, met, budget, p99, credit = m.groups()
            credits[tenant] = (plan, met, budget, " ".join(credit.split()[:2]), p99)
        else:
            problems.append(f"unreadable credit line: {text!r}")
    elif section == "worst":
        m = re.match(r"(\S+)\s+(\S+)\s+(\S+)\s+(\d+) requests\s+(\d+) errors", text)
        t = re.match(r"trace ([0-9a-f]{32})\s+(\S+) ms (failed|ok)$", text)
        if m:
            worst.append({"tenant": m[1], "service": m[2], "start": m[3], "errors": int(m[5]), "exemplars": []})
        elif t and worst:
            worst[-1]["exemplars"].append((t[2], t[3] == "failed"))
        else:
            problems.append(f"unreadable worst-hour line: {text!r}")
    elif section == "invoice":
        m = re.match(r"(availability) (.*)$", text) or \
            re.match(r"(charges|SLA credit|subtotal|tax 19 %|total)\s+(\S+ [A-Z]{3})$", text)
        u = re.match(r"(\S+) \[\w+\]: ", text)
        if m:
            invoice[m[1]] = m[2]
        elif u:
            invoice_meter = u[1]
        elif text.startswith("usage ") and invoice_meter:
            invoice_usage[invoice_meter] = int(text.split()[1].rstrip(","))
        if m and m[1] == "total":
            section = None

# Usage: every counted meter exact, nothing else counted.
for key, want in WANT_USAGE.items():
    check(f"{key[0]} {key[1]}", usage.get(key), want)
for key, have in usage.items():
    if key not in WANT_USAGE:
        problems.append(f"unexpected {key[0]} {key[1]} = {have}")

# SLA: requests, errors and availability per tenant and service; payments' percentiles.
for key, (requests, errors, avail) in WANT_SLA.items():
    have = sla.get(key)
    check(f"{key[0]}/{key[1]} requests, errors, availability", have and have[:3], (requests, errors, avail))
for key in sla:
    if key not in WANT_SLA:
        problems.append(f"unexpected SLA row {key[0]}/{key[1]}: {sla[key][:3]}")
if ("acme", "payments") in sla:
    for q, exact in WANT_PAYMENTS_MS.items():
        have = Decimal(sla[("acme", "payments")][3][q])
        if abs(have - exact) > exact / 256:
            problems.append(f"acme/payments {q} is {have} ms, want {exact} ms within 1/256")

# Objectives and credits.
for tenant, want in WANT_CREDITS.items():
    have = credits.get(tenant)
    check(f"{tenant}'s plan, availability target, budget used, credit", have and have[:4], want)
check("acme's p99 against its 500 ms target", credits.get("acme", [None] * 5)[4], "missed")
for tenant in credits:
    if tenant not in WANT_CREDITS:
        problems.append(f"unexpected credit line for {tenant}")

# Worst hours and their exemplars.
errors = {}
for h in worst:
    errors[h["tenant"]] = errors.get(h["tenant"], 0) + h["errors"]
    if not any(failed for _, failed in h["exemplars"]):
        problems.append(f"worst hour {h['tenant']}/{h['service']} {h['start']} lists no failed exemplar")
check("errors in the worst hours per tenant", errors, WANT_WORST_ERRORS)
acme_hours = [h for h in worst if h["tenant"] == "acme"]
if len(acme_hours) == 1:
    check("acme's exemplars (latency ms, failed)", acme_hours[0]["exemplars"], WANT_ACME_EXEMPLARS)
elif ("1000", True) not in [e for h in acme_hours for e in h["exemplars"]]:
    problems.append("acme's worst hours do not list its slowest failed request (1000 ms)")

# acme's invoice.
check("acme's invoice", invoice, WANT_INVOICE)
check("acme's invoiced usage", invoice_usage, WANT_INVOICE_USAGE)

if problems:
    for p in problems:
        print(f"quickstart: {p}", file=sys.stderr)
    sys.exit(1)
print(f"quickstart: all {len(WANT_USAGE)} usage counts, {len(WANT_SLA)} SLA rows, {len(WANT_CREDITS)} credits, "
      f"the worst hours and acme's invoice exact")
