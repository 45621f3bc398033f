//! Arrow Flight SQL on `flight_sql.listen` (20417) for external clients: ADBC, JDBC, tools.
//!
//! Statements and prepared statements run through the same [`QueryEngine`] as `POST
//! /v1/sql` (read-only, tags shown as strings), on the query runtime. A statement's ticket
//! carries its SQL, so any call can be served without server state; a prepared statement's
//! handle names its SQL and bound parameters, kept in a bounded map (oldest closed first).
//! The catalog calls (GetCatalogs, GetDbSchemas, GetTables with schemas, GetTableTypes,
//! GetSqlInfo) read the engine's DataFusion catalog. With `flight_sql.token` set, every
//! call needs `authorization: Bearer <token>`; a handshake with Basic credentials whose
//! password is the token returns that header.
//!
//! Statements read the nodes of a scope like `/v1/sql`: the `x-flowmesh-scope` header
//! (`node`, `cluster`, `region`, `region:<name>`, `global`; else `query.default_scope`) and
//! `x-flowmesh-strict: true`. A partial answer says so in the response headers
//! `x-flowmesh-partial` and `x-flowmesh-missing-nodes`. Prepared statements with bound
//! parameters read this node only.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
    encode::FlightDataEncoderBuilder,
    flight_service_server::{FlightService, FlightServiceServer},
    sql::{
        ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
        ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
        CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
        CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
        TicketStatementQuery,
        metadata::{SqlInfoData, SqlInfoDataBuilder},
        server::{FlightSqlService, PeekableFlightDataStream},
    },
};
use base64::Engine as _;
use bytes::Bytes;
use datafusion::{
    arrow::{
        datatypes::{Schema, SchemaRef},
        ipc::writer::IpcWriteOptions,
        record_batch::RecordBatch,
    },
    common::ScalarValue,
    datasource::TableType,
};
use flowmesh_query_planner::{QueryEngine, QueryError, QueryOutput};
use futures::{Stream, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming, metadata::MetadataValue};

use crate::{config::FlightSqlConfig, server::on_query_runtime};

/// Counters of the Flight SQL endpoint, exported at `/metrics`.
#[derive(Debug, Default)]
pub struct FlightSqlStats {
    pub queries: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    pub unauthenticated: AtomicU64,
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

struct Prepared {
    sql: String,
    params: Vec<ScalarValue>,
}

/// Open prepared statements, closed oldest first past the configured count.
struct PreparedStatements {
    by_handle: HashMap<Bytes, Prepared>,
    order: VecDeque<Bytes>,
    capacity: usize,
    next: u64,
}

impl PreparedStatements {
    fn insert(&mut self, sql: String) -> Bytes {
        self.next += 1;
        let handle = Bytes::from(format!("flowmesh-prepared-{}", self.next));
        while self.by_handle.len() >= self.capacity.max(1) {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.by_handle.remove(&oldest);
        }
        self.order.push_back(handle.clone());
        self.by_handle.insert(
            handle.clone(),
            Prepared {
                sql,
                params: Vec::new(),
            },
        );
        handle
    }

    fn remove(&mut self, handle: &Bytes) {
        if self.by_handle.remove(handle).is_some() {
            self.order.retain(|h| h != handle);
        }
    }
}

/// The Flight SQL service of one node.
#[derive(Clone)]
pub struct FlightSql {
    engine: Arc<QueryEngine>,
    /// Statements over the mesh; set once the node has joined it (empty in unit tests and
    /// until then, when statements read this node).
    mesh: Arc<std::sync::OnceLock<Arc<crate::mesh::MeshQuery>>>,
    default_scope: crate::mesh::Scope,
    query_runtime: tokio::runtime::Handle,
    token: Arc<str>,
    prepared: Arc<Mutex<PreparedStatements>>,
    stats: Arc<FlightSqlStats>,
    sql_info: Arc<SqlInfoData>,
}

impl FlightSql {
    pub fn new(
        config: &FlightSqlConfig,
        engine: Arc<QueryEngine>,
        query_runtime: tokio::runtime::Handle,
        stats: Arc<FlightSqlStats>,
        mesh: Arc<std::sync::OnceLock<Arc<crate::mesh::MeshQuery>>>,
        default_scope: crate::mesh::Scope,
    ) -> Result<Self, String> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "flowmesh");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        let sql_info = info.build().map_err(|e| e.to_string())?;
        Ok(Self {
            engine,
            mesh,
            default_scope,
            query_runtime,
            token: config.token.as_str().into(),
            prepared: Arc::new(Mutex::new(PreparedStatements {
                by_handle: HashMap::new(),
                order: VecDeque::new(),
                capacity: config.max_prepared_statements,
                next: 0,
            })),
            stats,
            sql_info: Arc::new(sql_info),
        })
    }

    /// Serves until `cancel`.
    pub async fn serve(
        self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<(), String> {
        tonic::transport::Server::builder()
            .add_service(FlightServiceServer::new(self))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                cancel.cancelled_owned(),
            )
            .await
            .map_err(|e| e.to_string())
    }

    #[allow(clippy::result_large_err)]
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.token.is_empty() {
            return Ok(());
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented.is_some_and(|p| same_secret(p, &self.token)) {
            Ok(())
        } else {
            self.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
            Err(Status::unauthenticated(
                "flight_sql.token is set: send `authorization: Bearer <token>`",
            ))
        }
    }

    /// Runs a statement over the nodes its request's headers choose (see the module
    /// docs); the response carries who was missing.
    async fn run_scoped(
        &self,
        sql: String,
        params: Vec<ScalarValue>,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Response<DoGetStream>, Status> {
        let header = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
        let strict = match header("x-flowmesh-strict") {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(Status::invalid_argument(format!(
                    "x-flowmesh-strict: {other:?} is not true or false"
                )));
            }
        };
        let (settings, statement) =
            crate::mesh::statement_settings(&sql).map_err(|e| self.status_of(e))?;
        let (scope, strict) = settings
            .resolve(header("x-flowmesh-scope"), strict, &self.default_scope)
            .map_err(|e| self.status_of(e))?;
        let sql = statement.to_string();
        let Some(mesh) = self.mesh.get().filter(|_| params.is_empty()) else {
            let out = self.run(sql, params).await?;
            return Ok(stream_batches(out.schema, out.batches));
        };
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let answer = mesh
            .sql(&sql, scope, strict)
            .await
            .map_err(|e| self.status_of(e))?;
        let mut response = stream_batches(answer.output.schema, answer.output.batches);
        let partial = if answer.missing.is_empty() {
            "false"
        } else {
            "true"
        };
        response
            .metadata_mut()
            .insert("x-flowmesh-partial", MetadataValue::from_static(partial));
        if let Ok(v) = MetadataValue::try_from(answer.missing.join(",")) {
            response
                .metadata_mut()
                .insert("x-flowmesh-missing-nodes", v);
        }
        Ok(response)
    }

    /// Runs a statement on this node's engine, on the query runtime, counting it and
    /// classifying its error.
    async fn run(&self, sql: String, params: Vec<ScalarValue>) -> Result<QueryOutput, Status> {
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let engine = Arc::clone(&self.engine);
        on_query_runtime(&self.query_runtime, async move {
            engine.sql_with_params(&sql, params).await
        })
        .await
        .map_err(|e| self.status_of(e))
    }

    /// The shape of the statement `sql` runs (after its `SET flowmesh.…;` settings).
    async fn describe(
        &self,
        sql: String,
    ) -> Result<flowmesh_query_planner::StatementShape, Status> {
        let sql = crate::mesh::statement_settings(&sql)
            .map_err(|e| self.status_of(e))?
            .1
            .to_string();
        let engine = Arc::clone(&self.engine);
        on_query_runtime(
            &self.query_runtime,
            async move { engine.describe(&sql).await },
        )
        .await
        .map_err(|e| self.status_of(e))
    }

    fn status_of(&self, e: QueryError) -> Status {
        if e.is_client_error() {
            self.stats.client_errors.fetch_add(1, Ordering::Relaxed);
            Status::invalid_argument(e.to_string())
        } else if e.is_retryable() {
            self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
            Status::resource_exhausted(e.to_string())
        } else {
            self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
            Status::internal(e.to_string())
        }
    }

    #[allow(clippy::result_large_err)]
    fn prepared(&self, handle: &Bytes) -> Result<(String, Vec<ScalarValue>), Status> {
        let prepared = self.prepared.lock();
        let p = prepared.by_handle.get(handle).ok_or_else(|| {
            Status::not_found("unknown or closed prepared statement handle".to_string())
        })?;
        Ok((p.sql.clone(), p.params.clone()))
    }

    /// The FlightInfo of a catalog call, whose ticket is the command itself.
    #[allow(clippy::result_large_err)]
    fn command_info(
        &self,
        command: &impl ProstMessageExt,
        schema: &Schema,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let ticket = command.as_any().encode_to_vec().into();
        flight_info(schema, ticket, request.into_inner())
    }

    /// Every (catalog, schema, table, type, schema) the engine knows.
    async fn tables(&self) -> Vec<(String, String, String, &'static str, SchemaRef)> {
        let ctx = self.engine.context();
        let mut out = Vec::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    if let Ok(Some(table)) = schema.table(&table_name).await {
                        out.push((
                            catalog_name.clone(),
                            schema_name.clone(),
                            table_name,
                            table_type_name(table.table_type()),
                            table.schema(),
                        ));
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        out
    }
}

/// Compares a presented secret with the token in time independent of where they differ.
pub(crate) fn same_secret(presented: &str, token: &str) -> bool {
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

#[allow(clippy::result_large_err)]
fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

/// A FlightInfo with one endpoint whose ticket is `ticket`, served by this node.
#[allow(clippy::result_large_err)]
fn flight_info(
    schema: &Schema,
    ticket: Bytes,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn stream_batches(schema: SchemaRef, batches: Vec<RecordBatch>) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

#[allow(clippy::result_large_err)]
fn stream_batch(
    batch: Result<RecordBatch, arrow_flight::error::FlightError>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    Ok(stream_batches(batch.schema(), vec![batch]))
}

/// The parameter values of a DoPut: one row, one value per column, in placeholder order.
#[allow(clippy::result_large_err)]
fn parameter_row(batches: &[RecordBatch]) -> Result<Vec<ScalarValue>, Status> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows != 1 {
        let got = if rows == 0 {
            "none"
        } else {
            "more than one row"
        };
        return Err(Status::invalid_argument(format!(
            "a query takes one set of parameters (one row), got {got}"
        )));
    }
    let Some(batch) = batches.iter().find(|b| b.num_rows() == 1) else {
        return Err(Status::invalid_argument("no parameter row"));
    };
    batch
        .columns()
        .iter()
        .map(|column| {
            ScalarValue::try_from_array(column, 0)
                .map_err(|e| Status::invalid_argument(format!("bad parameter: {e}")))
        })
        .collect()
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        if !self.token.is_empty() {
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let accepted = if let Some(basic) = header.strip_prefix("Basic ") {
                // padded (pyarrow) or not (the Go clients, ADBC among them)
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(basic.trim().trim_end_matches('='))
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.split_once(':').map(|(_, p)| same_secret(p, &self.token)))
                    .unwrap_or(false)
            } else {
                header
                    .strip_prefix("Bearer ")
                    .is_some_and(|p| same_secret(p, &self.token))
            };
            if !accepted {
                let scheme = header.split(' ').next().unwrap_or_default();
                tracing::warn!(scheme, "Flight SQL handshake refused");
                self.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
                return Err(Status::unauthenticated(
                    "log in with the node's flight_sql.token as the password",
                ));
            }
        }
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::new(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        if !self.token.is_empty() {
            let value = MetadataValue::try_from(format!("Bearer {}", self.token))
                .map_err(|_| Status::internal("token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let shape = self.describe(query.query.clone()).await?;
        let ticket = TicketStatementQuery {
            statement_handle: Bytes::from(query.query.into_bytes()),
        };
        flight_info(
            &shape.schema,
            ticket.as_any().encode_to_vec().into(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("statement ticket is not UTF-8 SQL"))?;
        self.run_scoped(sql, Vec::new(), request.metadata()).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(&request)?;
        let shape = self.describe(query.query.clone()).await?;
        let handle = self.prepared.lock().insert(query.query);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle,
            dataset_schema: schema_bytes(&shape.schema)?,
            parameter_schema: schema_bytes(&shape.parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.authorize(&request)?;
        let handle = query.prepared_statement_handle;
        self.prepared(&handle)?;
        let mut stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(|e| e.into()),
        );
        // one row is all a query takes: stop reading past it rather than buffer a stream
        let mut batches: Vec<RecordBatch> = Vec::new();
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(|e| Status::invalid_argument(format!("bad parameter data: {e}")))?
        {
            batches.push(batch);
            if batches.iter().map(RecordBatch::num_rows).sum::<usize>() > 1 {
                break;
            }
        }
        let params = parameter_row(&batches)?;
        match self.prepared.lock().by_handle.get_mut(&handle) {
            Some(p) => p.params = params,
            None => return Err(Status::not_found("prepared statement closed meanwhile")),
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let (sql, _) = self.prepared(&cmd.prepared_statement_handle)?;
        let shape = self.describe(sql).await?;
        flight_info(
            &shape.schema,
            cmd.as_any().encode_to_vec().into(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let (sql, params) = self.prepared(&query.prepared_statement_handle)?;
        self.run_scoped(sql, params, request.metadata()).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.authorize(&request)?;
        self.prepared
            .lock()
            .remove(&query.prepared_statement_handle);
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut names = self.engine.context().catalog_names();
        names.sort();
        let mut builder = query.into_builder();
        for name in names {
            builder.append(name);
        }
        stream_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let ctx = self.engine.context();
        let mut pairs = Vec::new();
        for catalog_name in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&catalog_name) {
                for schema_name in catalog.schema_names() {
                    pairs.push((catalog_name.clone(), schema_name));
                }
            }
        }
        pairs.sort();
        // the builder applies the request's catalog and schema pattern filters
        let mut builder = query.into_builder();
        for (catalog, schema) in pairs {
            builder.append(catalog, schema);
        }
        stream_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let tables = self.tables().await;
        // the builder applies the request's catalog, pattern and table type filters
        let mut builder = query.into_builder();
        for (catalog, schema, table, kind, table_schema) in tables {
            builder
                .append(catalog, schema, table, kind, &table_schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        stream_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        for kind in ["LOCAL TEMPORARY", "TABLE", "VIEW"] {
            builder.append(kind);
        }
        stream_batch(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.command_info(&query, &schema, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        stream_batch(query.into_builder(&self.sql_info).build())
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented(format!(
            "flowmesh does not serve tickets of type {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use arrow_flight::sql::client::FlightSqlServiceClient;
    use datafusion::{
        arrow::{
            array::{Int32Array, Int64Array, StringArray},
            datatypes::{DataType, Field},
            util::pretty::pretty_format_batches,
        },
        datasource::MemTable,
    };
    use flowmesh_query_planner::QueryConfig;
    use tonic::transport::Channel;

    use super::*;

    /// A service over one table `s.t` (name, n) = (a, 1), (b, 2), (c, 3).
    async fn serve(token: &str) -> (SocketAddr, CancellationToken) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        let engine = QueryEngine::new(
            vec![("s.t".into(), Arc::new(table))],
            &QueryConfig::default(),
        )
        .unwrap();
        let config = FlightSqlConfig {
            token: token.into(),
            max_prepared_statements: 2,
            ..Default::default()
        };
        let service = FlightSql::new(
            &config,
            Arc::new(engine),
            tokio::runtime::Handle::current(),
            Arc::default(),
            Arc::default(),
            crate::mesh::Scope::Node,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(service.serve(listener, cancel.clone()));
        (addr, cancel)
    }

    async fn client(addr: SocketAddr) -> FlightSqlServiceClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        FlightSqlServiceClient::new(channel)
    }

    async fn fetch(
        client: &mut FlightSqlServiceClient<Channel>,
        info: FlightInfo,
    ) -> Result<String, arrow_flight::error::FlightError> {
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let stream = client.do_get(endpoint.ticket.unwrap()).await?;
            batches.extend(stream.try_collect::<Vec<_>>().await?);
        }
        Ok(pretty_format_batches(&batches).unwrap().to_string())
    }

    fn code(e: arrow_flight::error::FlightError) -> tonic::Code {
        match e {
            arrow_flight::error::FlightError::Tonic(s) => s.code(),
            other => panic!("not a gRPC status: {other}"),
        }
    }

    #[tokio::test]
    async fn statements_and_prepared_statements_answer_like_sql() {
        let (addr, _cancel) = serve("").await;
        let mut c = client(addr).await;
        let info = c
            .execute(
                "SELECT name, n FROM s.t WHERE n >= 2 ORDER BY n".into(),
                None,
            )
            .await
            .unwrap();
        let schema = info.clone().try_decode_schema().unwrap();
        assert_eq!(schema.field(1).data_type(), &DataType::Int64);
        let table = fetch(&mut c, info).await.unwrap();
        assert_eq!(
            table,
            "+------+---+\n| name | n |\n+------+---+\n| b    | 2 |\n| c    | 3 |\n+------+---+"
        );

        // $1 is inferred as Int64; an Int32 value is cast to it
        let mut prepared = c
            .prepare("SELECT name FROM s.t WHERE n = $1".into(), None)
            .await
            .unwrap();
        let params = prepared.parameter_schema().unwrap().clone();
        assert_eq!(params.fields().len(), 1);
        assert_eq!(params.field(0).name(), "$1");
        assert_eq!(params.field(0).data_type(), &DataType::Int64);
        let value = Field::new("$1", DataType::Int32, false);
        prepared
            .set_parameters(
                RecordBatch::try_new(
                    Arc::new(Schema::new(vec![value])),
                    vec![Arc::new(Int32Array::from(vec![3]))],
                )
                .unwrap(),
            )
            .unwrap();
        let info = prepared.execute().await.unwrap();
        let table = fetch(&mut c, info).await.unwrap();
        assert!(
            table.contains("| c    |") && !table.contains("| a "),
            "{table}"
        );

        // two parameter rows are refused
        let two = Field::new("$1", DataType::Int64, false);
        prepared
            .set_parameters(
                RecordBatch::try_new(
                    Arc::new(Schema::new(vec![two])),
                    vec![Arc::new(Int64Array::from(vec![1, 2]))],
                )
                .unwrap(),
            )
            .unwrap();
        let e = prepared.execute().await.unwrap_err();
        assert_eq!(code(e), tonic::Code::InvalidArgument);

        // a parameterised statement run without its parameter, and bad SQL
        let mut unbound = c
            .prepare("SELECT name FROM s.t WHERE n = $1".into(), None)
            .await
            .unwrap();
        let info = unbound.execute().await.unwrap();
        let e = fetch(&mut c, info).await.unwrap_err();
        assert_eq!(code(e), tonic::Code::InvalidArgument);
        let e = c
            .execute("SELECT nope FROM s.t".into(), None)
            .await
            .unwrap_err();
        assert_eq!(code(e), tonic::Code::InvalidArgument);
        // read-only: DDL is refused
        let e = c
            .execute("CREATE TABLE x (a INT)".into(), None)
            .await
            .unwrap_err();
        assert_eq!(code(e), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn catalog_calls_list_what_sql_can_read() {
        let (addr, _cancel) = serve("").await;
        let mut c = client(addr).await;
        let info = c
            .get_tables(CommandGetTables {
                db_schema_filter_pattern: Some("s".into()),
                include_schema: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let table = fetch(&mut c, info).await.unwrap();
        assert!(
            table.contains("datafusion") && table.contains("| s "),
            "{table}"
        );
        assert!(table.contains("| t "), "{table}");
        assert!(table.contains("TABLE"), "{table}");
        assert!(
            !table.contains("information_schema"),
            "filtered by schema: {table}"
        );
        let info = c.get_catalogs().await.unwrap();
        assert!(fetch(&mut c, info).await.unwrap().contains("datafusion"));
        let info = c.get_table_types().await.unwrap();
        assert!(fetch(&mut c, info).await.unwrap().contains("VIEW"));
        let info = c
            .get_sql_info(vec![SqlInfo::FlightSqlServerName])
            .await
            .unwrap();
        assert!(fetch(&mut c, info).await.unwrap().contains("flowmesh"));
    }

    #[tokio::test]
    async fn open_prepared_statements_are_bounded() {
        let (addr, _cancel) = serve("").await;
        let mut c = client(addr).await;
        let mut first = c.prepare("SELECT 1".into(), None).await.unwrap();
        let _second = c.prepare("SELECT 2".into(), None).await.unwrap();
        let _third = c.prepare("SELECT 3".into(), None).await.unwrap();
        // the oldest was closed to make room
        let e = first.execute().await.unwrap_err();
        assert_eq!(code(e), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn a_token_is_required_when_configured() {
        let (addr, _cancel) = serve("t0ken").await;
        let mut c = client(addr).await;
        let e = c.execute("SELECT 1".into(), None).await.unwrap_err();
        assert_eq!(code(e), tonic::Code::Unauthenticated);
        let e = c.handshake("user", "wrong").await.unwrap_err().to_string();
        assert!(e.contains("flight_sql.token"), "{e}");
        // a handshake with the token as password sets the bearer header for later calls
        c.handshake("user", "t0ken").await.unwrap();
        let info = c.execute("SELECT 1 AS one".into(), None).await.unwrap();
        assert!(fetch(&mut c, info).await.unwrap().contains("| 1   |"));
    }
}
