//! The requests a load generator sends, encoded before the clock starts.
//!
//! Each request is a complete gRPC message frame (optionally gzip-compressed)
//! ready to be written to an HTTP/2 stream, together with what it holds
//! (spans, SERVER spans, spans per tenant), so every acknowledgement can be
//! turned into exact expected usage.

use std::io::Write as _;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use super::Config;

/// `span.kind` values (OTLP `Span.SpanKind`).
const KIND_INTERNAL: i32 = 1;
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;

/// One pre-encoded `ExportTraceServiceRequest` and what it holds.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The gRPC frame: 1 byte compressed flag, 4 bytes length, the message.
    pub frame: Bytes,
    /// The protobuf message's size before compression.
    pub message_len: usize,
    /// Spans in the request.
    pub spans: u64,
    /// Spans of kind SERVER (what the `requests` meter counts).
    pub server_spans: u64,
    /// Spans per tenant, indexed by tenant number (`tenant-<i>`).
    pub spans_by_tenant: Vec<u64>,
}

/// Distinct pre-encoded requests; the generator sends them round-robin.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The requests.
    pub requests: Vec<Encoded>,
    /// Whether the frames are gzip-compressed (`grpc-encoding: gzip`).
    pub gzip: bool,
}

impl Pool {
    /// Encodes `config.pool` distinct requests as `config` describes them.
    pub fn build(config: &Config) -> Self {
        let base_nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let requests = (0..config.pool.max(1)).map(|i| encode(&request(config, i, base_nanos), config.gzip)).collect();
        Self { requests, gzip: config.gzip }
    }

    /// The tenant names the requests use, in index order: `tenant-0`, `tenant-1`, ….
    pub fn tenant_name(index: usize) -> String {
        format!("tenant-{index}")
    }
}

/// Frames (and compresses) one request, keeping its counts.
fn encode(built: &(ExportTraceServiceRequest, Counts), gzip: bool) -> Encoded {
    let (request, counts) = built;
    let message = request.encode_to_vec();
    let payload = if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&message).expect("writing to a Vec cannot fail");
        encoder.finish().expect("writing to a Vec cannot fail")
    } else {
        message.clone()
    };
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(u8::from(gzip));
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    Encoded {
        frame: Bytes::from(frame),
        message_len: message.len(),
        spans: counts.spans,
        server_spans: counts.server_spans,
        spans_by_tenant: counts.by_tenant.clone(),
    }
}

struct Counts {
    spans: u64,
    server_spans: u64,
    by_tenant: Vec<u64>,
}

/// Request number `index` of the pool: `spans_per_request` spans spread over
/// every (tenant, service) pair in turn, continuing where the previous request
/// stopped, so a pool smaller than the number of pairs still reaches all of them.
fn request(config: &Config, index: usize, base_nanos: u64) -> (ExportTraceServiceRequest, Counts) {
    let (tenants, services) = (config.tenants.max(1), config.services_per_tenant.max(1));
    let pairs = tenants * services;
    let spr = config.spans_per_request;
    let mut per_pair = vec![0u64; pairs];
    for j in 0..spr {
        per_pair[(index as u64 * spr + j) as usize % pairs] += 1;
    }
    let mut rng = SplitMix64(0x7a11_9e4e ^ index as u64);
    let mut counts = Counts { spans: 0, server_spans: 0, by_tenant: vec![0; tenants] };
    let mut resource_spans = Vec::new();
    for (pair, &n) in per_pair.iter().enumerate().filter(|(_, &n)| n > 0) {
        let (tenant, service) = (pair / services, pair % services);
        let spans: Vec<Span> = (0..n).map(|_| self::span(config, &mut rng, base_nanos)).collect();
        counts.spans += n;
        counts.by_tenant[tenant] += n;
        counts.server_spans += spans.iter().filter(|s| s.kind == KIND_SERVER).count() as u64;
        resource_spans.push(ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", format!("svc-{service}")),
                    string("tenant.id", Pool::tenant_name(tenant)),
                    string("service.version", "1.14.2".into()),
                    string("deployment.environment.name", "production".into()),
                    string("host.name", format!("node-{}.eu-west-1.compute.internal", pair % 17)),
                    string("telemetry.sdk.language", "rust".into()),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "tally-loadgen".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    (ExportTraceServiceRequest { resource_spans }, counts)
}

const ROUTES: [(&str, &str); 8] = [
    ("GET", "/api/v1/orders/{id}"),
    ("GET", "/api/v1/products"),
    ("POST", "/api/v1/orders"),
    ("GET", "/api/v1/users/{id}/cart"),
    ("PUT", "/api/v1/users/{id}/cart/items/{item}"),
    ("DELETE", "/api/v1/sessions/{id}"),
    ("GET", "/healthz"),
    ("POST", "/api/v2/search"),
];
const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
];
const STATUS_CODES: [i64; 10] = [200, 200, 200, 200, 200, 201, 204, 404, 500, 503];

/// One span with `config.attributes_per_span` attributes of realistic shape.
fn span(config: &Config, rng: &mut SplitMix64, base_nanos: u64) -> Span {
    let (method, route) = ROUTES[rng.below(ROUTES.len() as u64) as usize];
    let id = rng.below(1_000_000);
    let path = route.replace("{id}", &id.to_string()).replace("{item}", &rng.below(500).to_string());
    let status_code = STATUS_CODES[rng.below(STATUS_CODES.len() as u64) as usize];
    let kind = if rng.below(100) < u64::from(config.server_percent) {
        KIND_SERVER
    } else if rng.below(2) == 0 {
        KIND_CLIENT
    } else {
        KIND_INTERNAL
    };
    let mut attributes = Vec::with_capacity(config.attributes_per_span);
    for a in 0..config.attributes_per_span {
        attributes.push(match a {
            0 => string("http.request.method", method.into()),
            1 => string("http.route", route.into()),
            2 => string("url.path", path.clone()),
            3 => int("http.response.status_code", status_code),
            4 => string("url.scheme", "https".into()),
            5 => string("server.address", "api.shop.example.com".into()),
            6 => int("server.port", 443),
            7 => string("user_agent.original", USER_AGENTS[rng.below(USER_AGENTS.len() as u64) as usize].into()),
            8 => string("client.address", format!("10.{}.{}.{}", rng.below(256), rng.below(256), rng.below(256))),
            9 => string("network.protocol.version", if rng.below(2) == 0 { "1.1" } else { "2" }.into()),
            10 => string("url.query", format!("page={}&limit=50", rng.below(20))),
            11 => int("http.response.body.size", rng.below(64_000) as i64),
            12 => string("app.request_id", format!("{:016x}{:016x}", rng.next(), rng.next())),
            n => string(&format!("app.attr_{n}"), format!("value-{}", rng.below(10_000))),
        });
    }
    let start = base_nanos + rng.below(60_000_000_000);
    let error = status_code >= 500;
    Span {
        trace_id: [rng.next().to_be_bytes(), rng.next().to_be_bytes()].concat(),
        span_id: rng.next().to_be_bytes().to_vec(),
        parent_span_id: if kind == KIND_SERVER { Vec::new() } else { rng.next().to_be_bytes().to_vec() },
        name: format!("{method} {route}"),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 200_000 + rng.below(500_000_000),
        attributes,
        status: Some(Status {
            code: if error { status::StatusCode::Error } else { status::StatusCode::Unset } as i32,
            message: if error { "upstream unavailable".into() } else { String::new() },
        }),
        // W3C trace flags: sampled.
        flags: 1,
        ..Default::default()
    }
}

fn string(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }),
        ..Default::default()
    }
}

/// A small deterministic generator: the same pool on every run and machine
/// (except for timestamps, which follow the clock).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read as _;

    use super::*;

    /// Undoes the framing (and compression) and decodes with prost.
    fn decode(e: &Encoded) -> ExportTraceServiceRequest {
        let len = u32::from_be_bytes(e.frame[1..5].try_into().unwrap()) as usize;
        assert_eq!(e.frame.len(), 5 + len, "one whole message per frame");
        let payload = &e.frame[5..];
        let message = if e.frame[0] == 1 {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(payload).read_to_end(&mut out).unwrap();
            out
        } else {
            assert_eq!(e.frame[0], 0);
            payload.to_vec()
        };
        assert_eq!(message.len(), e.message_len);
        ExportTraceServiceRequest::decode(message.as_slice()).unwrap()
    }

    fn resource_attr(rs: &ResourceSpans, key: &str) -> String {
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        match &attrs.iter().find(|kv| kv.key == key).unwrap().value.as_ref().unwrap().value {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn requests_decode_to_exactly_the_configured_counts_and_tenants() {
        for gzip in [false, true] {
            let config = Config {
                tenants: 3,
                services_per_tenant: 2,
                spans_per_request: 1000,
                attributes_per_span: 13,
                pool: 4,
                gzip,
                ..Config::default()
            };
            let pool = Pool::build(&config);
            assert_eq!(pool.requests.len(), 4);
            let mut all_tenants = BTreeMap::new();
            for e in &pool.requests {
                let request = decode(e);
                let mut spans = 0;
                let mut server = 0;
                let mut by_tenant = vec![0u64; 3];
                for rs in &request.resource_spans {
                    let tenant = resource_attr(rs, "tenant.id");
                    let service = resource_attr(rs, "service.name");
                    assert!(["svc-0", "svc-1"].contains(&service.as_str()), "{service}");
                    let index: usize = tenant.strip_prefix("tenant-").unwrap().parse().unwrap();
                    for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                        assert_eq!(span.attributes.len(), 13);
                        assert!(span.attributes.iter().any(|kv| kv.key == "http.route"));
                        assert!(span.attributes.iter().any(|kv| kv.key == "http.response.status_code"
                            && matches!(kv.value.as_ref().unwrap().value, Some(any_value::Value::IntValue(_)))));
                        server += u64::from(span.kind == KIND_SERVER);
                        spans += 1;
                        by_tenant[index] += 1;
                    }
                    *all_tenants.entry(tenant).or_insert(0u64) += 1;
                }
                assert_eq!(spans, 1000);
                assert_eq!((e.spans, e.server_spans, &e.spans_by_tenant), (spans, server, &by_tenant));
                // 1000 spans over 6 (tenant, service) pairs: 166 or 167 per pair, two pairs per tenant.
                assert!(by_tenant.iter().all(|&n| (332..=334).contains(&n)), "{by_tenant:?}");
                // About a quarter are SERVER spans.
                assert!((150..350).contains(&server), "{server}");
            }
            assert_eq!(all_tenants.keys().cloned().collect::<Vec<_>>(), ["tenant-0", "tenant-1", "tenant-2"]);
        }
    }

    #[test]
    fn small_requests_still_reach_every_tenant_and_extra_attributes_are_generated() {
        let config = Config {
            tenants: 10,
            services_per_tenant: 1,
            spans_per_request: 3,
            attributes_per_span: 20,
            pool: 4,
            ..Config::default()
        };
        let pool = Pool::build(&config);
        let mut by_tenant = vec![0u64; 10];
        for e in &pool.requests {
            let request = decode(e);
            assert_eq!(e.spans, 3);
            let span = &request.resource_spans[0].scope_spans[0].spans[0];
            assert_eq!(span.attributes.len(), 20);
            assert_eq!(span.attributes[19].key, "app.attr_19");
            for (t, n) in e.spans_by_tenant.iter().enumerate() {
                by_tenant[t] += n;
            }
        }
        assert_eq!(by_tenant, vec![2, 2, 1, 1, 1, 1, 1, 1, 1, 1], "12 spans dealt round-robin over 10 tenants");
    }
}
