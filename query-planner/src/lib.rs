//! flowmesh-query-planner: turns SQL into DataFusion plans over flowmesh's virtual tables.
//!
//! Main type: [`QueryEngine`], a DataFusion session whose catalog holds the node's tables
//! under their DeepFlow-style schemas (`flow_log.l7_flow_log`, `flow_metrics.application`,
//! ...). Invariants: SQL from the API is read-only (no DDL, DML or session statements);
//! query memory is bounded by one pool per engine; every error maps to a client-visible
//! class ([`QueryError`]); tag columns are stored as dictionary ids and rewritten so users
//! see strings ([`tags`]). Later issues add PromQL and federated splitting.

mod error;
pub mod tags;

use std::sync::Arc;

use datafusion::{
    arrow::{datatypes::SchemaRef, record_batch::RecordBatch},
    catalog::{MemorySchemaProvider, TableProvider},
    common::TableReference,
    execution::{memory_pool::FairSpillPool, runtime_env::RuntimeEnvBuilder},
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

/// A read-only SQL engine over a set of tables.
pub struct QueryEngine {
    ctx: SessionContext,
    tags: Option<TagRewriter>,
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
        Ok(Self { ctx, tags: None })
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
        let options = datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let mut df = self
            .ctx
            .sql_with_options(sql, options)
            .await
            .map_err(QueryError::from)?;
        if let Some(tags) = &self.tags {
            let (state, plan) = df.into_parts();
            let plan = tags.rewrite(plan).map_err(QueryError::from)?;
            df = datafusion::dataframe::DataFrame::new(state, plan);
        }
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(QueryError::from)?;
        Ok(QueryOutput { schema, batches })
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
}
