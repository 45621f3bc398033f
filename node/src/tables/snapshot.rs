//! The `system.*` tables: read whole, at scan time, from the node's own state.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use datafusion::{
    arrow::{datatypes::SchemaRef, record_batch::RecordBatch},
    catalog::Session,
    common::{DataFusionError, Result as DfResult},
    datasource::{TableProvider, TableType, memory::MemorySourceConfig},
    physical_plan::ExecutionPlan,
    prelude::Expr,
};

type Read = dyn Fn() -> Result<RecordBatch, String> + Send + Sync;

/// A table whose rows `read` makes anew for every scan.
pub struct SnapshotTable {
    schema: SchemaRef,
    read: Arc<Read>,
}

impl SnapshotTable {
    pub fn new(
        schema: SchemaRef,
        read: impl Fn() -> Result<RecordBatch, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            schema,
            read: Arc::new(read),
        }
    }
}

impl fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = (self.read)().map_err(DataFusionError::Execution)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}
