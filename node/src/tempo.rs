//! Traces out (issue 6): flowmesh's own `GET /v1/trace/{seed}` (JSON, or the tree as text)
//! and a Grafana Tempo-compatible API: `GET /api/traces/{trace id}` (OTLP JSON, `batches`)
//! `GET /api/search` (recent traces by trace id) and `GET /api/echo` (the data source's
//! health check). Every call takes `?scope=` (else `query.default_scope`): assembly runs
//! its rounds over the mesh, and a trace missing a node's spans says so
//! (`missing_nodes`; the `x-flowmesh-missing-nodes` header on the Tempo API).

use std::{
    collections::{BTreeSet, HashMap},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan, Status, span::SpanKind, status},
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    mesh::Scope,
    server::ApiState,
    trace::{self, Fetched, Seed, Span, Trace},
};

/// Parameters of the trace calls.
#[derive(Debug, Default, Deserialize)]
pub struct TraceParams {
    pub scope: Option<String>,
    /// How far back the first round looks, e.g. `1h`, `7d` (default 24h). Tempo's `start`
    /// and `end` (Unix seconds) bound it instead when given.
    pub since: Option<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// `text` for `/v1/trace`: the tree as text.
    pub format: Option<String>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn bad(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The `?scope=` of a call, else the node's default; a bad one is answered 400.
fn scope_of(state: &ApiState, param: Option<&str>) -> Result<Scope, String> {
    match param {
        Some(s) => Scope::parse(s).map_err(|e| e.to_string()),
        None => Ok(state.default_scope.clone()),
    }
}

async fn assemble(state: &ApiState, seed: &Seed, params: &TraceParams) -> Result<Trace, Response> {
    let scope =
        scope_of(state, params.scope.as_deref()).map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
    let (from_us, to_us) = match (params.start, params.end) {
        (Some(s), Some(e)) if s <= e => (s * 1_000_000, e * 1_000_000 + 999_999),
        (Some(_), Some(_)) => {
            return Err(bad(StatusCode::BAD_REQUEST, "start is after end".into()));
        }
        _ => {
            let since = params.since.as_deref().unwrap_or("24h");
            let since = humantime_serde::re::humantime::parse_duration(since)
                .map_err(|e| bad(StatusCode::BAD_REQUEST, format!("since {since:?}: {e}")))?;
            (now_us() - since.as_micros() as i64, now_us() + 60_000_000)
        }
    };
    let mesh = std::sync::Arc::clone(&state.mesh);
    trace::assemble(seed, from_us, to_us, |sql| {
        let mesh = std::sync::Arc::clone(&mesh);
        let scope = scope.clone();
        async move {
            let answer = mesh
                .sql(&sql, scope, false)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Fetched {
                batches: answer.output.batches,
                missing: answer.missing,
            })
        }
    })
    .await
    .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// `GET /v1/trace/{seed}`: a trace id, `x-request-id:<value>` or `syscall:<node>:<id>`.
pub async fn native(
    State(state): State<ApiState>,
    Path(seed): Path<String>,
    Query(params): Query<TraceParams>,
) -> Response {
    let seed = match Seed::parse(&seed) {
        Ok(s) => s,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    match assemble(&state, &seed, &params).await {
        Ok(trace) if trace.spans.is_empty() => bad(
            StatusCode::NOT_FOUND,
            "no spans found for this trace".into(),
        ),
        Ok(trace) => match params.format.as_deref() {
            Some("text") => trace::render_tree(&trace).into_response(),
            _ => Json(trace).into_response(),
        },
        Err(response) => response,
    }
}

/// `GET /api/traces/{trace id}` (Tempo): the trace as OTLP JSON `{"batches": [...]}`.
pub async fn tempo_trace(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Query<TraceParams>,
) -> Response {
    let seed = match Seed::parse(&id) {
        Ok(seed @ Seed::TraceId(_)) => seed,
        _ => return bad(StatusCode::BAD_REQUEST, format!("{id:?} is not a trace id")),
    };
    let trace = match assemble(&state, &seed, &params).await {
        Ok(t) => t,
        Err(response) => return response,
    };
    if trace.spans.is_empty() {
        return bad(StatusCode::NOT_FOUND, format!("trace {id} not found"));
    }
    let missing = trace.missing_nodes.join(",");
    let body = json!({ "batches": otlp_batches(&trace) });
    ([("x-flowmesh-missing-nodes", missing)], Json(body)).into_response()
}

/// The trace's spans as OTLP resource spans, one resource per span (its service).
pub fn otlp_batches(trace: &Trace) -> Vec<ResourceSpans> {
    let trace_id = trace_id_bytes(&trace.trace_id);
    trace
        .spans
        .iter()
        .map(|s| {
            let parent = s
                .parent
                .map(|p| hex_bytes(&trace.spans[p].id))
                .unwrap_or_default();
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        string("service.name", s.service()),
                        string("host.name", &s.node),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![otlp_span(s, &trace_id, parent)],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }
        })
        .collect()
}

fn otlp_span(s: &Span, trace_id: &[u8], parent: Vec<u8>) -> OtlpSpan {
    let kind = match (
        s.signal_source.as_str(),
        s.observation_point.as_str(),
        s.span_kind.as_str(),
    ) {
        ("otel", _, "server") | (_, "server", _) => SpanKind::Server,
        ("otel", _, "client") | (_, "client", _) => SpanKind::Client,
        ("otel", _, "producer") => SpanKind::Producer,
        ("otel", _, "consumer") => SpanKind::Consumer,
        _ => SpanKind::Internal,
    };
    let name = s.name().to_owned();
    let mut attributes = vec![
        string("flowmesh.signal_source", &s.signal_source),
        string("flowmesh.observation_point", &s.observation_point),
        string("flowmesh.l7_protocol", &s.l7_protocol),
        string("flowmesh.request_type", &s.request_type),
        string("flowmesh.request_resource", &s.request_resource),
        string("flowmesh.response_status", &s.response_status),
    ];
    if let Some(code) = s.response_code {
        attributes.push(KeyValue {
            key: "flowmesh.response_code".into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(code)),
            }),
            ..KeyValue::default()
        });
    }
    let error = matches!(
        s.response_status.as_str(),
        "server_error" | "client_error" | "timeout"
    );
    OtlpSpan {
        trace_id: trace_id.to_vec(),
        span_id: hex_bytes(&s.id),
        parent_span_id: parent,
        name,
        kind: kind as i32,
        start_time_unix_nano: (s.start_us.max(0) as u64) * 1_000,
        end_time_unix_nano: (s.end_us.max(s.start_us).max(0) as u64) * 1_000,
        attributes,
        status: Some(Status {
            message: s.response_exception.clone(),
            code: if error {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Unset as i32
            },
        }),
        ..OtlpSpan::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// Hex digits to bytes (pairs; anything else is hashed into 8 bytes).
fn hex_bytes(hex: &str) -> Vec<u8> {
    let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    match bytes {
        Some(b) if !b.is_empty() && hex.len().is_multiple_of(2) => b,
        _ => trace::fnv1a(hex).to_be_bytes().to_vec(),
    }
}

/// A 16-byte trace id: the trace's own when it is 32 hex digits, else derived from it.
fn trace_id_bytes(id: &str) -> Vec<u8> {
    let b = hex_bytes(id);
    if b.len() == 16 {
        b
    } else {
        let mut out = vec![0; 8];
        out.extend(hex_bytes(&format!("{id}-")));
        out
    }
}

/// Parameters of `/api/search`.
#[derive(Debug, Default, Deserialize)]
pub struct SearchParams {
    pub scope: Option<String>,
    /// logfmt `service.name=cart name="GET /"`.
    pub tags: Option<String>,
    pub limit: Option<usize>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    #[serde(rename = "minDuration")]
    pub min_duration: Option<String>,
}

/// `GET /api/search` (Tempo): recent traces (with a trace id) in the time range.
pub async fn tempo_search(
    State(state): State<ApiState>,
    Query(params): Query<SearchParams>,
) -> Response {
    let scope = match scope_of(&state, params.scope.as_deref()) {
        Ok(s) => s,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let end_us = params.end.map_or_else(now_us, |e| e * 1_000_000 + 999_999);
    let start_us = params
        .start
        .map_or(end_us - 3_600_000_000, |s| s * 1_000_000);
    let mut filters = vec!["trace_id <> ''".to_owned()];
    for (key, value) in logfmt(params.tags.as_deref().unwrap_or("")) {
        let value = format!("'{}'", value.replace('\'', "''"));
        match key.as_str() {
            "service.name" => filters.push(format!(
                "(app_service = {value} OR auto_service_0 = {value} OR auto_service_1 = {value})"
            )),
            "name" => filters.push(format!("endpoint = {value}")),
            "http.status_code" => filters.push(format!("response_code = {value}")),
            other => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    format!("unsupported tag {other:?}"),
                );
            }
        }
    }
    let having = match params.min_duration.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => match humantime_serde::re::humantime::parse_duration(d) {
            Ok(d) => format!(
                " HAVING max(end_time) - min(start_time) >= INTERVAL '{} microseconds'",
                d.as_micros()
            ),
            Err(e) => return bad(StatusCode::BAD_REQUEST, format!("minDuration: {e}")),
        },
        None => String::new(),
    };
    let limit = params.limit.unwrap_or(20).min(1_000);
    let sql = format!(
        "SELECT trace_id, min(start_time) AS s, max(end_time) AS e \
         FROM flow_log.l7_flow_log WHERE time >= to_timestamp_micros({start_us}) \
         AND time <= to_timestamp_micros({end_us}) AND {} GROUP BY trace_id{having} \
         ORDER BY s DESC LIMIT {limit}",
        filters.join(" AND ")
    );
    let answer = match state.mesh.sql(&sql, scope.clone(), false).await {
        Ok(a) => a,
        Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut found = Vec::new();
    for batch in &answer.output.batches {
        let columns = (
            trace::text_column(batch, "trace_id"),
            trace::int_column(batch, "s"),
            trace::int_column(batch, "e"),
        );
        let (Ok(ids), Ok(starts), Ok(ends)) = columns else {
            return bad(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unexpected search result columns".into(),
            );
        };
        for ((id, start), end) in ids.into_iter().zip(starts).zip(ends) {
            found.push((id, start.unwrap_or(0), end.unwrap_or(0)));
        }
    }
    // each trace's root: its earliest span carrying the trace id
    let ids: BTreeSet<String> = found.iter().map(|(id, _, _)| id.clone()).collect();
    let mut roots: HashMap<String, Span> = HashMap::new();
    let mut missing = answer.missing;
    if !ids.is_empty() {
        let sql = format!(
            "SELECT {} FROM flow_log.l7_flow_log WHERE time >= to_timestamp_micros({start_us}) \
             AND time <= to_timestamp_micros({end_us}) AND trace_id IN ({})",
            trace::COLUMNS,
            trace::quoted(&ids)
        );
        let spans = match state.mesh.sql(&sql, scope, false).await {
            Ok(a) => {
                missing.extend(a.missing);
                trace::spans_from_batches(&a.output.batches)
            }
            Err(e) => Err(e.to_string()),
        };
        let spans = match spans {
            Ok(s) => s,
            Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
        for span in spans {
            match roots.get(&span.trace_id) {
                Some(r) if r.start_us <= span.start_us => {}
                _ => {
                    roots.insert(span.trace_id.clone(), span);
                }
            }
        }
        missing.sort();
        missing.dedup();
    }
    let traces: Vec<_> = found
        .iter()
        .map(|(id, start, end)| {
            let root = roots.get(id);
            json!({
                "traceID": id,
                "rootServiceName": root.map_or("", |r| r.service()),
                "rootTraceName": root.map_or("", |r| r.name()),
                "startTimeUnixNano": (start * 1000).to_string(),
                "durationMs": (end - start) / 1000,
            })
        })
        .collect();
    Json(json!({
        "traces": traces,
        "metrics": { "inspectedTraces": answer.output.num_rows() },
        "missingNodes": missing,
    }))
    .into_response()
}

/// `key=value` pairs of a logfmt string (values may be double-quoted).
fn logfmt(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_owned();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_owned(), &quoted[end + 1..]),
                None => (quoted.to_owned(), ""),
            }
        } else {
            match after.find(' ') {
                Some(end) => (after[..end].to_owned(), &after[end..]),
                None => (after.to_owned(), ""),
            }
        };
        out.push((key, value));
        rest = next.trim();
    }
    out
}

/// `GET /api/echo`: Grafana's Tempo data source checks it.
pub async fn echo() -> &'static str {
    "echo"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_pairs() {
        assert_eq!(
            logfmt(r#"service.name=cart name="GET /items" x=1"#),
            vec![
                ("service.name".into(), "cart".into()),
                ("name".into(), "GET /items".into()),
                ("x".into(), "1".into())
            ]
        );
        assert!(logfmt("").is_empty());
    }

    #[test]
    fn ids_become_bytes() {
        assert_eq!(hex_bytes("00ff"), vec![0, 255]);
        assert_eq!(hex_bytes("xyz").len(), 8);
        assert_eq!(trace_id_bytes("0102030405060708090a0b0c0d0e0f10").len(), 16);
        assert_eq!(
            trace_id_bytes("1.2.3").len(),
            16,
            "SkyWalking ids are derived"
        );
    }

    #[test]
    fn batches_keep_parents_and_kinds() {
        let mut trace = Trace {
            trace_id: "0102030405060708090a0b0c0d0e0f10".into(),
            spans: vec![
                Span {
                    signal_source: "ebpf".into(),
                    observation_point: "client".into(),
                    endpoint: "/a".into(),
                    start_us: 1,
                    end_us: 5,
                    ..Span::default()
                },
                Span {
                    signal_source: "ebpf".into(),
                    observation_point: "server".into(),
                    response_status: "server_error".into(),
                    start_us: 2,
                    end_us: 4,
                    ..Span::default()
                },
            ],
            ..Trace::default()
        };
        trace.spans[0].id = "00000000000000aa".into();
        trace.spans[1].id = "00000000000000bb".into();
        trace.spans[1].parent = Some(0);
        let batches = otlp_batches(&trace);
        let span = |i: usize| &batches[i].scope_spans[0].spans[0];
        assert_eq!(span(0).kind, SpanKind::Client as i32);
        assert_eq!(span(1).kind, SpanKind::Server as i32);
        assert_eq!(span(1).parent_span_id, span(0).span_id);
        assert_eq!(
            span(1).status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        assert_eq!(span(0).start_time_unix_nano, 1_000);
        // serialises as Tempo expects: hex ids
        let json = serde_json::to_value(json!({ "batches": batches })).unwrap();
        let id = &json["batches"][1]["scopeSpans"][0]["spans"][0]["parentSpanId"];
        assert_eq!(id, "00000000000000aa");
    }
}
