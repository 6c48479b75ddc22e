//! The OpenAPI 3 document at `/openapi.json`, describing the routes that exist.

use serde_json::{json, Value};

use crate::meter::Catalog;
use crate::store::rollup::MAX_LIMIT;

/// The document, listing `catalog`'s meters (built-in and custom).
pub fn document(catalog: &Catalog) -> Value {
    let meters: Vec<&str> = catalog.iter().map(|m| m.name.as_ref()).collect();
    let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let time_param = |name: &str, what: &str| {
        json!({"name": name, "in": "query", "required": true, "description": what,
               "schema": {"type": "string", "format": "date-time"}})
    };
    json!({
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
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "tenant", "in": "query", "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,128}$"}},
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
                    "400": error, "401": error, "503": error
                }
            }},
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "alive",
                "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}}}}},
            "/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI 3 document",
                "content": {"application/json": {"schema": {"type": "object"}}}}}}}
        }
    })
}
