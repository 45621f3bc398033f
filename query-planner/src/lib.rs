//! flowmesh-query-planner: turns SQL into DataFusion plans over flowmesh's virtual tables.
//!
//! Main type: [`QueryEngine`], a DataFusion session whose catalog holds the node's tables
//! under their DeepFlow-style schemas (`flow_log.l7_flow_log`, `flow_metrics.application`,
//! ...). Invariants: SQL from the API is read-only (no DDL, DML or session statements);
//! query memory is bounded by one pool per engine; every error maps to a client-visible
//! class ([`QueryError`]); tag columns are stored as dictionary ids and rewritten so users
//! see strings ([`tags`]); queries over the mesh are split into per-node SQL fragments
//! ([`distributed`]).

pub mod distributed;
mod error;
pub mod labels;
pub mod tags;

use std::sync::Arc;

use datafusion::{
    arrow::{
        datatypes::{DataType, Field, Schema, SchemaRef},
        record_batch::RecordBatch,
    },
    catalog::{MemorySchemaProvider, TableProvider},
    common::{ScalarValue, TableReference},
    execution::{memory_pool::FairSpillPool, runtime_env::RuntimeEnvBuilder},
    logical_expr::LogicalPlan,
    prelude::{SessionConfig, SessionContext},
};
pub use error::QueryError;
use tags::{TagDictionary, TagRewriter};

/// Limits of the query engine.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Memory all running queries may hold together, in bytes.
    pub memory_limit_bytes: usize,
    /// Parallelism of one query.
    pub target_partitions: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 1 << 30,
            target_partitions: 2,
        }
    }
}

/// The result of a query: its schema (also when there are no rows) and its batches.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A statement's result schema and its positional parameters (`$1` as field `$1`, …; type
/// `Null` where the planner could not infer one).
#[derive(Debug, Clone)]
pub struct StatementShape {
    pub schema: SchemaRef,
    pub parameters: SchemaRef,
}

/// The `$n` placeholders of a plan in order, typed as inferred from their context.
fn parameter_fields(plan: &LogicalPlan) -> Result<Vec<Field>, QueryError> {
    let mut found: Vec<(usize, Field)> = Vec::new();
    for (name, field) in plan.get_parameter_fields().map_err(QueryError::from)? {
        let position = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                QueryError::Invalid(format!("placeholder {name} is not positional ($1, $2, …)"))
            })?;
        let data_type = field.map_or(DataType::Null, |f| f.data_type().clone());
        found.push((position, Field::new(name, data_type, true)));
    }
    found.sort_by_key(|(n, _)| *n);
    if let Some((i, (n, _))) = found.iter().enumerate().find(|(i, (n, _))| *n != i + 1) {
        return Err(QueryError::Invalid(format!(
            "placeholder ${} is missing (found ${n} at position {})",
            i + 1,
            i + 1
        )));
    }
    Ok(found.into_iter().map(|(_, f)| f).collect())
}

/// A read-only SQL engine over a set of tables.
pub struct QueryEngine {
    ctx: SessionContext,
    tags: Option<TagRewriter>,
    distributed: distributed::DistributedTables,
}

impl QueryEngine {
    /// Builds an engine over `tables`, each named `schema.table`.
    pub fn new(
        tables: Vec<(String, Arc<dyn TableProvider>)>,
        config: &QueryConfig,
    ) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(config.memory_limit_bytes)))
            .build_arc()
            .map_err(QueryError::from)?;
        let session = SessionConfig::new()
            .with_target_partitions(config.target_partitions.max(1))
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(session, runtime);
        let catalog = ctx
            .catalog("datafusion")
            .ok_or_else(|| QueryError::Internal("default catalog missing".into()))?;
        for (name, provider) in tables {
            let (schema, table) = name.split_once('.').ok_or_else(|| {
                QueryError::Internal(format!("table name {name} is not schema.table"))
            })?;
            if catalog.schema(schema).is_none() {
                catalog
                    .register_schema(schema, Arc::new(MemorySchemaProvider::new()))
                    .map_err(QueryError::from)?;
            }
            // tag columns are planned as strings and rewritten to ids (tags.rs)
            let provider: Arc<dyn TableProvider> = if tags::has_tags(&provider.schema()) {
                Arc::new(tags::EncodedTable::new(provider))
            } else {
                provider
            };
            ctx.register_table(TableReference::partial(schema, table), provider)
                .map_err(QueryError::from)?;
        }
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
            labels::LabelValue::default(),
        ));
        Ok(Self {
            ctx,
            tags: None,
            distributed: distributed::DistributedTables::default(),
        })
    }

    /// Tables of these schemas are sharded over the mesh: [`QueryEngine::sql_distributed`]
    /// splits queries that read them into per-node fragments.
    pub fn with_distributed_schemas<S: Into<String>>(
        mut self,
        schemas: impl IntoIterator<Item = S>,
    ) -> Self {
        self.distributed = distributed::DistributedTables::new(schemas);
        self
    }

    /// Plans one read-only statement over the tables of every node `runner` reaches: each
    /// fragment (distributed.rs) runs on the nodes through `runner`, the rest here. Returns
    /// the answer and the fragments' SQL (none: the statement read no distributed table and
    /// ran here alone).
    pub async fn sql_distributed(
        &self,
        sql: &str,
        runner: Arc<dyn distributed::FragmentRunner>,
    ) -> Result<(QueryOutput, Vec<distributed::Fragment>), QueryError> {
        let df = self.plan(sql).await?;
        if !parameter_fields(df.logical_plan())?.is_empty() {
            return Err(QueryError::Invalid(
                "a query over the mesh takes no $n parameters".into(),
            ));
        }
        let (state, plan) = df.into_parts();
        let (plan, fragments) = distributed::split(plan, &self.distributed, &runner)?;
        let df = self.rewrite_tags(datafusion::dataframe::DataFrame::new(state, plan))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(QueryError::from)?;
        Ok((QueryOutput { schema, batches }, fragments))
    }

    /// Decodes and rewrites tag columns (fields marked by [`tags::tag_field`]) through
    /// `dictionary`, and registers `tag_decode(id, kind)` for users who ask for ids.
    pub fn with_tags(mut self, dictionary: Arc<dyn TagDictionary>) -> Self {
        let rewriter = TagRewriter::new(dictionary);
        for udf in rewriter.udfs() {
            self.ctx.register_udf(udf.as_ref().clone());
        }
        self.tags = Some(rewriter);
        self
    }

    /// Plans and runs one read-only statement.
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput, QueryError> {
        self.sql_with_params(sql, Vec::new()).await
    }

    /// Plans and runs one read-only statement whose `$1`, `$2` … placeholders take `params`
    /// (in order). A value is cast to the type its placeholder was inferred to have, so a
    /// client's Int64 fits a UInt16 column.
    pub async fn sql_with_params(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryOutput, QueryError> {
        let mut df = self.plan(sql).await?;
        let expected = parameter_fields(df.logical_plan())?;
        if !params.is_empty() || !expected.is_empty() {
            if params.len() != expected.len() {
                return Err(QueryError::Invalid(format!(
                    "the statement has {} parameter(s), {} given",
                    expected.len(),
                    params.len()
                )));
            }
            let mut values = Vec::with_capacity(params.len());
            for (i, (value, field)) in params.into_iter().zip(&expected).enumerate() {
                let value = match field.data_type() {
                    DataType::Null => value,
                    t if value.data_type() == *t => value,
                    t => value.cast_to(t).map_err(|e| {
                        QueryError::Invalid(format!(
                            "parameter ${}: {}",
                            i + 1,
                            e.strip_backtrace()
                        ))
                    })?,
                };
                values.push(value);
            }
            df = df.with_param_values(values).map_err(QueryError::from)?;
        }
        let df = self.rewrite_tags(df)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(QueryError::from)?;
        Ok(QueryOutput { schema, batches })
    }

    fn rewrite_tags(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame, QueryError> {
        let Some(tags) = &self.tags else {
            return Ok(df);
        };
        let (state, plan) = df.into_parts();
        let plan = tags.rewrite(plan).map_err(QueryError::from)?;
        Ok(datafusion::dataframe::DataFrame::new(state, plan))
    }

    /// What a statement would return and which parameters it takes, without running it.
    pub async fn describe(&self, sql: &str) -> Result<StatementShape, QueryError> {
        let df = self.plan(sql).await?;
        let parameters = parameter_fields(df.logical_plan())?;
        // the schema a run reports: tag columns decoded by the rewrite are nullable
        let df = self.rewrite_tags(df)?;
        Ok(StatementShape {
            schema: Arc::new(df.schema().as_arrow().clone()),
            parameters: Arc::new(Schema::new(parameters)),
        })
    }

    async fn plan(&self, sql: &str) -> Result<datafusion::dataframe::DataFrame, QueryError> {
        let options = datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(QueryError::from)?;
        labels::rewrite_label_columns(&mut statement);
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(QueryError::from)?;
        options.verify_plan(&plan).map_err(QueryError::from)?;
        self.ctx
            .execute_logical_plan(plan)
            .await
            .map_err(QueryError::from)
    }

    /// The underlying session, for callers that register more tables or functions.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }
}

#[cfg(test)]
mod tests {
    use datafusion::{
        arrow::{
            array::Int64Array,
            datatypes::{DataType, Field, Schema},
        },
        datasource::MemTable,
    };

    use super::*;

    fn engine() -> QueryEngine {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        QueryEngine::new(
            vec![("flow_log.t".into(), Arc::new(table))],
            &QueryConfig::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn qualified_tables_answer_queries() {
        let out = engine()
            .sql("SELECT sum(v) AS s FROM flow_log.t")
            .await
            .unwrap();
        assert_eq!(out.num_rows(), 1);
        let col = out.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(col.value(0), 6);
    }

    #[tokio::test]
    async fn writes_and_ddl_are_refused_as_client_errors() {
        let e = engine();
        for sql in [
            "CREATE TABLE x (a INT)",
            "INSERT INTO flow_log.t VALUES (4)",
            "DROP TABLE flow_log.t",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let err = e.sql(sql).await.unwrap_err();
            assert!(err.is_client_error(), "{sql}: {err:?}");
        }
        assert_eq!(
            e.sql("SELECT count(*) FROM flow_log.t")
                .await
                .unwrap()
                .num_rows(),
            1
        );
    }

    #[tokio::test]
    async fn bad_sql_is_a_client_error_with_the_planner_message() {
        let err = engine()
            .sql("SELECT nope FROM flow_log.t")
            .await
            .unwrap_err();
        assert!(err.is_client_error());
        assert!(err.to_string().contains("nope"), "{err}");
        let err = engine().sql("SELEC 1").await.unwrap_err();
        assert!(err.is_client_error(), "{err:?}");
    }

    #[tokio::test]
    async fn parameters_are_described_cast_and_checked() {
        let e = engine();
        let shape = e
            .describe("SELECT v FROM flow_log.t WHERE v > $1 AND v < $2")
            .await
            .unwrap();
        assert_eq!(shape.schema.field(0).name(), "v");
        let params: Vec<_> = shape
            .parameters
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(
            params,
            vec![
                ("$1".to_string(), DataType::Int64),
                ("$2".to_string(), DataType::Int64)
            ]
        );
        // an Int32 and a numeric string are cast to the inferred Int64
        let out = e
            .sql_with_params(
                "SELECT v FROM flow_log.t WHERE v > $1 AND v < $2",
                vec![ScalarValue::Int32(Some(1)), ScalarValue::from("3")],
            )
            .await
            .unwrap();
        let col = out.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(col.values().to_vec(), vec![2]);
        for (sql, params, needle) in [
            (
                "SELECT v FROM flow_log.t WHERE v > $1",
                vec![],
                "1 parameter(s), 0 given",
            ),
            (
                "SELECT v FROM flow_log.t WHERE v > $1",
                vec![ScalarValue::from("x")],
                "parameter $1",
            ),
            (
                "SELECT v FROM flow_log.t WHERE v > $2",
                vec![],
                "$1 is missing",
            ),
            (
                "SELECT v FROM flow_log.t",
                vec![ScalarValue::Int64(Some(1))],
                "0 parameter(s), 1 given",
            ),
        ] {
            let err = e.sql_with_params(sql, params).await.unwrap_err();
            assert!(err.is_client_error(), "{sql}: {err:?}");
            assert!(err.to_string().contains(needle), "{sql}: {err}");
        }
    }
}
