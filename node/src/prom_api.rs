//! The Prometheus HTTP API under `/prom/api/v1/` (DESIGN.md §6, §8), answered by the
//! `flowmesh-promql` engine over the node's metrics ([`crate::prom_source`]): remote_write
//! samples, the RED tables as `flowmesh_…` counters and gauges, and Influx points as
//! `<measurement>_<field>` (docs/decisions/0004-red-metrics-in-promql.md).
//!
//! Grafana's Prometheus data source and `promtool query` point at `http://<node>:20416/prom`.
//! Routes (GET, and POST with a form-encoded body, as Prometheus takes them):
//!
//! - `query` (`query`, `time`, `timeout`) and `query_range` (`query`, `start`, `end`,
//!   `step`, `timeout`);
//! - `series` (`match[]` required), `labels` and `label/{name}/values` (`match[]`
//!   optional), each with `start`/`end` and an optional `limit`;
//! - `metadata` (`metric`, `limit`): the type and help of the RED metrics (none is
//!   stored for remote_write or Influx data), and `status/buildinfo`.
//!
//! Answers keep Prometheus' JSON exactly: `{"status":"success","data":…}` with sample
//! values as strings formatted like Go's `strconv.FormatFloat` (`'e'` format below 1e-6
//! and from 1e21, `+Inf`, `-Inf`, `NaN`) and timestamps as seconds with millisecond
//! decimals (a scalar result: `'f'` format and a plain float time, as Prometheus
//! marshals it); errors are `{"status":"error","errorType":…,"error":…}` with Prometheus'
//! statuses (`bad_data` 400, `execution` 422, `timeout`/`unavailable` 503, `internal`
//! 500) and, where Prometheus has one, its message. Times are unix seconds (float) or
//! RFC 3339; durations are float seconds or Prometheus durations (`1m30s`).
//!
//! The engine runs on the query runtime's blocking pool, at most [`MAX_CONCURRENT`]
//! queries at once, each within its timeout (the `timeout` parameter, at most
//! [`DEFAULT_TIMEOUT`]); its selectors reach storage through the [`PromSource`].

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use flowmesh_promql::{
    Engine, EngineOptions, Error as PromError, ErrorCode, LabelMatcher, Labels, METRIC_NAME,
    Matrix, Value,
};
use flowmesh_query_planner::QueryEngine;
use serde_json::json;

use crate::{
    prom_source::{DeadlineSource, PromSource, red},
    server::ApiState,
};

/// A query's time budget when the request sets none (Prometheus' `--query.timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Queries evaluated at once (Prometheus' `--query.max-concurrency`); more wait.
pub const MAX_CONCURRENT: usize = 20;
/// Points per series a range query may return (Prometheus' API limit).
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Prometheus' `MinTime` and `MaxTime` (ms): the defaults of `start` and `end`.
const MIN_TIME_MS: i64 = (i64::MIN / 1000 + 62_135_596_801) * 1000;
const MAX_TIME_MS: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000 + 999;
/// How Go formats those two (clients send them back).
const MIN_TIME_TEXT: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_TEXT: &str = "292277025-08-18T07:12:54.999999999Z";

/// The API's shared part: the series source, engine options and the concurrency gate.
pub struct PromApi {
    source: PromSource,
    runtime: tokio::runtime::Handle,
    options: EngineOptions,
    permits: tokio::sync::Semaphore,
}

impl PromApi {
    /// Serves the node's metrics through `engine`, evaluating on `runtime` (the node's
    /// query runtime).
    pub fn new(engine: Arc<QueryEngine>, runtime: tokio::runtime::Handle) -> Self {
        let options = EngineOptions {
            timeout: Some(DEFAULT_TIMEOUT),
            // the API rejects more before evaluating, with Prometheus' message
            max_points_per_series: MAX_POINTS_PER_SERIES as usize + 1,
            ..EngineOptions::default()
        };
        Self {
            source: PromSource::new(engine, runtime.clone()).with_max_samples(options.max_samples),
            runtime,
            options,
            permits: tokio::sync::Semaphore::new(MAX_CONCURRENT),
        }
    }

    /// Runs `evaluate` with an engine on a blocking thread, within `timeout`.
    async fn evaluate<T: Send + 'static>(
        &self,
        source: &PromSource,
        timeout: Option<Duration>,
        evaluate: impl FnOnce(&Engine<DeadlineSource>) -> Result<T, PromError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let timeout = timeout.map_or(DEFAULT_TIMEOUT, |t| t.min(DEFAULT_TIMEOUT));
        let started = Instant::now();
        let deadline = started + timeout;
        let _permit = tokio::time::timeout(timeout, self.permits.acquire())
            .await
            .map_err(|_| ApiError::timeout("query timed out while waiting to be evaluated"))?
            .map_err(|_| ApiError::unavailable("the query engine is shutting down"))?;
        let mut options = self.options.clone();
        options.timeout = Some(deadline.saturating_duration_since(Instant::now()));
        let source = source.until(Some(deadline));
        let task = self.runtime.spawn_blocking(move || {
            let engine = Engine::with_options(source, options);
            evaluate(&engine)
        });
        // the engine stops itself at the deadline; this bounds what the client waits for
        match tokio::time::timeout(timeout + Duration::from_secs(1), task).await {
            Err(_) => Err(ApiError::timeout("query timed out in query execution")),
            Ok(Err(e)) => Err(ApiError::internal(format!("query evaluation failed: {e}"))),
            Ok(Ok(result)) => result.map_err(ApiError::from_engine),
        }
    }

    /// Runs a label query (series, names, values) on the query runtime, within the
    /// default timeout.
    async fn lookup<T: Send + 'static>(
        &self,
        lookup: impl std::future::Future<Output = Result<T, PromError>> + Send + 'static,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(
            DEFAULT_TIMEOUT + Duration::from_secs(1),
            self.runtime.spawn(lookup),
        )
        .await
        {
            Err(_) => Err(ApiError::timeout("query timed out in series selection")),
            Ok(Err(e)) => Err(ApiError::internal(format!("series lookup failed: {e}"))),
            Ok(Ok(result)) => result.map_err(ApiError::from_engine),
        }
    }
}

// ------------------------------------------------------------------ handlers

/// `GET|POST /prom/api/v1/query`.
pub async fn query(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    respond(instant_query(&state, &headers, raw, &body).await)
}

async fn instant_query(
    state: &ApiState,
    headers: &HeaderMap,
    raw: Option<String>,
    body: &[u8],
) -> Result<String, ApiError> {
    let params = Params::parse(headers, raw.as_deref(), body)?;
    let time_ms = params.time("time", now_ms())?;
    let timeout = params.duration("timeout")?;
    let query = params.get("query").unwrap_or_default().to_string();
    let source = scoped_source(state, &params)?;
    let value = state
        .prom
        .evaluate(&source, timeout, move |engine| {
            engine.instant(&query, time_ms)
        })
        .await?;
    Ok(success_with_warnings(
        &value_json(&value, time_ms),
        &partial_warnings(&source),
    ))
}

/// `GET|POST /prom/api/v1/query_range`.
pub async fn query_range(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    respond(range_query(&state, &headers, raw, &body).await)
}

async fn range_query(
    state: &ApiState,
    headers: &HeaderMap,
    raw: Option<String>,
    body: &[u8],
) -> Result<String, ApiError> {
    let params = Params::parse(headers, raw.as_deref(), body)?;
    let start = params.required_time("start")?;
    let end = params.required_time("end")?;
    if end < start {
        return Err(ApiError::bad_data(
            "end timestamp must not be before start time",
        ));
    }
    let step = parse_duration(params.get("step").unwrap_or_default())
        .map_err(|e| ApiError::bad_param("step", &e))?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let timeout = params.duration("timeout")?;
    let query = params.get("query").unwrap_or_default().to_string();
    let source = scoped_source(state, &params)?;
    let matrix = state
        .prom
        .evaluate(&source, timeout, move |engine| {
            engine.range(&query, start, end, step)
        })
        .await?;
    let mut out = String::from(r#"{"resultType":"matrix","result":"#);
    write_matrix(&mut out, &matrix);
    out.push('}');
    Ok(success_with_warnings(&out, &partial_warnings(&source)))
}

/// `GET|POST /prom/api/v1/series`.
pub async fn series(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    respond(series_list(&state, &headers, raw, &body).await)
}

async fn series_list(
    state: &ApiState,
    headers: &HeaderMap,
    raw: Option<String>,
    body: &[u8],
) -> Result<String, ApiError> {
    let params = Params::parse(headers, raw.as_deref(), body)?;
    if params.all("match[]").next().is_none() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let (start, end) = (
        params.time("start", MIN_TIME_MS)?,
        params.time("end", MAX_TIME_MS)?,
    );
    let sets = params.matcher_sets()?;
    let limit = params.limit()?;
    let mut found = matching_series(state, &params, sets, start, end).await?;
    let truncated = limit.is_some_and(|l| found.len() > l);
    if let Some(l) = limit {
        found.truncate(l);
    }
    let mut out = String::from("[");
    for (i, labels) in found.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_labels(&mut out, labels);
    }
    out.push(']');
    Ok(success_with_warnings(&out, &truncation_warning(truncated)))
}

/// `GET|POST /prom/api/v1/labels`.
pub async fn labels(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    respond(label_names(&state, &headers, raw, &body).await)
}

async fn label_names(
    state: &ApiState,
    headers: &HeaderMap,
    raw: Option<String>,
    body: &[u8],
) -> Result<String, ApiError> {
    let params = Params::parse(headers, raw.as_deref(), body)?;
    let (start, end) = (
        params.time("start", MIN_TIME_MS)?,
        params.time("end", MAX_TIME_MS)?,
    );
    let sets = params.matcher_sets()?;
    let limit = params.limit()?;
    let found = matching_series(state, &params, sets, start, end).await?;
    let names: std::collections::BTreeSet<&str> = found
        .iter()
        .flat_map(|l| l.iter().map(|l| l.name.as_str()))
        .collect();
    Ok(string_list(names.into_iter(), limit))
}

/// `GET /prom/api/v1/label/{name}/values`.
pub async fn label_values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    respond(values_of(&state, &name, &headers, raw, &body).await)
}

async fn values_of(
    state: &ApiState,
    name: &str,
    headers: &HeaderMap,
    raw: Option<String>,
    body: &[u8],
) -> Result<String, ApiError> {
    if !is_label_name(name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let params = Params::parse(headers, raw.as_deref(), body)?;
    let (start, end) = (
        params.time("start", MIN_TIME_MS)?,
        params.time("end", MAX_TIME_MS)?,
    );
    let sets = params.matcher_sets()?;
    let limit = params.limit()?;
    if name == METRIC_NAME && sets.is_empty() {
        let source = scoped_source(state, &params)?;
        let names = state
            .prom
            .lookup(async move {
                source
                    .metric_names(start, end, Some(lookup_deadline()))
                    .await
            })
            .await?;
        return Ok(string_list(names.iter().map(String::as_str), limit));
    }
    let found = matching_series(state, &params, sets, start, end).await?;
    let values: std::collections::BTreeSet<&str> =
        found.iter().filter_map(|l| l.get(name)).collect();
    Ok(string_list(values.into_iter(), limit))
}

/// `GET /prom/api/v1/metadata`: the RED metric families (optionally only `metric`, at
/// most `limit` of them), each with one `{type, help, unit}`.
pub async fn metadata(headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    respond(metadata_of(&headers, raw.as_deref()))
}

fn metadata_of(headers: &HeaderMap, raw: Option<&str>) -> Result<String, ApiError> {
    let params = Params::parse(headers, raw, b"")?;
    let metric = params.get("metric").filter(|m| !m.is_empty());
    let limit = match params.get("limit") {
        // Prometheus: a negative or absent limit is no limit
        None | Some("") => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            Err(_) => {
                return Err(ApiError::bad_data(format!(
                    "invalid parameter \"limit\": cannot parse {v:?}"
                )));
            }
        },
    };
    let mut data = serde_json::Map::new();
    for family in red::metadata()
        .into_iter()
        .filter(|f| metric.is_none_or(|m| f.family == m))
        .take(limit.unwrap_or(usize::MAX))
    {
        data.insert(
            family.family,
            json!([{ "type": family.kind.as_str(), "help": family.help, "unit": "" }]),
        );
    }
    Ok(success(&serde_json::Value::Object(data).to_string()))
}

/// `GET /prom/api/v1/status/buildinfo`. The version is the Prometheus release whose
/// query semantics the engine follows, so clients (Grafana) enable what it supports.
pub async fn buildinfo() -> Response {
    let data = json!({
        "version": "3.0.0",
        "revision": concat!("flowmesh-", env!("CARGO_PKG_VERSION")),
        "branch": "flowmesh",
        "buildUser": "flowmesh",
        "buildDate": "",
        "goVersion": "none",
    });
    respond(Ok(success(&data.to_string())))
}

// ------------------------------------------------------------------ errors

/// Prometheus' `errorType`s used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorType {
    BadData,
    Execution,
    Timeout,
    Internal,
    Unavailable,
}

/// An error answer: Prometheus' `errorType`, status and message.
#[derive(Debug)]
struct ApiError {
    kind: ErrorType,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::BadData,
            message: message.into(),
        }
    }

    /// Prometheus' `invalid parameter "x": …`.
    fn bad_param(name: &str, message: &str) -> Self {
        Self::bad_data(format!("invalid parameter {name:?}: {message}"))
    }

    fn timeout(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Timeout,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Internal,
            message: message.into(),
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Unavailable,
            message: message.into(),
        }
    }

    fn from_engine(e: PromError) -> Self {
        let kind = match e.code() {
            ErrorCode::BadData => return Self::bad_param("query", &e.to_string()),
            ErrorCode::Execution | ErrorCode::TooLarge => ErrorType::Execution,
            ErrorCode::Timeout => ErrorType::Timeout,
            ErrorCode::Source if e.is_retryable() => ErrorType::Unavailable,
            ErrorCode::Source => ErrorType::Internal,
        };
        Self {
            kind,
            message: e.to_string(),
        }
    }

    fn response(&self) -> Response {
        let (status, name) = match self.kind {
            ErrorType::BadData => (StatusCode::BAD_REQUEST, "bad_data"),
            ErrorType::Execution => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
            ErrorType::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ErrorType::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ErrorType::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        let body = json!({ "status": "error", "errorType": name, "error": self.message });
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

fn respond(result: Result<String, ApiError>) -> Response {
    match result {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => e.response(),
    }
}

fn success(data: &str) -> String {
    format!(r#"{{"status":"success","data":{data}}}"#)
}

/// A success with Prometheus' `warnings` when there are any.
fn success_with_warnings(data: &str, warnings: &[String]) -> String {
    if warnings.is_empty() {
        return success(data);
    }
    let mut out = format!(r#"{{"status":"success","data":{data},"warnings":["#);
    for (i, w) in warnings.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, w);
    }
    out.push_str("]}");
    out
}

const TRUNCATED: &str = "results truncated due to limit";

fn truncation_warning(truncated: bool) -> Vec<String> {
    if truncated {
        vec![TRUNCATED.to_string()]
    } else {
        Vec::new()
    }
}

/// The series source at the request's `scope` parameter (`node`, `cluster`, `region`,
/// `region:<name>`, `global`; else the node's `query.default_scope`), as for `/v1/sql`.
fn scoped_source(state: &ApiState, params: &Params) -> Result<PromSource, ApiError> {
    let scope = match params.get("scope") {
        Some(s) if !s.is_empty() => crate::mesh::Scope::parse(s)
            .map_err(|e| ApiError::bad_param("scope", &e.to_string()))?,
        _ => state.default_scope.clone(),
    };
    Ok(state.prom.source.over(Arc::clone(&state.mesh), scope))
}

/// A partial answer's warning: the nodes of the scope that did not answer.
fn partial_warnings(source: &PromSource) -> Vec<String> {
    let missing = source.missing();
    if missing.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "partial answer: no data from node(s) {}",
            missing.join(", ")
        )]
    }
}

// ------------------------------------------------------------------ parameters

/// Request parameters: a form-encoded POST body's first, then the URL's (Go's
/// `Request.Form` order, so a body value wins).
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(headers: &HeaderMap, raw: Option<&str>, body: &[u8]) -> Result<Self, ApiError> {
        let mut pairs = Vec::new();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if is_form && !body.is_empty() {
            let body = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_data("error parsing form values: body is not UTF-8"))?;
            decode_form(body, &mut pairs)?;
        }
        if let Some(raw) = raw {
            decode_form(raw, &mut pairs)?;
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A time parameter, or `default` when absent or empty.
    fn time(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(v) => parse_time(v).map_err(|e| ApiError::bad_param(name, &e)),
        }
    }

    fn required_time(&self, name: &str) -> Result<i64, ApiError> {
        parse_time(self.get(name).unwrap_or_default()).map_err(|e| ApiError::bad_param(name, &e))
    }

    fn duration(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => {
                let ms = parse_duration(v).map_err(|e| ApiError::bad_param(name, &e))?;
                Ok(Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
            }
        }
    }

    fn limit(&self) -> Result<Option<usize>, ApiError> {
        match self.get("limit") {
            None | Some("") | Some("0") => Ok(None),
            Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
                ApiError::bad_data(format!("invalid parameter \"limit\": cannot parse {v:?}"))
            }),
        }
    }

    /// Every `match[]` as matcher sets (a selector with `or` gives several).
    fn matcher_sets(&self) -> Result<Vec<Vec<LabelMatcher>>, ApiError> {
        let mut sets = Vec::new();
        for selector in self.all("match[]") {
            sets.extend(parse_metric_selector(selector)?);
        }
        Ok(sets)
    }
}

/// The label sets of the series matching any of `sets` over [start, end].
async fn matching_series(
    state: &ApiState,
    params: &Params,
    sets: Vec<Vec<LabelMatcher>>,
    start: i64,
    end: i64,
) -> Result<Vec<Labels>, ApiError> {
    let source = scoped_source(state, params)?;
    state
        .prom
        .lookup(async move {
            source
                .series_labels(&sets, start, end, Some(lookup_deadline()))
                .await
        })
        .await
}

/// Decodes `application/x-www-form-urlencoded` pairs (`+` is a space).
fn decode_form(text: &str, out: &mut Vec<(String, String)>) -> Result<(), ApiError> {
    for part in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        out.push((percent_decode(name)?, percent_decode(value)?));
    }
    Ok(())
}

fn percent_decode(text: &str) -> Result<String, ApiError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::bad_data(format!(
                            "error parsing form values: invalid URL escape {:?}",
                            text.get(i..(i + 3).min(text.len())).unwrap_or("%")
                        ))
                    })?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_data("error parsing form values: not UTF-8 after decoding"))
}

/// When a label lookup started now must end (its statement is cancelled then).
fn lookup_deadline() -> Instant {
    Instant::now() + DEFAULT_TIMEOUT
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Prometheus' `parseTime`: unix seconds as a float (rounded to the millisecond), or
/// RFC 3339, or the texts of `MinTime`/`MaxTime`. Milliseconds.
fn parse_time(text: &str) -> Result<i64, String> {
    let fail = || format!("cannot parse {text:?} to a valid timestamp");
    if let Ok(seconds) = text.parse::<f64>() {
        // beyond ±9.2e15 s the milliseconds overflow i64
        if !seconds.is_finite() || seconds.abs() >= 9.2e15 {
            return Err(fail());
        }
        let whole = seconds.trunc();
        let frac_ms = ((seconds - whole) * 1000.0).round();
        return Ok(whole as i64 * 1000 + frac_ms as i64);
    }
    match text {
        MIN_TIME_TEXT => return Ok(MIN_TIME_MS),
        MAX_TIME_TEXT => return Ok(MAX_TIME_MS),
        _ => {}
    }
    parse_rfc3339(text).ok_or_else(fail)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` → milliseconds (the fraction truncated).
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| -> Option<i64> {
        let part = b.get(from..from + n)?;
        part.iter().all(u8::is_ascii_digit).then(|| {
            part.iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if sep(i, b".") {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start || i - start > 9 {
            return None;
        }
        let frac = &text[start..i];
        millis = format!("{frac:0<3}")[..3].parse::<i64>().ok()?;
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b":") => {
            let (h, m) = (digits(i + 1, 2)?, digits(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let s = h * 3600 + m * 60;
            if *sign == b'+' { s } else { -s }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Prometheus' `parseDuration`: float seconds or a Prometheus duration (`1h30m`, `500ms`).
/// Milliseconds, truncated like Go's `time.Duration` → ms.
fn parse_duration(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        let ns = seconds * 1e9;
        if !ns.is_finite() || ns >= 9.223_372_036_854_775e18 || ns <= -9.223_372_036_854_775e18 {
            return Err(format!(
                "cannot parse {text:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok((ns as i64) / 1_000_000);
    }
    parse_prometheus_duration(text)
        .ok_or_else(|| format!("cannot parse {text:?} to a valid duration"))
}

/// `[0-9]+(y|w|d|h|m|s|ms)` units in that order, each at most once, or `0`.
fn parse_prometheus_duration(text: &str) -> Option<i64> {
    if text == "0" {
        return Some(0);
    }
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let b = text.as_bytes();
    let mut i = 0;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    if b.is_empty() {
        return None;
    }
    while i < b.len() {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let number: i64 = text.get(start..i)?.parse().ok()?;
        let rest = &text[i..];
        // "ms" before "m"
        let (index, (unit, ms)) = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())?;
        i += unit.len();
        next_unit = index + 1;
        total = total.checked_add(number.checked_mul(*ms)?)?;
    }
    Some(total)
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a `match[]` series selector into its matcher sets.
fn parse_metric_selector(text: &str) -> Result<Vec<Vec<LabelMatcher>>, ApiError> {
    flowmesh_promql::parse_series_selector(text)
        .map_err(|e| ApiError::bad_data(format!("invalid series selector {text:?}: {e}")))
}

// ------------------------------------------------------------------ JSON

/// Go's `strconv.FormatFloat(v, 'f' or 'e', -1, 64)` as Prometheus' JSON uses it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust's shortest `1.5e-7` → Go's `1.5e-07`
        let text = format!("{v:e}");
        if let Some((mantissa, exponent)) = text.split_once('e') {
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exponent),
            };
            return format!("{mantissa}e{sign}{digits:0>2}");
        }
        return text;
    }
    // both print the shortest digits that round-trip, without an exponent
    format!("{v}")
}

/// Prometheus' timestamp: seconds, then `.` and three digits when not whole.
pub fn format_timestamp(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    let (seconds, fraction) = (abs / 1000, abs % 1000);
    if fraction == 0 {
        format!("{sign}{seconds}")
    } else {
        format!("{sign}{seconds}.{fraction:03}")
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, &l.name);
        out.push(':');
        push_json_string(out, &l.value);
    }
    out.push('}');
}

fn write_point(out: &mut String, t_ms: i64, value: &str) {
    out.push('[');
    out.push_str(&format_timestamp(t_ms));
    out.push(',');
    push_json_string(out, value);
    out.push(']');
}

/// A scalar or string result's point: `[<seconds as a float>, "<value>"]`.
fn write_float_point(out: &mut String, t_ms: i64, value: &str) {
    out.push('[');
    out.push_str(&(t_ms as f64 / 1000.0).to_string());
    out.push(',');
    push_json_string(out, value);
    out.push(']');
}

fn write_matrix(out: &mut String, matrix: &Matrix) {
    out.push('[');
    for (i, series) in matrix.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        write_labels(out, &series.labels);
        out.push_str(r#","values":["#);
        for (j, (t, v)) in series.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_point(out, *t, &format_value(*v));
        }
        out.push_str("]}");
    }
    out.push(']');
}

/// `{"resultType": …, "result": …}` of an instant query evaluated at `t_ms`.
fn value_json(value: &Value, t_ms: i64) -> String {
    let mut out = format!(r#"{{"resultType":"{}","result":"#, value.type_name());
    match value {
        // Prometheus marshals these two with encoding/json: the time as a plain float and
        // the value always in 'f' format
        Value::Scalar { t_ms, value } => {
            let value = if value.is_finite() {
                format!("{value}")
            } else {
                format_value(*value)
            };
            write_float_point(&mut out, *t_ms, &value);
        }
        Value::String(s) => write_float_point(&mut out, t_ms, s),
        Value::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.labels);
                out.push_str(r#","value":"#);
                write_point(&mut out, s.t_ms, &format_value(s.value));
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(m) => write_matrix(&mut out, m),
    }
    out.push('}');
    out
}

fn string_list<'a>(items: impl Iterator<Item = &'a str>, limit: Option<usize>) -> String {
    let mut out = String::from("[");
    let mut truncated = false;
    for (i, item) in items.enumerate() {
        if limit.is_some_and(|l| i >= l) {
            truncated = true;
            break;
        }
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, item);
    }
    out.push(']');
    success_with_warnings(&out, &truncation_warning(truncated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowmesh_promql::Series;

    #[test]
    fn values_are_formatted_like_go() {
        for (v, text) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-6, "0.000001"),
            (1.5e-7, "1.5e-07"),
            (-1e-300, "-1e-300"),
            (1e21, "1e+21"),
            (123_456_789_012_345_680_000.0, "123456789012345680000"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            (1_700_000_000.123, "1700000000.123"),
        ] {
            assert_eq!(format_value(v), text, "{v:?}");
        }
    }

    #[test]
    fn timestamps_are_seconds_with_milliseconds() {
        assert_eq!(format_timestamp(1_700_000_000_000), "1700000000");
        assert_eq!(format_timestamp(1_700_000_000_500), "1700000000.500");
        assert_eq!(format_timestamp(1_700_000_000_007), "1700000000.007");
        assert_eq!(format_timestamp(-1500), "-1.500");
        assert_eq!(format_timestamp(0), "0");
    }

    #[test]
    fn times_parse_as_prometheus_does() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1700000000.1234"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(parse_time("1e9"), Ok(1_000_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.123456789Z"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            parse_time("2023-11-15T00:13:20.5+02:00"),
            Ok(1_700_000_000_500)
        );
        assert_eq!(parse_time("1970-01-01T00:00:00-00:30"), Ok(1_800_000));
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert_eq!(parse_time(MIN_TIME_TEXT), Ok(MIN_TIME_MS));
        assert_eq!(parse_time(MAX_TIME_TEXT), Ok(MAX_TIME_MS));
        for bad in [
            "",
            "now",
            "NaN",
            "inf",
            "1e300",
            "2023-02-29T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14 22:13:20Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0200",
            "2023-11-14T22:13:20Zjunk",
            "2023-1-14T22:13:20Z",
            "é023-11-14T22:13:20Z",
        ] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains("to a valid timestamp"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn durations_parse_as_prometheus_does() {
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("0.0004"), Ok(0));
        assert_eq!(parse_duration("-1"), Ok(-1000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("1h1ms"), Ok(3_600_001));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400_000));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in [
            "",
            "1x",
            "s",
            "1s1m",
            "1m1m",
            "1.5m",
            "-1m",
            "1e30",
            "9999999999999999999y",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn form_decoding_and_precedence() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        let p = Params::parse(
            &headers,
            Some("query=url&match%5B%5D=a&x"),
            b"query=sum%28rate%28up%5B1m%5D%29%29+by+%28job%29&match[]=b",
        )
        .unwrap();
        assert_eq!(p.get("query"), Some("sum(rate(up[1m])) by (job)"));
        assert_eq!(p.all("match[]").collect::<Vec<_>>(), vec!["b", "a"]);
        assert_eq!(p.get("x"), Some(""));
        // a body that is not a form is ignored
        let p = Params::parse(&HeaderMap::new(), Some("query=up"), b"query=down").unwrap();
        assert_eq!(p.get("query"), Some("up"));
        for bad in ["query=%zz", "query=%4", "q=%ff"] {
            let e = Params::parse(&HeaderMap::new(), Some(bad), b"").unwrap_err();
            assert_eq!(e.kind, ErrorType::BadData, "{bad}");
        }
    }

    #[test]
    fn selectors_parse_and_others_do_not() {
        let sets = parse_metric_selector(r#"up{job="node",instance=~"a.*"}"#).unwrap();
        assert_eq!(sets.len(), 1);
        let names: Vec<&str> = sets[0].iter().map(|m| m.name.as_str()).collect();
        assert!(
            names.contains(&"__name__") && names.contains(&"job"),
            "{names:?}"
        );
        let sets = parse_metric_selector(r#"{__name__=~"up|down"}"#).unwrap();
        assert_eq!(sets.len(), 1);
        let sets = parse_metric_selector("up{path=\"#x\"} # a comment").unwrap();
        assert!(sets[0].iter().any(|m| m.value == "#x"));
        for bad in [
            "sum(up)",
            "rate(up[1m])",
            "up[5m]",
            "up offset 5m",
            "-up",
            "1",
            "up + up",
            r#"{job=~".*"}"#,
            "up{",
            "",
        ] {
            let e = parse_metric_selector(bad).unwrap_err();
            assert_eq!(e.kind, ErrorType::BadData, "{bad}");
        }
    }

    #[test]
    fn label_names_are_checked() {
        assert!(is_label_name("__name__"));
        assert!(is_label_name("job_2"));
        assert!(!is_label_name("2job"));
        assert!(!is_label_name("a-b"));
        assert!(!is_label_name(""));
    }

    #[test]
    fn engine_errors_map_to_prometheus_types() {
        let e = ApiError::from_engine(PromError::Parse {
            message: "1:4: unexpected".into(),
        });
        assert_eq!(e.kind, ErrorType::BadData);
        assert!(
            e.message.starts_with("invalid parameter \"query\": "),
            "{}",
            e.message
        );
        let e = ApiError::from_engine(PromError::execution("many-to-many"));
        assert_eq!(e.response().status(), StatusCode::UNPROCESSABLE_ENTITY);
        let e = ApiError::from_engine(PromError::Timeout { stage: "x" });
        assert_eq!(e.response().status(), StatusCode::SERVICE_UNAVAILABLE);
        let e = ApiError::from_engine(PromError::TooManySamples { stage: "x" });
        assert_eq!(e.kind, ErrorType::Execution);
    }

    #[test]
    fn results_have_prometheus_json_shapes() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        let v = Value::Vector(vec![flowmesh_promql::Sample {
            labels: labels.clone(),
            t_ms: 1500,
            value: 1.0,
        }]);
        assert_eq!(
            value_json(&v, 1500),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1.500,"1"]}]}"#
        );
        let s = |t_ms, value| value_json(&Value::Scalar { t_ms, value }, t_ms);
        assert_eq!(
            s(2000, f64::NAN),
            r#"{"resultType":"scalar","result":[2,"NaN"]}"#
        );
        assert_eq!(
            s(1_795_265_254_300, 1e-7),
            r#"{"resultType":"scalar","result":[1795265254.3,"0.0000001"]}"#
        );
        assert_eq!(
            s(-1500, f64::NEG_INFINITY),
            r#"{"resultType":"scalar","result":[-1.5,"-Inf"]}"#
        );
        assert_eq!(
            value_json(&Value::String("x".into()), 1),
            r#"{"resultType":"string","result":[0.001,"x"]}"#
        );
        let mut out = String::new();
        write_matrix(
            &mut out,
            &vec![Series {
                labels,
                samples: vec![(1000, 0.5), (2000, f64::INFINITY)],
            }],
        );
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed[0]["values"], json!([[1, "0.5"], [2, "+Inf"]]));
        let parsed: serde_json::Value =
            serde_json::from_str(&string_list(["a", "b", "c"].into_iter(), Some(2))).unwrap();
        assert_eq!(parsed["data"], json!(["a", "b"]));
        assert_eq!(
            parsed["warnings"],
            json!(["results truncated due to limit"])
        );
    }
}
