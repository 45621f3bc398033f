//! DataFusion access to a shard table: buffered rows plus the Parquet segments whose time
//! range can match the query's `time` filters.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use datafusion::{
    arrow::datatypes::SchemaRef,
    catalog::Session,
    common::{DFSchema, Result as DfResult, ScalarValue},
    datasource::{
        TableProvider, TableType,
        listing::PartitionedFile,
        memory::MemorySourceConfig,
        object_store::ObjectStoreUrl,
        physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource},
        source::DataSourceExec,
    },
    logical_expr::{
        Between, BinaryExpr, Operator, TableProviderFilterPushDown, utils::conjunction,
    },
    physical_plan::{ExecutionPlan, empty::EmptyExec, union::UnionExec},
    prelude::Expr,
};

use crate::{Shard, TableDef};

/// A table of the shard, as DataFusion sees it.
pub struct ShardTable {
    shard: Arc<Shard>,
    def: TableDef,
}

impl fmt::Debug for ShardTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardTable")
            .field("table", &self.def.name)
            .finish()
    }
}

impl ShardTable {
    pub fn new(shard: Arc<Shard>, def: TableDef) -> Self {
        Self { shard, def }
    }
}

/// Inclusive bounds on `time` (µs since the epoch) implied by a conjunction of filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub min_us: i64,
    pub max_us: i64,
}

impl Default for TimeRange {
    fn default() -> Self {
        Self {
            min_us: i64::MIN,
            max_us: i64::MAX,
        }
    }
}

impl TimeRange {
    /// Narrows the range by every filter it understands; others are ignored (they are
    /// applied after the scan anyway).
    pub fn from_filters(filters: &[Expr]) -> Self {
        let mut range = Self::default();
        for f in filters {
            range.narrow(f);
        }
        range
    }

    fn narrow(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                self.narrow(left);
                self.narrow(right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if let (true, Some(v)) = (is_time(left), literal_micros(right)) {
                    self.apply(*op, v);
                } else if let (Some(v), true, Some(op)) =
                    (literal_micros(left), is_time(right), op.swap())
                {
                    self.apply(op, v);
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_time(expr) => {
                if let (Some(lo), Some(hi)) = (literal_micros(low), literal_micros(high)) {
                    self.apply(Operator::GtEq, lo);
                    self.apply(Operator::LtEq, hi);
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, op: Operator, v: i64) {
        match op {
            Operator::Gt => self.min_us = self.min_us.max(v.saturating_add(1)),
            Operator::GtEq => self.min_us = self.min_us.max(v),
            Operator::Lt => self.max_us = self.max_us.min(v.saturating_sub(1)),
            Operator::LtEq => self.max_us = self.max_us.min(v),
            Operator::Eq => {
                self.min_us = self.min_us.max(v);
                self.max_us = self.max_us.min(v);
            }
            _ => {}
        }
    }

    pub fn overlaps(&self, min_us: i64, max_us: i64) -> bool {
        max_us >= self.min_us && min_us <= self.max_us
    }
}

fn is_time(expr: &Expr) -> bool {
    match expr {
        Expr::Column(c) => c.name == "time",
        Expr::Cast(c) => is_time(&c.expr),
        _ => false,
    }
}

fn literal_micros(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(*v),
        // round outwards so that pruning never drops a matching row
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000)),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for ShardTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.def.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters prune segments and row groups but are always re-applied above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let snapshot = self.shard.snapshot(&self.def.name);
        let range = TimeRange::from_filters(filters);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        let files: Vec<PartitionedFile> = snapshot
            .segments
            .iter()
            .filter(|m| range.overlaps(m.min_time_us, m.max_time_us))
            .map(|m| {
                let path = self.shard.data_dir().join(&m.path);
                PartitionedFile::new(path.to_string_lossy().into_owned(), m.bytes)
            })
            .collect();
        if !files.is_empty() {
            let mut source = ParquetSource::new(Arc::clone(&schema));
            if let Some(predicate) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
            let config =
                FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                    .with_projection_indices(projection.cloned())?
                    .with_file_group(FileGroup::new(files))
                    .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        if !snapshot.buffered.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[snapshot.buffered],
                Arc::clone(&schema),
                projection.cloned(),
            )?);
        }
        if inputs.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}
