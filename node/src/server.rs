//! The HTTP front end on `http.listen` (127.0.0.1:20416 by default): `POST /v1/sql` (JSON or
//! Arrow IPC), `/metrics`, `/v1/status`, the web UI at `/`, and the metric ingest endpoints
//! of [`crate::ingest`] (`/api/v1/write`, `/api/v2/write`).
//! The Prometheus HTTP API is under `/prom/api/v1/` ([`crate::prom_api`]).

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use datafusion::arrow::{
    array::{Array, AsArray},
    datatypes::{
        DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
        UInt16Type, UInt32Type, UInt64Type,
    },
    ipc::writer::StreamWriter,
    util::display::{ArrayFormatter, FormatOptions},
};
use flowmesh_query_planner::{QueryError, QueryOutput};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::metrics::Metrics;
use crate::prom_api;

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub ingest: Arc<crate::ingest::Ingest>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<dyn Fn() -> Value + Send + Sync>,
    pub prom: Arc<crate::prom_api::PromApi>,
    /// Answers SQL for a scope, over the mesh when it has one.
    pub mesh: Arc<crate::mesh::MeshQuery>,
    /// The scope of a query that names none (`query.default_scope`).
    pub default_scope: crate::mesh::Scope,
}

pub fn router(state: ApiState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(ui))
        .route("/v1/sql", get(sql_get).post(sql_post))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/api/v1/write", post(crate::ingest::remote_write))
        .route("/api/v2/write", post(crate::ingest::influx_write))
        .route("/v1/traces", post(crate::otlp::http_traces))
        .route("/v1/trace/{seed}", get(crate::tempo::native))
        .route("/api/traces/{id}", get(crate::tempo::tempo_trace))
        .route("/api/search", get(crate::tempo::tempo_search))
        .route("/api/echo", get(crate::tempo::echo))
        .route(
            "/prom/api/v1/query",
            get(prom_api::query).post(prom_api::query),
        )
        .route(
            "/prom/api/v1/query_range",
            get(prom_api::query_range).post(prom_api::query_range),
        )
        .route(
            "/prom/api/v1/series",
            get(prom_api::series).post(prom_api::series),
        )
        .route(
            "/prom/api/v1/labels",
            get(prom_api::labels).post(prom_api::labels),
        )
        .route(
            "/prom/api/v1/label/{name}/values",
            get(prom_api::label_values),
        )
        .route("/prom/api/v1/metadata", get(prom_api::metadata))
        .route("/prom/api/v1/status/buildinfo", get(prom_api::buildinfo))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn ui() -> Html<&'static str> {
    Html(include_str!("ui.html"))
}

async fn status(State(state): State<ApiState>) -> Json<Value> {
    Json((state.status)())
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct SqlParams {
    sql: Option<String>,
    /// `node`, `cluster`, `region`, `region:<name>` or `global`.
    scope: Option<String>,
    /// A node in scope that does not answer makes the query fail instead of partial.
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
}

async fn sql_get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(params): Query<SqlParams>,
) -> Response {
    match params.sql.clone() {
        Some(sql) => run_sql(state, &headers, &params, sql).await,
        None => error_response(StatusCode::BAD_REQUEST, "missing `sql` query parameter"),
    }
}

/// The body is JSON `{"sql": "..."}` when sent as `application/json`, else the SQL text.
/// `?scope=` and `?strict=` as on GET.
async fn sql_post(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(params): Query<SqlParams>,
    body: Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let sql = if is_json {
        match serde_json::from_slice::<SqlBody>(&body) {
            Ok(b) => b.sql,
            Err(e) => {
                return error_response(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}"));
            }
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(s) => s,
            Err(_) => return error_response(StatusCode::BAD_REQUEST, "SQL body is not UTF-8"),
        }
    };
    run_sql(state, &headers, &params, sql).await
}

async fn run_sql(
    state: ApiState,
    headers: &HeaderMap,
    params: &SqlParams,
    sql: String,
) -> Response {
    if sql.trim().is_empty() {
        return error_response(StatusCode::BAD_REQUEST, "empty SQL statement");
    }
    let resolved = crate::mesh::statement_settings(&sql).and_then(|(settings, sql)| {
        let (scope, strict) =
            settings.resolve(params.scope.as_deref(), params.strict, &state.default_scope)?;
        Ok((sql, scope, strict))
    });
    let (sql, scope, strict) = match resolved {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    state
        .metrics
        .http
        .sql_queries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let result = state.mesh.sql(sql, scope, strict).await;
    let answer = match result {
        Ok(answer) => answer,
        Err(e) => {
            let (code, counter) = if e.is_client_error() {
                (
                    StatusCode::BAD_REQUEST,
                    &state.metrics.http.sql_client_errors,
                )
            } else if e.is_retryable() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    &state.metrics.http.sql_server_errors,
                )
            } else {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &state.metrics.http.sql_server_errors,
                )
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return error_response(code, &e.to_string());
        }
    };
    let out = &answer.output;
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    if wants_arrow {
        // who is missing travels in headers: an Arrow stream has no place for it
        match arrow_ipc(out) {
            Ok(bytes) => (
                [
                    (header::CONTENT_TYPE, ARROW_STREAM.to_string()),
                    (
                        header::HeaderName::from_static("x-flowmesh-partial"),
                        (!answer.missing.is_empty()).to_string(),
                    ),
                    (
                        header::HeaderName::from_static("x-flowmesh-missing-nodes"),
                        answer.missing.join(","),
                    ),
                ],
                bytes,
            )
                .into_response(),
            Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e),
        }
    } else {
        match to_json(out) {
            Ok(mut v) => {
                v["elapsed_ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
                v["partial"] = json!(!answer.missing.is_empty());
                v["missing_nodes"] = json!(answer.missing);
                v["nodes"] = json!(answer.answered);
                Json(v).into_response()
            }
            Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e),
        }
    }
}

/// Runs query work on the query runtime (off the HTTP and gRPC threads); a task that
/// panics or is cancelled is an internal error.
pub(crate) async fn on_query_runtime<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    work: impl std::future::Future<Output = Result<T, QueryError>> + Send + 'static,
) -> Result<T, QueryError> {
    runtime
        .spawn(work)
        .await
        .unwrap_or_else(|e| Err(QueryError::Internal(format!("query task failed: {e}"))))
}

fn error_response(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

fn arrow_ipc(out: &QueryOutput) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut writer = StreamWriter::try_new(&mut buf, &out.schema).map_err(|e| e.to_string())?;
    for b in &out.batches {
        writer.write(b).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(buf)
}

/// `{"columns": [{"name", "type"}], "rows": [[...]], "row_count"}`; numbers and booleans
/// stay JSON numbers and booleans, everything else is shown as Arrow displays it.
pub fn to_json(out: &QueryOutput) -> Result<Value, String> {
    let columns: Vec<Value> = out
        .schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let mut rows: Vec<Value> = Vec::with_capacity(out.num_rows());
    let options = FormatOptions::default().with_null("");
    for batch in &out.batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for row in 0..batch.num_rows() {
            let values: Vec<Value> = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(col, fmt)| cell(col.as_ref(), row, fmt))
                .collect();
            rows.push(Value::Array(values));
        }
    }
    Ok(json!({ "columns": columns, "row_count": rows.len(), "rows": rows }))
}

fn cell(col: &dyn Array, row: usize, fmt: &ArrayFormatter<'_>) -> Value {
    if col.is_null(row) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Boolean => json!(col.as_boolean().value(row)),
        DataType::Int8 => json!(col.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => json!(col.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => json!(col.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => json!(col.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => json!(col.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => json!(col.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => json!(col.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => json!(col.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => json!(col.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => json!(col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => json!(col.as_string::<i64>().value(row)),
        DataType::Utf8View => json!(col.as_string_view().value(row)),
        _ => json!(fmt.value(row).to_string()),
    }
}
