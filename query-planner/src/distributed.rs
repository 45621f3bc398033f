//! Splitting a query into per-node fragments and a merge (DESIGN.md §6).
//!
//! The split works on the string-level logical plan, before tag ids are swapped in: a node's
//! ids are its region's, so what crosses nodes is SQL text and decoded rows, never ids
//! (docs/decisions/0005). Each maximal subtree that reads one distributed table through
//! filters and projections only becomes a [`Fragment`]:
//! - with an aggregate on top whose functions decompose (`count`, `sum`, `min`, `max`,
//!   `avg`, without DISTINCT, FILTER or ORDER BY): the fragment computes the partial
//!   aggregate per node (`avg` as a sum and a count) and the coordinator merges the partials
//!   (`sum` of counts …);
//! - with a limit (and sort) on top: each node returns its first `skip + fetch` rows in that
//!   order, and the coordinator sorts and limits again;
//! - otherwise: each node returns the subtree's rows.
//!
//! A fragment's result has the same schema wherever it is computed, so running a fragment's
//! SQL as a distributed query of its own (a region's merger does) gives partials of the
//! same shape: merges nest node → region → global.
//!
//! A [`FragmentRunner`] (the node's mesh transport) runs fragment SQL on the nodes in scope.
//! Fragments are replaced by scans of [`FragmentTable`]s, which call the runner when the
//! plan executes; everything above them runs on the coordinator.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use datafusion::{
    arrow::{
        compute::cast,
        datatypes::{Field, Schema, SchemaRef},
        record_batch::RecordBatch,
    },
    catalog::{Session, TableProvider},
    common::{
        Column, DFSchemaRef, Result as DfResult, TableReference,
        tree_node::{Transformed, TreeNode, TreeNodeRecursion},
    },
    datasource::{memory::MemorySourceConfig, provider_as_source},
    error::DataFusionError,
    functions_aggregate::expr_fn::{count, max, min, sum},
    logical_expr::{
        Aggregate, Expr, FetchType, Limit, LogicalPlan, LogicalPlanBuilder, SkipType, Sort,
        TableType, expr::AggregateFunction, lit,
    },
    physical_plan::ExecutionPlan,
    prelude::{cast as cast_expr, coalesce, col},
    sql::unparser::plan_to_sql,
};

use crate::QueryError;

/// A piece of a query that runs on every node in scope.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// The SQL each node runs over its own shard (with its own dictionary).
    pub sql: String,
    /// The schema of its result (every field nullable; columns `g0…`, `p0…` or `c0…`).
    pub schema: SchemaRef,
    /// The regions its rows can come from, when its filters name them (`region = 'x'`,
    /// `region IN (…)`): nodes of other regions hold no matching row.
    pub regions: Option<Vec<String>>,
    /// The same for `cluster`.
    pub clusters: Option<Vec<String>>,
}

/// The string values a filter of `plan` allows for `column` (`column = 'x'` or
/// `column IN ('x', …)`, as a conjunct of a filter), or `None` when it does not limit it.
fn allowed_values(plan: &LogicalPlan, column: &str) -> Option<Vec<String>> {
    let mut allowed: Option<Vec<String>> = None;
    let _ = plan.apply(|node| {
        let predicates: Vec<&Expr> = match node {
            LogicalPlan::Filter(f) => vec![&f.predicate],
            LogicalPlan::TableScan(t) => t.filters.iter().collect(),
            _ => vec![],
        };
        for predicate in predicates {
            for conjunct in datafusion::logical_expr::utils::split_conjunction(predicate) {
                if let Some(values) = equality_values(conjunct, column) {
                    allowed = Some(match allowed.take() {
                        // two conjuncts on the column: only values both allow
                        Some(prev) => prev.into_iter().filter(|v| values.contains(v)).collect(),
                        None => values,
                    });
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    allowed
}

fn equality_values(expr: &Expr, column: &str) -> Option<Vec<String>> {
    let is_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
    let string = |e: &Expr| match e {
        Expr::Literal(datafusion::common::ScalarValue::Utf8(Some(v)), _) => Some(v.clone()),
        _ => None,
    };
    match expr {
        Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::Eq => {
            if is_column(&b.left) {
                string(&b.right).map(|v| vec![v])
            } else if is_column(&b.right) {
                string(&b.left).map(|v| vec![v])
            } else {
                None
            }
        }
        Expr::InList(list) if !list.negated && is_column(&list.expr) => {
            list.list.iter().map(string).collect()
        }
        _ => None,
    }
}

/// Runs fragments on the nodes of a query's scope; implemented by the node's mesh.
#[async_trait]
pub trait FragmentRunner: Send + Sync + fmt::Debug {
    /// Every node's rows of `fragment`, concatenated. An unreachable node either makes the
    /// runner record the answer as partial or fails the query (strict), as the runner's
    /// scope says.
    async fn run(&self, fragment: &Fragment) -> Result<Vec<RecordBatch>, QueryError>;
}

/// The tables a plan may distribute: those in these schemas (`flow_log`, `flow_metrics` …).
#[derive(Debug, Clone, Default)]
pub struct DistributedTables {
    schemas: Vec<String>,
}

impl DistributedTables {
    pub fn new<S: Into<String>>(schemas: impl IntoIterator<Item = S>) -> Self {
        Self {
            schemas: schemas.into_iter().map(Into::into).collect(),
        }
    }

    fn contains(&self, table: &TableReference) -> bool {
        table
            .schema()
            .is_some_and(|s| self.schemas.iter().any(|d| d == s))
    }
}

/// Replaces every fragment of `plan` by a scan of a [`FragmentTable`]; returns the new plan
/// and the fragments (none: the plan reads no distributed table and runs as it is).
pub fn split(
    plan: LogicalPlan,
    tables: &DistributedTables,
    runner: &Arc<dyn FragmentRunner>,
) -> Result<(LogicalPlan, Vec<Fragment>), QueryError> {
    let mut fragments = Vec::new();
    let plan = distribute(plan, tables, runner, &mut fragments)?;
    check_all_distributed(&plan, tables)?;
    // parents keep the schemas of the subtrees they had; fragments' scans are all-nullable
    let plan = plan
        .transform_up(|p| p.recompute_schema().map(Transformed::yes))
        .map_err(QueryError::from)?
        .data;
    Ok((plan, fragments))
}

fn distribute(
    plan: LogicalPlan,
    tables: &DistributedTables,
    runner: &Arc<dyn FragmentRunner>,
    fragments: &mut Vec<Fragment>,
) -> Result<LogicalPlan, QueryError> {
    match &plan {
        LogicalPlan::Limit(limit) => {
            if let Some(replaced) = split_limit(limit, tables, runner, fragments)? {
                return Ok(replaced);
            }
        }
        LogicalPlan::Aggregate(aggregate) if is_fragment(&aggregate.input, tables) => {
            return split_aggregate(aggregate, runner, fragments);
        }
        _ => {}
    }
    if is_fragment(&plan, tables) {
        return rows_fragment(&plan, &plan, runner, fragments);
    }
    // children, and the plans of subqueries in this node's expressions
    let plan = plan
        .map_children(|child| {
            distribute(child, tables, runner, fragments)
                .map(Transformed::yes)
                .map_err(DataFusionError::from)
        })?
        .data;
    Ok(plan
        .map_subqueries(|sub| {
            distribute(sub, tables, runner, fragments)
                .map(Transformed::yes)
                .map_err(DataFusionError::from)
        })?
        .data)
}

/// Fails when a distributed table is still read directly: it would answer from this node's
/// shard alone.
fn check_all_distributed(plan: &LogicalPlan, tables: &DistributedTables) -> Result<(), QueryError> {
    let mut left = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && tables.contains(&scan.table_name)
        {
            left = Some(scan.table_name.to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match left {
        Some(table) => Err(QueryError::Invalid(format!(
            "cannot run this query over the mesh: {table} is read in a way that does not split \
             into per-node fragments; run it with scope=node"
        ))),
        None => Ok(()),
    }
}

/// Whether `plan` reads exactly one distributed table through filters, projections and
/// aliases only, with no subqueries.
fn is_fragment(plan: &LogicalPlan, tables: &DistributedTables) -> bool {
    let mut scans = 0usize;
    let mut local = true;
    let _ = plan.apply(|node| {
        match node {
            LogicalPlan::TableScan(scan) if tables.contains(&scan.table_name) => scans += 1,
            LogicalPlan::Filter(_) | LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) => {
            }
            _ => local = false,
        }
        if local && node.expressions().iter().any(has_subquery) {
            local = false;
        }
        Ok(if local {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    local && scans == 1
}

fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// `LIMIT n` over a fragment, or over `ORDER BY` over one: every node returns its first
/// `skip + n` rows; the limit (and sort) stay above to pick among them.
fn split_limit(
    limit: &Limit,
    tables: &DistributedTables,
    runner: &Arc<dyn FragmentRunner>,
    fragments: &mut Vec<Fragment>,
) -> Result<Option<LogicalPlan>, QueryError> {
    let (Ok(skip), Ok(fetch)) = (limit.get_skip_type(), limit.get_fetch_type()) else {
        return Ok(None);
    };
    let (SkipType::Literal(skip), FetchType::Literal(Some(fetch))) = (skip, fetch) else {
        return Ok(None);
    };
    let keep = skip.saturating_add(fetch);
    let input = limit.input.as_ref();
    if is_fragment(input, tables) {
        let shipped = LogicalPlanBuilder::from(input.clone())
            .limit(0, Some(keep))?
            .build()?;
        let replaced = rows_fragment(&shipped, input, runner, fragments)?;
        return Ok(Some(
            LogicalPlanBuilder::from(replaced)
                .limit(skip, Some(fetch))?
                .build()?,
        ));
    }
    // ORDER BY (under projections) over a fragment: each node sorts and keeps `keep` rows
    let Some(sort) = sort_under_projections(input, tables) else {
        return Ok(None);
    };
    let shipped = LogicalPlanBuilder::from(sort.input.as_ref().clone())
        .sort(sort.expr.clone())?
        .limit(0, Some(keep))?
        .build()?;
    let replaced = rows_fragment(&shipped, &sort.input, runner, fragments)?;
    let above = replace_sort_input(input.clone(), replaced)?;
    Ok(Some(
        LogicalPlanBuilder::from(above)
            .limit(skip, Some(fetch))?
            .build()?,
    ))
}

fn sort_under_projections<'a>(
    plan: &'a LogicalPlan,
    tables: &DistributedTables,
) -> Option<&'a Sort> {
    match plan {
        LogicalPlan::Projection(p) => sort_under_projections(&p.input, tables),
        LogicalPlan::Sort(sort) if is_fragment(&sort.input, tables) => Some(sort),
        _ => None,
    }
}

/// `plan` (projections over a sort) with the sort's input replaced.
fn replace_sort_input(plan: LogicalPlan, input: LogicalPlan) -> Result<LogicalPlan, QueryError> {
    match plan {
        LogicalPlan::Projection(p) => {
            let below = replace_sort_input(Arc::unwrap_or_clone(p.input), input)?;
            Ok(LogicalPlanBuilder::from(below).project(p.expr)?.build()?)
        }
        LogicalPlan::Sort(sort) => Ok(LogicalPlanBuilder::from(input)
            .sort_with_limit(sort.expr, sort.fetch)?
            .build()?),
        other => Ok(other),
    }
}

/// Ships `shipped` (whose output columns are those of `replaced`), renaming its columns
/// `c0…`; returns what stands for `replaced` on the coordinator: the fragment's rows under
/// `replaced`'s column names.
fn rows_fragment(
    shipped: &LogicalPlan,
    replaced: &LogicalPlan,
    runner: &Arc<dyn FragmentRunner>,
    fragments: &mut Vec<Fragment>,
) -> Result<LogicalPlan, QueryError> {
    let schema = replaced.schema();
    let renamed: Vec<Expr> = schema
        .iter()
        .enumerate()
        .map(|(i, (q, f))| Expr::Column(Column::new(q.cloned(), f.name())).alias(format!("c{i}")))
        .collect();
    let shipped = LogicalPlanBuilder::from(shipped.clone())
        .project(renamed)
        .map_err(QueryError::from)?
        .build()?;
    let scan = fragment_scan(&shipped, runner, fragments)?;
    let restored: Vec<Expr> = schema
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            cast_expr(col(format!("c{i}")), f.data_type().clone())
                .alias_qualified(q.cloned(), f.name())
        })
        .collect();
    Ok(LogicalPlanBuilder::from(scan)
        .project(restored)
        .map_err(QueryError::from)?
        .build()?)
}

/// How one aggregate expression is computed from partials.
enum Merge {
    /// `sum` of the partial (counts; `coalesce`d to 0 so an empty input counts 0).
    Count(usize),
    /// The same function over the partials (`sum`, `min`, `max`).
    Same(&'static str, usize),
    /// `sum(sums) / sum(counts)`.
    Avg(usize, usize),
}

fn split_aggregate(
    aggregate: &Aggregate,
    runner: &Arc<dyn FragmentRunner>,
    fragments: &mut Vec<Fragment>,
) -> Result<LogicalPlan, QueryError> {
    // ROLLUP / CUBE / GROUPING SETS add a grouping id column: not decomposed here
    let grouping_sets = aggregate
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)));
    let decomposed = if grouping_sets {
        None
    } else {
        decompose(&aggregate.aggr_expr, &aggregate.schema)
    };
    let Some((partials, merges)) = decomposed else {
        // not decomposable: ship the rows, aggregate them here
        let input = rows_fragment(&aggregate.input, &aggregate.input, runner, fragments)?;
        let rebuilt = Aggregate::try_new(
            Arc::new(input),
            aggregate.group_expr.clone(),
            aggregate.aggr_expr.clone(),
        )?;
        return Ok(LogicalPlan::Aggregate(rebuilt));
    };
    // each node: GROUP BY the same keys, partial aggregates, renamed g0… p0…
    let partial_plan = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::clone(&aggregate.input),
        aggregate.group_expr.clone(),
        partials.clone(),
    )?);
    let groups = aggregate.group_expr.len();
    let renamed: Vec<Expr> = partial_plan
        .schema()
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            let name = if i < groups {
                format!("g{i}")
            } else {
                format!("p{}", i - groups)
            };
            Expr::Column(Column::new(q.cloned(), f.name())).alias(name)
        })
        .collect();
    let shipped = LogicalPlanBuilder::from(partial_plan)
        .project(renamed)
        .map_err(QueryError::from)?
        .build()?;
    let scan = fragment_scan(&shipped, runner, fragments)?;

    // here: GROUP BY g0… and merge the partials, then restore the aggregate's names and types
    let group_cols: Vec<Expr> = (0..groups).map(|i| col(format!("g{i}"))).collect();
    let mut merge_exprs = Vec::new();
    for (m, merge) in merges.iter().enumerate() {
        match merge {
            Merge::Count(p) => merge_exprs.push(sum(col(format!("p{p}"))).alias(format!("m{m}"))),
            Merge::Same(name, p) => {
                let column = col(format!("p{p}"));
                let e = match *name {
                    "min" => min(column),
                    "max" => max(column),
                    _ => sum(column),
                };
                merge_exprs.push(e.alias(format!("m{m}")));
            }
            Merge::Avg(s, c) => {
                merge_exprs.push(sum(col(format!("p{s}"))).alias(format!("m{m}_sum")));
                merge_exprs.push(sum(col(format!("p{c}"))).alias(format!("m{m}_count")));
            }
        }
    }
    let merged = LogicalPlanBuilder::from(scan)
        .aggregate(group_cols, merge_exprs)
        .map_err(QueryError::from)?
        .build()?;
    let out = aggregate.schema.as_ref();
    let mut restored = Vec::with_capacity(out.fields().len());
    for (i, (q, f)) in out.iter().enumerate() {
        let value = if i < groups {
            col(format!("g{i}"))
        } else {
            let m = i - groups;
            match &merges[m] {
                Merge::Count(_) => coalesce(vec![col(format!("m{m}")), lit(0i64)]),
                Merge::Same(..) => col(format!("m{m}")),
                Merge::Avg(..) => {
                    let f64_type = datafusion::arrow::datatypes::DataType::Float64;
                    cast_expr(col(format!("m{m}_sum")), f64_type.clone())
                        / cast_expr(col(format!("m{m}_count")), f64_type)
                }
            }
        };
        restored
            .push(cast_expr(value, f.data_type().clone()).alias_qualified(q.cloned(), f.name()));
    }
    Ok(LogicalPlanBuilder::from(merged)
        .project(restored)
        .map_err(QueryError::from)?
        .build()?)
}

/// The partial aggregates each node computes and how they merge, or `None` when a function
/// does not decompose.
fn decompose(aggr_expr: &[Expr], schema: &DFSchemaRef) -> Option<(Vec<Expr>, Vec<Merge>)> {
    let groups = schema.fields().len() - aggr_expr.len();
    let mut partials = Vec::new();
    let mut merges = Vec::new();
    for (i, expr) in aggr_expr.iter().enumerate() {
        let inner = match expr {
            Expr::Alias(alias) => alias.expr.as_ref(),
            e => e,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return None;
        };
        if params.distinct || params.filter.is_some() || !params.order_by.is_empty() {
            return None;
        }
        let p = partials.len();
        match func.name() {
            "count" => {
                partials.push(inner.clone().alias(format!("__p{p}")));
                merges.push(Merge::Count(p));
            }
            name @ ("sum" | "min" | "max") => {
                partials.push(inner.clone().alias(format!("__p{p}")));
                merges.push(Merge::Same(
                    match name {
                        "sum" => "sum",
                        "min" => "min",
                        _ => "max",
                    },
                    p,
                ));
            }
            "avg" => {
                // only where avg answers a Float64 (decimals keep their own arithmetic)
                let out = schema.field(groups + i).data_type();
                if *out != datafusion::arrow::datatypes::DataType::Float64 || params.args.len() != 1
                {
                    return None;
                }
                let arg = params.args[0].clone();
                partials.push(sum(arg.clone()).alias(format!("__p{p}")));
                partials.push(count(arg).alias(format!("__p{}", p + 1)));
                merges.push(Merge::Avg(p, p + 1));
            }
            _ => return None,
        }
    }
    Some((partials, merges))
}

/// Unparses `shipped` to SQL, records it as a fragment and returns a scan of it.
fn fragment_scan(
    shipped: &LogicalPlan,
    runner: &Arc<dyn FragmentRunner>,
    fragments: &mut Vec<Fragment>,
) -> Result<LogicalPlan, QueryError> {
    let sql = plan_to_sql(shipped)
        .map_err(|e| {
            QueryError::Invalid(format!(
                "cannot distribute this query: {}",
                e.strip_backtrace()
            ))
        })?
        .to_string();
    let fields: Vec<Field> = shipped
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let fragment = Fragment {
        sql,
        schema: Arc::new(Schema::new(fields)),
        regions: allowed_values(shipped, "region"),
        clusters: allowed_values(shipped, "cluster"),
    };
    let table = Arc::new(FragmentTable {
        fragment: fragment.clone(),
        runner: Arc::clone(runner),
    });
    let name = format!("__fragment_{}", fragments.len());
    fragments.push(fragment);
    Ok(
        LogicalPlanBuilder::scan(name, provider_as_source(table), None)
            .map_err(QueryError::from)?
            .build()?,
    )
}

/// A fragment's rows from every node in scope, fetched when the plan executes.
#[derive(Debug)]
pub struct FragmentTable {
    fragment: Fragment,
    runner: Arc<dyn FragmentRunner>,
}

#[async_trait]
impl TableProvider for FragmentTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.fragment.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = self
            .runner
            .run(&self.fragment)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let batches = batches
            .into_iter()
            .map(|b| conform(b, &self.fragment.schema))
            .collect::<DfResult<Vec<_>>>()?;
        let exec = MemorySourceConfig::try_new_exec(
            &[batches],
            Arc::clone(&self.fragment.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// A node's batch under the fragment's schema: same columns by position, cast where the
/// node's types differ (a decoded tag may come back as a dictionary).
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> DfResult<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(DataFusionError::Execution(format!(
            "a node answered a fragment with {} columns, expected {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                cast(c, f.data_type()).map_err(DataFusionError::from)
            }
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

impl From<QueryError> for DataFusionError {
    fn from(e: QueryError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}
