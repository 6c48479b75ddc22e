//! The OpenAPI 3 document at `/openapi.json`, describing the routes that exist.

use serde_json::{json, Value};

use metering::meter::Catalog;
use metering::store::rollup::MAX_LIMIT;

const TENANT_PATTERN: &str = "^[A-Za-z0-9._:@-]{1,128}$";

/// The document, listing `catalog`'s meters (built-in and custom).
pub fn document(catalog: &Catalog) -> Value {
    let meters: Vec<&str> = catalog.iter().map(|m| m.name.as_ref()).collect();
    let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let time_param = |name: &str, what: &str| {
        json!({"name": name, "in": "query", "required": true, "description": what,
               "schema": {"type": "string", "format": "date-time"}})
    };
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Tally billing API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Per-tenant usage metered by Tally. Times are RFC 3339 UTC; usage is stored in 1-minute buckets."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}
                },
                "UsagePoint": {
                    "type": "object", "required": ["tenant", "meter", "start", "end", "value", "unit"],
                    "properties": {
                        "tenant": {"type": "string"},
                        "meter": {"type": "string"},
                        "service": {"type": "string", "description": "present with group_by=service"},
                        "start": {"type": "string", "format": "date-time"},
                        "end": {"type": "string", "format": "date-time", "description": "exclusive"},
                        "value": {"type": "number", "description": "exact decimal, up to 9 fractional digits"},
                        "unit": {"type": "string", "enum": ["count", "bytes", "seconds"]}
                    }
                },
                "Money": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$",
                    "description": "an exact decimal amount as a string, with exactly the currency's ISO 4217 minor-unit digits (2 for EUR, 0 for JPY)"},
                "Decimal": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$", "description": "an exact decimal as a string"},
                "Date": {"type": "string", "format": "date", "description": "a UTC day, YYYY-MM-DD"},
                "Conversion": {
                    "type": "object", "required": ["from", "to", "rate", "date"],
                    "description": "1 `from` = `rate` `to`: the latest rate of the plans file dated on or before the month's last day",
                    "properties": {
                        "from": {"type": "string", "description": "ISO 4217 code of the plan's prices"},
                        "to": {"type": "string", "description": "ISO 4217 code of the invoice"},
                        "rate": {"$ref": "#/components/schemas/Decimal"},
                        "date": {"$ref": "#/components/schemas/Date"}
                    }
                },
                "PlanPeriod": {
                    "type": "object", "required": ["plan", "from", "until", "days", "month_days", "price_currency", "conversion"],
                    "properties": {
                        "plan": {"type": "string"},
                        "from": {"$ref": "#/components/schemas/Date"},
                        "until": {"allOf": [{"$ref": "#/components/schemas/Date"}], "description": "exclusive"},
                        "days": {"type": "integer", "description": "days of the month the plan is in effect"},
                        "month_days": {"type": "integer"},
                        "price_currency": {"type": "string"},
                        "conversion": {"allOf": [{"$ref": "#/components/schemas/Conversion"}], "nullable": true}
                    }
                },
                "TierLine": {
                    "type": "object", "required": ["from", "up_to", "quantity", "unit_price", "amount"],
                    "properties": {
                        "from": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "description": "billable quantity above which the tier starts"},
                        "up_to": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "nullable": true, "description": "inclusive; null for the last tier"},
                        "quantity": {"$ref": "#/components/schemas/Decimal"},
                        "unit_price": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "description": "per `per` units, in the plan's currency"},
                        "amount": {"allOf": [{"$ref": "#/components/schemas/Money"}], "description": "quantity × unit_price / per, converted, rounded half away from zero"}
                    }
                },
                "InvoiceLine": {
                    "type": "object", "required": ["plan", "plan_from", "kind", "amount"],
                    "description": "usage lines carry meter to tiers; base fee lines carry fee",
                    "properties": {
                        "plan": {"type": "string"},
                        "plan_from": {"allOf": [{"$ref": "#/components/schemas/Date"}], "description": "first day of the plan's period (the `from` of its entry in `plans`)"},
                        "kind": {"type": "string", "enum": ["usage", "base_fee"]},
                        "meter": {"type": "string", "enum": meters},
                        "unit": {"type": "string", "enum": ["count", "bytes", "seconds"]},
                        "period": {"type": "string", "enum": ["month", "day"], "description": "what the allowance and tiers count over"},
                        "usage": {"$ref": "#/components/schemas/Decimal"},
                        "allowance": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "description": "free units: monthly prorated by days in effect, or daily × days"},
                        "free": {"$ref": "#/components/schemas/Decimal"},
                        "billable": {"$ref": "#/components/schemas/Decimal"},
                        "pricing": {"type": "string", "enum": ["graduated", "volume"]},
                        "per": {"$ref": "#/components/schemas/Decimal"},
                        "tiers": {"type": "array", "items": {"$ref": "#/components/schemas/TierLine"}},
                        "fee": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "description": "monthly base fee before proration, plan currency"},
                        "amount": {"allOf": [{"$ref": "#/components/schemas/Money"}], "description": "sum of the tiers' amounts, or the prorated, converted fee"}
                    }
                },
                "Credit": {
                    "type": "object", "required": ["plan", "plan_from", "target", "below", "percent", "charges", "amount"],
                    "properties": {
                        "plan": {"type": "string"},
                        "plan_from": {"$ref": "#/components/schemas/Date"},
                        "target": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "nullable": true, "description": "the plan's availability target, percent"},
                        "below": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "description": "the band: availability was below this percent"},
                        "percent": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "description": "share of the plan's charges credited"},
                        "charges": {"$ref": "#/components/schemas/Money"},
                        "amount": {"$ref": "#/components/schemas/Money"}
                    }
                },
                "Invoices": {
                    "type": "object",
                    "required": ["month", "invoices"],
                    "properties": {
                        "month": {"type": "string", "description": "YYYY-MM"},
                        "invoices": {"type": "array", "items": {"$ref": "#/components/schemas/Invoice"}}
                    }
                },
                "Invoice": {
                    "type": "object",
                    "required": ["tenant", "month", "currency", "region", "tax_percent", "plans", "lines", "sla", "credits",
                                 "charges", "sla_credit", "subtotal", "tax", "total"],
                    "description": "charges = Σ lines + Σ adjustments; subtotal = charges − sla_credit; tax = subtotal × tax_percent / 100, rounded; total = subtotal + tax",
                    "properties": {
                        "tenant": {"type": "string"},
                        "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                        "currency": {"type": "string", "description": "ISO 4217"},
                        "region": {"type": "string"},
                        "tax_percent": {"$ref": "#/components/schemas/Decimal"},
                        "plans": {"type": "array", "items": {"$ref": "#/components/schemas/PlanPeriod"}},
                        "lines": {"type": "array", "items": {"$ref": "#/components/schemas/InvoiceLine"}},
                        "sla": {"type": "object", "required": ["requests", "errors", "availability_percent"], "properties": {
                            "requests": {"type": "integer"}, "errors": {"type": "integer"},
                            "availability_percent": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "nullable": true,
                                "description": "rounded to 4 decimals for reading; credits compare exactly; null without requests"}}},
                        "credits": {"type": "array", "items": {"$ref": "#/components/schemas/Credit"}},
                        "sealed_digest": {"type": "string", "description": "present when the month is sealed: its usage is the sealed snapshot with this digest"},
                        "adjustments": {"type": "array", "items": {"$ref": "#/components/schemas/Adjustment"},
                            "description": "present when the previous month is sealed and usage for it arrived after the seal; charged in `charges`"},
                        "charges": {"$ref": "#/components/schemas/Money"},
                        "sla_credit": {"$ref": "#/components/schemas/Money"},
                        "subtotal": {"$ref": "#/components/schemas/Money"},
                        "tax": {"$ref": "#/components/schemas/Money"},
                        "total": {"$ref": "#/components/schemas/Money"}
                    }
                },
                "UsagePage": {
                    "type": "object", "required": ["data", "next_cursor"],
                    "properties": {
                        "data": {"type": "array", "items": {"$ref": "#/components/schemas/UsagePoint"}},
                        "next_cursor": {"type": "string", "nullable": true}
                    }
                }
            }
        },
        "paths": {
            "/v1/usage": {"get": {
                "summary": "Usage per tenant and meter, rolled up to minute, hour, day or month buckets (UTC)",
                "description": "A billing key reads every tenant; a tenant key reads its own (the default `tenant`), and 403 for another.",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "tenant", "in": "query", "schema": {"type": "string", "pattern": TENANT_PATTERN}},
                    {"name": "meter", "in": "query", "schema": {"type": "string", "enum": meters}},
                    time_param("from", "start, inclusive, on a whole minute"),
                    time_param("to", "end, exclusive, on a whole minute"),
                    {"name": "granularity", "in": "query", "schema": {"type": "string", "enum": ["minute", "hour", "day", "month"], "default": "day"}},
                    {"name": "group_by", "in": "query", "schema": {"type": "string", "enum": ["service"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 1000}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page, with the same other parameters"}
                ],
                "responses": {
                    "200": {"description": "one page of usage", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UsagePage"}}}},
                    "400": error, "401": error, "403": error, "422": error, "429": error, "503": error, "504": error
                }
            }},
            "/v1/tenants/{tenant}/invoices/{month}": {"get": {
                "summary": "A tenant's month, priced: line items per meter (usage, allowance, tiers), SLA credits, subtotal, tax and total",
                "description": "Usage is priced by the plan in effect on the UTC day it was metered. A billing key reads every tenant; a tenant key only its own (403 `forbidden`). 404 `unknown_tenant`: not in the plans file; 404 `no_plan`: no plan in effect that month; 500 `pricing_error`: the plans file lacks a conversion rate.",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "tenant", "in": "path", "required": true, "schema": {"type": "string", "pattern": TENANT_PATTERN}},
                    {"name": "month", "in": "path", "required": true, "description": "UTC calendar month", "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$", "example": "2026-11"}}
                ],
                "responses": {
                    "200": {"description": "the invoice", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Invoice"}}}},
                    "400": error, "401": error, "403": error, "404": error, "500": error, "422": error, "429": error, "503": error, "504": error
                }
            }},
            "/v1/invoices/{month}": {"get": {
                "summary": "Every tenant's month, priced: the invoices of every tenant in the plans file with a plan in effect that month",
                "description": "Each invoice is the one `/v1/tenants/{tenant}/invoices/{month}` answers, priced from reads all of them share (one read of usage and availability for every tenant where settled rows serve it). A billing key reads every tenant; a tenant key its own (an empty list without a plan that month). Without a plans file the list is empty. 500 `pricing_error`: a tenant could not be priced (named; e.g. the plans file lacks a conversion rate).",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "month", "in": "path", "required": true, "description": "UTC calendar month", "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$", "example": "2026-11"}}
                ],
                "responses": {
                    "200": {"description": "the invoices, by tenant", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Invoices"}}}},
                    "400": error, "401": error, "500": error, "422": error, "429": error, "503": error, "504": error
                }
            }},
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "alive",
                "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}}}}},
            "/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI 3 document",
                "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics: answers by route and status, time to answer by route",
                "responses": {"200": {"description": "OpenMetrics text",
                "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}}}
        }
    });
    let reports = reports(&meters, &error);
    for (section, extra) in [("schemas", &reports["schemas"]), ("paths", &reports["paths"])] {
        let target = if section == "paths" { &mut doc["paths"] } else { &mut doc["components"]["schemas"] };
        if let (Some(target), Some(extra)) = (target.as_object_mut(), extra.as_object()) {
            target.extend(extra.clone());
        }
    }
    doc
}

/// The reports' and periods' schemas and paths, merged into [`document`]'s.
fn reports(meters: &[&str], error: &Value) -> Value {
    let report_params = json!([
        {"name": "month", "in": "path", "required": true, "description": "UTC calendar month", "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$", "example": "2026-11"}},
        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv", "html"], "default": "json"}},
        {"name": "tenant", "in": "query", "description": "one tenant (a tenant key's default and only choice)", "schema": {"type": "string", "pattern": TENANT_PATTERN}}
    ]);
    let schemas = json!({
                "UsageReport": {
                    "type": "object", "required": ["month", "tenants"],
                    "properties": {
                        "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                        "sealed_digest": {"type": "string", "description": "present when the month is sealed: the figures are its sealed snapshot's"},
                        "tenants": {"type": "array", "items": {"type": "object", "required": ["tenant", "meters"], "properties": {
                            "tenant": {"type": "string"},
                            "meters": {"type": "array", "items": {"type": "object", "required": ["meter", "unit", "total", "daily"], "properties": {
                                "meter": {"type": "string", "enum": meters},
                                "unit": {"type": "string", "enum": ["count", "bytes", "seconds"]},
                                "total": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "description": "the meter's roll-up over the month (for max and unique_count meters not the sum of the days)"},
                                "daily": {"type": "array", "description": "every UTC day of the month", "items": {"type": "object", "required": ["day", "value"], "properties": {
                                    "day": {"$ref": "#/components/schemas/Date"}, "value": {"$ref": "#/components/schemas/Decimal"}}}}
                            }}}
                        }}}
                    }
                },
                "SlaFigures": {
                    "type": "object", "required": ["requests", "errors", "availability_percent", "p50_ms", "p95_ms", "p99_ms"],
                    "properties": {
                        "requests": {"type": "integer"}, "errors": {"type": "integer"},
                        "availability_percent": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "nullable": true, "description": "(requests − errors) / requests, percent, 4 decimals; null without requests"},
                        "p50_ms": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "nullable": true, "description": "within 1/256 of the exact value, 3 decimals"},
                        "p95_ms": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "nullable": true},
                        "p99_ms": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "nullable": true}
                    }
                },
                "SlaReport": {
                    "type": "object", "required": ["month", "tenants"],
                    "properties": {
                        "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                        "sealed_digest": {"type": "string", "description": "present when the month is sealed: the figures are its sealed snapshot's"},
                        "tenants": {"type": "array", "items": {"allOf": [{"$ref": "#/components/schemas/SlaFigures"}, {"type": "object",
                            "required": ["tenant", "slo", "error_budget_used_percent", "p99_met", "credits", "services", "worst_hours", "daily"],
                            "properties": {
                                "tenant": {"type": "string"},
                                "slo": {"type": "object", "nullable": true, "description": "the objective of the plan in effect at the month's end; null without a plan",
                                    "properties": {"plan": {"type": "string"}, "availability_percent": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "nullable": true}, "p99_ms": {"type": "integer", "nullable": true}}},
                                "error_budget_used_percent": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "nullable": true,
                                    "description": "errors ÷ (requests × (100 − target) / 100) × 100, 2 decimals; over 100 means the target was missed"},
                                "p99_met": {"type": "boolean", "nullable": true},
                                "credits": {"type": "object", "nullable": true, "description": "the invoice's SLA credits; null without a plan",
                                    "properties": {"currency": {"type": "string"}, "credits": {"type": "array", "items": {"$ref": "#/components/schemas/Credit"}}, "total": {"$ref": "#/components/schemas/Money"}}},
                                "services": {"type": "array", "items": {"allOf": [{"$ref": "#/components/schemas/SlaFigures"}, {"type": "object", "properties": {"service": {"type": "string"}}}]}},
                                "worst_hours": {"type": "array", "description": "up to 5 service-hours with errors, lowest availability first", "items": {"type": "object", "properties": {
                                    "service": {"type": "string"}, "start": {"type": "string", "format": "date-time"},
                                    "requests": {"type": "integer"}, "errors": {"type": "integer"},
                                    "availability_percent": {"allOf": [{"$ref": "#/components/schemas/Decimal"}], "nullable": true},
                                    "exemplars": {"type": "array", "items": {"type": "object", "properties": {
                                        "trace_id": {"type": "string"}, "latency_ms": {"$ref": "#/components/schemas/Decimal"}, "error": {"type": "boolean"}}}}}}},
                                "daily": {"type": "array", "description": "every UTC day of the month, all services", "items": {"allOf": [{"$ref": "#/components/schemas/SlaFigures"}, {"type": "object", "properties": {"day": {"$ref": "#/components/schemas/Date"}}}]}}
                            }}]}}
                    }
                }
    });
    let paths = json!({
            "/v1/reports/usage/{month}": {"get": {
                "summary": "The month's usage report: per tenant and meter, every UTC day and the month's total",
                "description": "A billing key reads every tenant (or `tenant`); a tenant key reads its own, 403 `forbidden` for another. The agents' reconciliation meters (agent_*) are left out.",
                "security": [{"bearer": []}],
                "parameters": report_params.clone(),
                "responses": {
                    "200": {"description": "the report", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/UsageReport"}},
                        "text/csv": {"schema": {"type": "string"}, "example": "tenant,meter,unit,period,value\r\nacme,spans,count,2026-11-01,1000000\r\nacme,spans,count,2026-11,24155340\r\n"},
                        "text/html": {"schema": {"type": "string"}, "description": "a self-contained page with a bar chart per meter"}}},
                    "400": error, "401": error, "403": error, "422": error, "429": error, "503": error, "504": error
                }
            }},
            "/v1/reports/sla/{month}": {"get": {
                "summary": "The month's SLA report: per tenant and service requests, errors, availability, p50/p95/p99; the plan's SLO, error budget used, worst hours with exemplar traces, credits owed",
                "description": "Credits are the invoice's (needs --plans; without a plan `slo` and `credits` are null). A billing key reads every tenant (or `tenant`); a tenant key reads its own, 403 `forbidden` for another. 500 `pricing_error`: the plans file lacks a conversion rate.",
                "security": [{"bearer": []}],
                "parameters": report_params,
                "responses": {
                    "200": {"description": "the report", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/SlaReport"}},
                        "text/csv": {"schema": {"type": "string"}, "description": "one row per tenant (service empty: all services, with SLO, error budget and credit), then one per service"},
                        "text/html": {"schema": {"type": "string"}, "description": "a self-contained page with daily availability and latency charts"}}},
                    "400": error, "401": error, "403": error, "500": error, "422": error, "429": error, "503": error, "504": error
                }
            }}
    });
    let periods = periods(error);
    let mut out = json!({"schemas": schemas, "paths": paths});
    for section in ["schemas", "paths"] {
        if let (Some(target), Some(extra)) = (out[section].as_object_mut(), periods[section].as_object()) {
            target.extend(extra.clone());
        }
    }
    out
}

/// Sealed months' and reconciliation's schemas and paths.
fn periods(error: &Value) -> Value {
    let month = json!({"name": "month", "in": "path", "required": true, "description": "UTC calendar month",
        "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$", "example": "2026-11"}});
    let hex = json!({"type": "string", "pattern": "^[0-9a-f]{64}$"});
    json!({
        "schemas": {
            "Adjustment": {
                "type": "object", "required": ["month", "plan", "plan_from", "meter", "unit", "late_usage", "amount"],
                "description": "usage of a sealed month that arrived after its seal, priced by that month's plans: the month's line with it minus the sealed line",
                "properties": {
                    "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                    "plan": {"type": "string"},
                    "plan_from": {"$ref": "#/components/schemas/Date"},
                    "meter": {"type": "string"},
                    "unit": {"type": "string", "nullable": true},
                    "late_usage": {"$ref": "#/components/schemas/Decimal"},
                    "amount": {"$ref": "#/components/schemas/Money"}
                }
            },
            "Reconciliation": {
                "type": "object", "required": ["from", "to", "data"],
                "properties": {
                    "from": {"type": "string", "format": "date-time"},
                    "to": {"type": "string", "format": "date-time"},
                    "data": {"type": "array", "items": {"type": "object",
                        "required": ["agent", "tenant", "signal", "accepted", "acked", "stored", "dropped", "dropped_by_reason", "gap"],
                        "properties": {
                            "agent": {"type": "string", "description": "<key namespace>/agent:<agent id> (all boots)"},
                            "tenant": {"type": "string"},
                            "signal": {"type": "string", "enum": ["spans", "metric_points", "log_records"]},
                            "accepted": {"$ref": "#/components/schemas/Decimal"},
                            "acked": {"$ref": "#/components/schemas/Decimal"},
                            "stored": {"$ref": "#/components/schemas/Decimal"},
                            "dropped": {"$ref": "#/components/schemas/Decimal"},
                            "dropped_by_reason": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Decimal"}},
                            "gap": {"$ref": "#/components/schemas/Decimal"}
                        }}}
                }
            },
            "Period": {
                "type": "object", "required": ["month", "sealed"],
                "description": "a month and, when sealed, its seal: digest = SHA-256 of the canonical text of the month's collapsed usage and SLA rows and previous_digest (docs/seals.md)",
                "properties": {
                    "month": {"type": "string"},
                    "sealed": {"type": "boolean"},
                    "seal_id": {"type": "string"},
                    "rows": {"type": "integer", "description": "collapsed usage rows in the snapshot"},
                    "sla_rows": {"type": "integer", "description": "collapsed SLA rows in the snapshot"},
                    "recomputed_sla_rows": {"type": "integer", "description": "GET only"},
                    "verified_at": {"type": "string", "format": "date-time", "description": "GET only: when the verification served was made (on the seal's first read, or a billing key's POST .../verify); late_rows are as of then"},
                    "tenants": {"type": "array", "description": "GET, billing keys: each tenant's rows, SLA rows and late rows", "items": {"type": "object", "properties": {
                        "tenant": {"type": "string"}, "rows": {"type": "integer"}, "sla_rows": {"type": "integer"}, "late_rows": {"type": "integer"}}}},
                    "tenant": {"type": "string", "description": "GET, tenant keys: the key's tenant (totals over tenants are not shown)"},
                    "tenant_rows": {"type": "integer", "description": "GET, tenant keys: the tenant's usage rows in the snapshot"},
                    "tenant_sla_rows": {"type": "integer", "description": "GET, tenant keys: the tenant's SLA rows in the snapshot"},
                    "digest": hex.clone(),
                    "previous_digest": {"allOf": [hex.clone()], "description": "the previous sealed month's digest; 64 zeros for the first seal"},
                    "sealed_at": {"type": "string", "format": "date-time"},
                    "rollups": {"type": "boolean", "description": "written with daily usage and hourly SLA roll-ups, which the month's invoices and reports read (every seal since migration 5)"},
                    "rollups_verified": {"type": "boolean", "description": "GET only: the roll-ups equal those recomputed from the snapshot (true without roll-ups)"},
                    "recomputed_digest": {"allOf": [hex.clone()], "description": "GET only: recomputed from the snapshot now"},
                    "recomputed_rows": {"type": "integer", "description": "GET only"},
                    "expected_previous_digest": {"allOf": [hex], "description": "GET only: the digest the chain says previous_digest must be"},
                    "verified": {"type": "boolean", "description": "GET only: recomputed digest, rows, chain link and roll-ups all match"},
                    "late_rows": {"type": "integer", "description": "GET only: usage rows for the month stored after the seal (billed as adjustments on the next month's invoice)"}
                }
            }
        },
        "paths": {
            "/v1/reconciliation": {"get": {
                "summary": "Per agent, tenant and signal: items the agent accepted vs items stored from its batches and dropped",
                "description": "Billing keys only (403 `forbidden` for a tenant key). gap = accepted − stored − dropped: 0 once everything accepted was shipped; positive while data waits in a WAL or was lost. Agents report their books every interval, so reconcile windows ending well after the last report.",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "from", "in": "query", "required": true, "description": "start, inclusive, on a whole minute", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "to", "in": "query", "required": true, "description": "end, exclusive, on a whole minute", "schema": {"type": "string", "format": "date-time"}}
                ],
                "responses": {
                    "200": {"description": "the lines", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Reconciliation"}}}},
                    "400": error, "401": error, "403": error, "422": error, "429": error, "503": error, "504": error
                }
            }},
            "/v1/periods/{month}": {"get": {
                "summary": "Whether a month is sealed; if so its seal, verified against its snapshot and the chain",
                "description": "Any valid key (billing or tenant) may read it; a tenant key sees only its own rows. The verification is made on the seal's first read and remembered (verified_at); 503 `verification_pending` while it runs longer than a read may wait.",
                "security": [{"bearer": []}],
                "parameters": [month.clone()],
                "responses": {
                    "200": {"description": "the period", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Period"}}}},
                    "400": error, "401": error, "422": error, "429": error, "503": error, "504": error
                }
            }},
            "/v1/periods/{month}/verify": {"post": {
                "summary": "Verify a sealed month's seal again now, and serve that verification from then on",
                "description": "Billing keys only (403 `forbidden` for a tenant key); 404 `not_found` for a month not sealed.",
                "security": [{"bearer": []}],
                "parameters": [month.clone()],
                "responses": {
                    "200": {"description": "the period", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Period"}}}},
                    "400": error, "401": error, "403": error, "404": error, "503": error
                }
            }},
            "/v1/periods/{month}/seal": {"post": {
                "summary": "Seal a month: snapshot its usage and digest it into the hash chain",
                "description": "Billing keys only (403 `forbidden` for a tenant key). 409 `already_sealed`, `month_not_over` (the month has not ended, UTC), `out_of_order` (a later month is sealed: seals chain in month order).",
                "security": [{"bearer": []}],
                "parameters": [month],
                "responses": {
                    "201": {"description": "the new seal", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Period"}}}},
                    "400": error, "401": error, "403": error, "409": error, "503": error
                }
            }}
        }
    })
}
