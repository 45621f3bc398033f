//! Tag columns stored as dictionary ids and shown as strings (DESIGN.md §5).
//!
//! A table marks a tag column as `UInt32` with the field metadata [`TAG_KIND_KEY`] = the
//! dictionary kind. DataFusion carries field metadata through column references, aliases
//! and group keys, so at any node of a plan a column "is a tag of kind k" exactly when its
//! field says so. [`TagRewriter`] rewrites a plan before it is analyzed:
//!
//! - `tag = 'x'`, `tag <> 'x'`, `tag IN ('x', …)` compare ids: the literal is looked up in
//!   the local replica, never interned, and an unknown literal matches nothing;
//! - `tag = tag` (same kind), `tag IS [NOT] NULL`, `count([DISTINCT] tag)`, group keys,
//!   join keys and plain projections keep ids;
//! - every other use of a tag (LIKE, ordering, functions, `min`, comparisons with other
//!   kinds …) sees the decoded string through [`TAG_DECODE`];
//! - the plan's output is decoded at the very end, after aggregation, sorting and limits,
//!   so only result rows pay for strings. Union inputs and subqueries are decoded at their
//!   own roots, so ids of different kinds never meet.
//!
//! The result: the same SQL gives the same answers as over string columns.

use std::{collections::HashMap, fmt::Debug, sync::Arc};

use async_trait::async_trait;
use datafusion::{
    arrow::{
        array::{AsArray, StringBuilder, UInt32Array},
        datatypes::{DataType, Field, FieldRef, Int64Type, Schema, SchemaRef, UInt32Type},
    },
    catalog::{Session, TableProvider},
    common::{
        Column, DFSchema, Result, ScalarValue, internal_err,
        tree_node::{Transformed, TreeNode, TreeNodeRecursion},
    },
    datasource::{provider_as_source, source_as_provider},
    logical_expr::{
        Aggregate, BinaryExpr, ColumnarValue, Expr, Filter, LogicalPlan, Operator, Projection,
        ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Sort, TableType,
        Volatility,
        expr::{AggregateFunction, Exists, InList, InSubquery, Sort as SortExpr},
        expr_rewriter::NamePreserver,
        logical_plan::{Explain, Join, Subquery, TableScan, TableScanBuilder, Union},
    },
    physical_plan::ExecutionPlan,
};

/// Field metadata key naming a tag column's dictionary kind.
pub const TAG_KIND_KEY: &str = "flowmesh.tag_kind";
/// Name of the decoding function: `tag_decode(id, 'kind')`.
pub const TAG_DECODE: &str = "tag_decode";

/// The dictionary the planner reads. Local only: nothing here may create ids.
pub trait TagDictionary: Send + Sync + Debug {
    /// The id of `value` in `kind`, if the dictionary has one.
    fn lookup(&self, kind: &str, value: &str) -> Option<u32>;
    /// The string of `id` in `kind`, if the dictionary has it.
    fn decode(&self, kind: &str, id: u32) -> Option<Arc<str>>;
    /// The versions of one attribute of a resource, `(valid_from_us, attribute id)` in
    /// time order (resource tables, DESIGN.md §5). Empty when the resource is unknown.
    fn attribute_versions(&self, resource_kind: &str, id: u32, attribute: &str) -> Vec<(i64, u32)> {
        let _ = (resource_kind, id, attribute);
        Vec::new()
    }
}

/// Name of the function that derives a tag from a resource: `tag_derive(resource id,
/// time, 'resource kind', 'attribute kind')`, an id of the attribute's kind.
pub const TAG_DERIVE: &str = "tag_derive";

/// A column users see but rows do not store: an attribute of the resource another column
/// identifies (e.g. `auto_service_1` from the server process `gprocess_id_1`), as it was
/// at the row's `time`.
///
/// With `via`, the attribute belongs to a resource further along a chain: each kind in
/// `via` is an attribute of the resource before it and names the next resource (e.g.
/// `pod_ns_1`: process → its `container_id` → that container's `k8s_pod` → the pod's
/// `pod_ns`). Every hop takes the version in force at the row's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedTag {
    /// The column's name.
    pub name: String,
    /// The attribute's dictionary kind (the column's tag kind).
    pub kind: String,
    /// The stored tag column holding the resource's id.
    pub resource_column: String,
    /// Resource kinds hopped through between the stored resource and the attribute.
    pub via: Vec<String>,
}

/// A tag column: `UInt32` ids of `kind`.
pub fn tag_field(name: &str, kind: &str, nullable: bool) -> Field {
    Field::new(name, DataType::UInt32, nullable).with_metadata(HashMap::from([(
        TAG_KIND_KEY.to_string(),
        kind.to_string(),
    )]))
}

/// The dictionary kind of a tag column's field, while it holds ids.
pub fn tag_kind(field: &Field) -> Option<&str> {
    if field.data_type() != &DataType::UInt32 {
        return None;
    }
    field.metadata().get(TAG_KIND_KEY).map(String::as_str)
}

/// Whether a stored schema has tag columns.
pub fn has_tags(schema: &Schema) -> bool {
    schema.fields().iter().any(|f| tag_kind(f).is_some())
}

/// What the SQL planner sees of a table with tag columns: the same columns, tags as
/// strings (still marked with their kind). [`TagRewriter`] swaps the stored table back in
/// before the plan runs, so this table itself is never scanned.
#[derive(Debug)]
pub struct EncodedTable {
    stored: Arc<dyn TableProvider>,
    shown: SchemaRef,
    /// Shown after the stored columns, in this order.
    derived: Vec<DerivedTag>,
}

impl EncodedTable {
    pub fn new(stored: Arc<dyn TableProvider>) -> Self {
        Self::with_derived(stored, Vec::new())
    }

    /// A table that also shows `derived` columns (needs a `time` column and each
    /// derived tag's resource column among the stored tags).
    pub fn with_derived(stored: Arc<dyn TableProvider>, derived: Vec<DerivedTag>) -> Self {
        let schema = stored.schema();
        let mut fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match tag_kind(f) {
                Some(_) => f.as_ref().clone().with_data_type(DataType::Utf8),
                None => f.as_ref().clone(),
            })
            .collect();
        fields.extend(
            derived
                .iter()
                .map(|d| tag_field(&d.name, &d.kind, true).with_data_type(DataType::Utf8)),
        );
        let shown = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        Self {
            stored,
            shown,
            derived,
        }
    }
}

#[async_trait]
impl TableProvider for EncodedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.shown)
    }
    fn table_type(&self) -> TableType {
        self.stored.table_type()
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        internal_err!("a table with tag columns was planned without the tag rewrite")
    }
}

/// The dictionary a function reads, equal to another only when it is the same one (what
/// DataFusion needs to tell two functions of the same name apart).
#[derive(Debug, Clone)]
struct SharedDictionary(Arc<dyn TagDictionary>);

impl PartialEq for SharedDictionary {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for SharedDictionary {}
impl std::hash::Hash for SharedDictionary {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0).cast::<()>(), state)
    }
}

impl std::ops::Deref for SharedDictionary {
    type Target = dyn TagDictionary;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

/// `tag_decode(id UInt32, kind Utf8) → Utf8`: the string of each id; NULL for NULL ids and
/// for ids this replica does not know yet.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TagDecode {
    dictionary: SharedDictionary,
    signature: Signature,
}

impl TagDecode {
    pub fn new(dictionary: Arc<dyn TagDictionary>) -> Self {
        Self {
            dictionary: SharedDictionary(dictionary),
            signature: Signature::exact(vec![DataType::UInt32, DataType::Utf8], Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for TagDecode {
    fn name(&self) -> &str {
        TAG_DECODE
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [ids, kind] = args.args.as_slice() else {
            return datafusion::common::plan_err!("{TAG_DECODE} takes (id, kind)");
        };
        let ColumnarValue::Scalar(kind) = kind else {
            return datafusion::common::plan_err!("{TAG_DECODE}: kind must be a literal");
        };
        let Some(kind) = scalar_string(Some(kind)) else {
            return datafusion::common::plan_err!("{TAG_DECODE}: kind must be a string");
        };
        let ids = ids.to_array(args.number_rows)?;
        let ids = ids.as_primitive::<UInt32Type>();
        // rows repeat a few ids: decode each distinct id once per batch
        let mut memo: HashMap<u32, Option<Arc<str>>> = HashMap::new();
        let mut out = StringBuilder::with_capacity(ids.len(), ids.len() * 8);
        for id in ids.iter() {
            match id {
                None => out.append_null(),
                Some(id) => match memo
                    .entry(id)
                    .or_insert_with(|| self.dictionary.decode(kind, id))
                {
                    Some(s) => out.append_value(s),
                    None => out.append_null(),
                },
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `tag_derive(resource UInt32, time, resource_kind, attribute_kind) → UInt32`: the id of
/// the resource's attribute in force at `time` (the first version for earlier times);
/// [`EMPTY`] for unknown resources, as rows store an empty tag.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TagDerive {
    dictionary: SharedDictionary,
    signature: Signature,
}

/// The id of the empty string in every kind.
pub const EMPTY: u32 = 0;

impl TagDerive {
    pub fn new(dictionary: Arc<dyn TagDictionary>) -> Self {
        Self {
            dictionary: SharedDictionary(dictionary),
            signature: Signature::any(4, Volatility::Stable),
        }
    }
}

/// The text of a string scalar, whichever string type it has.
fn scalar_string(value: Option<&ScalarValue>) -> Option<&str> {
    match value {
        Some(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => Some(s),
        _ => None,
    }
}

impl ScalarUDFImpl for TagDerive {
    fn name(&self) -> &str {
        TAG_DERIVE
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt32)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let kind = args
            .scalar_arguments
            .get(3)
            .and_then(|a| scalar_string(*a))
            .unwrap_or_default();
        Ok(Arc::new(tag_field(TAG_DERIVE, kind, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [ids, times, resource_kind, attribute] = args.args.as_slice() else {
            return datafusion::common::plan_err!("{TAG_DERIVE} takes 4 arguments");
        };
        let (ColumnarValue::Scalar(r), ColumnarValue::Scalar(a)) = (resource_kind, attribute)
        else {
            return datafusion::common::plan_err!("{TAG_DERIVE}: kinds must be literals");
        };
        let (Some(resource_kind), Some(attribute)) =
            (scalar_string(Some(r)), scalar_string(Some(a)))
        else {
            return datafusion::common::plan_err!("{TAG_DERIVE}: kinds must be strings");
        };
        let ids = ids.to_array(args.number_rows)?;
        let ids = ids.as_primitive::<UInt32Type>();
        let times = times.to_array(args.number_rows)?;
        let times = datafusion::arrow::compute::cast(&times, &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        // one lookup of each resource's versions per batch
        let mut memo: HashMap<u32, Vec<(i64, u32)>> = HashMap::new();
        let out: UInt32Array = ids
            .iter()
            .zip(times.iter())
            .map(|(id, time)| {
                let id = id?;
                if id == EMPTY {
                    return Some(EMPTY);
                }
                let versions = memo.entry(id).or_insert_with(|| {
                    self.dictionary
                        .attribute_versions(resource_kind, id, attribute)
                });
                let at = versions.partition_point(|(from, _)| *from <= time.unwrap_or(i64::MAX));
                Some(
                    versions
                        .get(at.saturating_sub(1))
                        .map_or(EMPTY, |(_, v)| *v),
                )
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Rewrites plans over tag columns; see the module docs.
#[derive(Debug, Clone)]
pub struct TagRewriter {
    dictionary: Arc<dyn TagDictionary>,
    decode: Arc<ScalarUDF>,
    derive: Arc<ScalarUDF>,
}

impl TagRewriter {
    pub fn new(dictionary: Arc<dyn TagDictionary>) -> Self {
        let decode = Arc::new(ScalarUDF::new_from_impl(TagDecode::new(Arc::clone(
            &dictionary,
        ))));
        let derive = Arc::new(ScalarUDF::new_from_impl(TagDerive::new(Arc::clone(
            &dictionary,
        ))));
        Self {
            dictionary,
            decode,
            derive,
        }
    }

    /// The functions the rewrite calls, for registering with a session.
    pub fn udfs(&self) -> [Arc<ScalarUDF>; 2] {
        [Arc::clone(&self.decode), Arc::clone(&self.derive)]
    }

    /// Rewrites a plan fresh from the SQL planner (before type coercion).
    pub fn rewrite(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        let plan = plan
            .transform_up(|node| self.rewrite_node(node).map(Transformed::yes))?
            .data;
        self.decode_outputs(plan)
    }

    fn decode_call(&self, expr: Expr, kind: &str) -> Expr {
        self.decode.call(vec![expr, utf8(kind.to_string())])
    }

    /// Wraps `plan` in a projection that decodes its tag columns, keeping their names.
    fn decode_outputs(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        let schema = Arc::clone(plan.schema());
        if !schema.fields().iter().any(|f| tag_kind(f).is_some()) {
            return Ok(plan);
        }
        let exprs = schema
            .iter()
            .map(|(qualifier, field)| {
                let column = Expr::Column(Column::from((qualifier, field)));
                match tag_kind(field) {
                    Some(kind) => self
                        .decode_call(column, kind)
                        .alias_qualified(qualifier.cloned(), field.name()),
                    None => column,
                }
            })
            .collect();
        Ok(LogicalPlan::Projection(Projection::try_new(
            exprs,
            Arc::new(plan),
        )?))
    }

    /// The tag kind of a column reference, if `expr` is one.
    fn kind_of(expr: &Expr, schema: &DFSchema) -> Option<String> {
        match expr {
            Expr::Column(c) => schema
                .qualified_field_from_column(c)
                .ok()
                .and_then(|(_, f)| tag_kind(f).map(str::to_string)),
            Expr::OuterReferenceColumn(f, _) => tag_kind(f).map(str::to_string),
            _ => None,
        }
    }

    /// `expr` where ids may stay ids: a plain column (possibly aliased) keeps them.
    fn rewrite_keyed(&self, expr: Expr, schema: &DFSchema) -> Result<Expr> {
        match &expr {
            Expr::Column(_) => Ok(expr),
            Expr::Alias(a) if matches!(*a.expr, Expr::Column(_)) => Ok(expr),
            _ => self.rewrite_value(expr, schema),
        }
    }

    /// `expr` in a context that needs values: tags compared with literals become id
    /// comparisons, every other tag reference is decoded.
    fn rewrite_value(&self, expr: Expr, schema: &DFSchema) -> Result<Expr> {
        Ok(expr
            .transform_down(|e| self.rewrite_value_node(e, schema))?
            .data)
    }

    fn rewrite_value_node(&self, expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
        let jump = |e: Expr| Ok(Transformed::new(e, true, TreeNodeRecursion::Jump));
        match expr {
            Expr::Column(_) | Expr::OuterReferenceColumn(..) => {
                match Self::kind_of(&expr, schema) {
                    Some(kind) => jump(self.decode_call(expr, &kind)),
                    None => Ok(Transformed::no(expr)),
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(op, Operator::Eq | Operator::NotEq) =>
            {
                let (lk, rk) = (Self::kind_of(&left, schema), Self::kind_of(&right, schema));
                match (lk, rk) {
                    // same dictionary: ids compare like their strings
                    (Some(a), Some(b)) if a == b => {
                        jump(Expr::BinaryExpr(BinaryExpr { left, op, right }))
                    }
                    (Some(kind), None) if string_literal(&right).is_some() => {
                        let value = string_literal(&right).unwrap_or_default();
                        jump(self.compare_literal(*left, op, &kind, value))
                    }
                    (None, Some(kind)) if string_literal(&left).is_some() => {
                        let value = string_literal(&left).unwrap_or_default();
                        jump(self.compare_literal(*right, op, &kind, value))
                    }
                    _ => Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                        left,
                        op,
                        right,
                    }))),
                }
            }
            Expr::InList(InList {
                expr: inner,
                list,
                negated,
            }) => match Self::kind_of(&inner, schema) {
                Some(kind) if list.iter().all(|e| string_literal(e).is_some()) => {
                    let ids: Vec<Expr> = list
                        .iter()
                        .filter_map(|e| self.dictionary.lookup(&kind, string_literal(e)?))
                        .map(|id| Expr::Literal(ScalarValue::UInt32(Some(id)), None))
                        .collect();
                    if ids.is_empty() {
                        // nothing known matches: IN is false, NOT IN is "has a value"
                        jump(if negated {
                            inner.is_not_null()
                        } else {
                            Expr::Literal(ScalarValue::Boolean(Some(false)), None)
                        })
                    } else {
                        jump(Expr::InList(InList::new(inner, ids, negated)))
                    }
                }
                _ => Ok(Transformed::no(Expr::InList(InList {
                    expr: inner,
                    list,
                    negated,
                }))),
            },
            Expr::IsNull(inner) if Self::kind_of(&inner, schema).is_some() => {
                jump(Expr::IsNull(inner))
            }
            Expr::IsNotNull(inner) if Self::kind_of(&inner, schema).is_some() => {
                jump(Expr::IsNotNull(inner))
            }
            Expr::AggregateFunction(agg) if counts_distinct_values(&agg, schema) => {
                jump(Expr::AggregateFunction(agg))
            }
            Expr::ScalarSubquery(sub) => jump(Expr::ScalarSubquery(self.rewrite_subquery(sub)?)),
            Expr::Exists(Exists { subquery, negated }) => jump(Expr::Exists(Exists {
                subquery: self.rewrite_subquery(subquery)?,
                negated,
            })),
            Expr::InSubquery(InSubquery {
                expr: inner,
                subquery,
                negated,
            }) => jump(Expr::InSubquery(InSubquery {
                expr: Box::new(self.rewrite_value(*inner, schema)?),
                subquery: self.rewrite_subquery(subquery)?,
                negated,
            })),
            other => Ok(Transformed::no(other)),
        }
    }

    fn compare_literal(&self, tag: Expr, op: Operator, kind: &str, value: &str) -> Expr {
        match (self.dictionary.lookup(kind, value), op) {
            (Some(id), _) => Expr::BinaryExpr(BinaryExpr::new(
                Box::new(tag),
                op,
                Box::new(Expr::Literal(ScalarValue::UInt32(Some(id)), None)),
            )),
            // an unknown string: no row has it
            (None, Operator::Eq) => Expr::Literal(ScalarValue::Boolean(Some(false)), None),
            (None, _) => tag.is_not_null(),
        }
    }

    fn rewrite_subquery(&self, sub: Subquery) -> Result<Subquery> {
        let plan = Arc::unwrap_or_clone(sub.subquery);
        Ok(Subquery {
            subquery: Arc::new(self.rewrite(plan)?),
            ..sub
        })
    }

    fn rewrite_node(&self, node: LogicalPlan) -> Result<LogicalPlan> {
        let rewritten = match node {
            LogicalPlan::Projection(p) => {
                let names = NamePreserver::new_for_projection();
                let exprs = p
                    .expr
                    .into_iter()
                    .map(|e| {
                        let saved = names.save(&e);
                        Ok(saved.restore(self.rewrite_keyed(e, p.input.schema())?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                LogicalPlan::Projection(Projection::try_new(exprs, p.input)?)
            }
            LogicalPlan::Filter(f) => {
                let predicate = self.rewrite_value(f.predicate, f.input.schema())?;
                LogicalPlan::Filter(Filter::try_new(predicate, f.input)?)
            }
            LogicalPlan::Aggregate(a) => {
                let schema = Arc::clone(a.input.schema());
                let names = NamePreserver::new_for_projection();
                let group = a
                    .group_expr
                    .into_iter()
                    .map(|e| {
                        let saved = names.save(&e);
                        Ok(saved.restore(self.rewrite_keyed(e, &schema)?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let aggr = a
                    .aggr_expr
                    .into_iter()
                    .map(|e| {
                        let saved = names.save(&e);
                        Ok(saved.restore(self.rewrite_value(e, &schema)?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                LogicalPlan::Aggregate(Aggregate::try_new(a.input, group, aggr)?)
            }
            LogicalPlan::Sort(s) => {
                let schema = Arc::clone(s.input.schema());
                let expr = s
                    .expr
                    .into_iter()
                    .map(|se| {
                        Ok(SortExpr {
                            expr: self.rewrite_value(se.expr, &schema)?,
                            ..se
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                LogicalPlan::Sort(Sort {
                    expr,
                    input: s.input,
                    fetch: s.fetch,
                })
            }
            LogicalPlan::TableScan(scan) => self.stored_scan(scan)?,
            LogicalPlan::Explain(e) => LogicalPlan::Explain(Explain {
                plan: Arc::new(self.decode_outputs(Arc::unwrap_or_clone(e.plan))?),
                ..e
            }),
            LogicalPlan::Join(j) => self.rewrite_join(j)?,
            LogicalPlan::Union(u) => {
                let inputs = u
                    .inputs
                    .into_iter()
                    .map(|i| Ok(Arc::new(self.decode_outputs(Arc::unwrap_or_clone(i))?)))
                    .collect::<Result<Vec<_>>>()?;
                LogicalPlan::Union(Union::try_new_with_loose_types(inputs)?)
            }
            other => {
                // every other node: its expressions need values
                let inputs: Vec<DFSchema> = other
                    .inputs()
                    .iter()
                    .map(|i| i.schema().as_ref().clone())
                    .collect();
                let merged = inputs
                    .into_iter()
                    .reduce(|mut a, b| {
                        a.merge(&b);
                        a
                    })
                    .unwrap_or_else(DFSchema::empty);
                let names = NamePreserver::new(&other);
                other
                    .map_expressions(|e| {
                        let saved = names.save(&e);
                        Ok(Transformed::yes(
                            saved.restore(self.rewrite_value(e, &merged)?),
                        ))
                    })?
                    .data
            }
        };
        rewritten.recompute_schema()
    }

    /// A scan of an [`EncodedTable`] becomes a scan of the stored table: ids from here up.
    /// Derived columns become `tag_derive(resource, time, …)` in a projection over it.
    fn stored_scan(&self, scan: TableScan) -> Result<LogicalPlan> {
        let table = match source_as_provider(&scan.source) {
            Ok(provider) => provider.downcast_ref::<EncodedTable>().map(|t| {
                (
                    Arc::clone(&t.stored),
                    t.derived.clone(),
                    Arc::clone(&t.shown),
                )
            }),
            Err(_) => None,
        };
        let Some((stored, derived, shown)) = table else {
            return Ok(LogicalPlan::TableScan(scan));
        };
        let stored_schema = stored.schema();
        let width = stored_schema.fields().len();
        let wanted: Vec<usize> = scan
            .projection
            .clone()
            .unwrap_or_else(|| (0..shown.fields().len()).collect());
        if wanted.iter().all(|&i| i < width) {
            return Ok(LogicalPlan::TableScan(
                TableScanBuilder::new(scan.table_name, provider_as_source(stored))
                    .with_projection(scan.projection)
                    .with_filters(scan.filters)
                    .with_fetch(scan.fetch)
                    .build()?,
            ));
        }
        // stored columns read: the ones asked for, plus each derived tag's inputs
        let mut read: Vec<usize> = wanted.iter().copied().filter(|&i| i < width).collect();
        for &i in wanted.iter().filter(|&&i| i >= width) {
            let d = &derived[i - width];
            for input in [d.resource_column.as_str(), "time"] {
                read.push(stored_schema.index_of(input)?);
            }
        }
        read.sort_unstable();
        read.dedup();
        let name = scan.table_name.clone();
        let input = TableScanBuilder::new(scan.table_name, provider_as_source(stored))
            .with_projection(Some(read))
            .with_filters(scan.filters)
            .with_fetch(scan.fetch)
            .build()?;
        let column = |n: &str| Expr::Column(Column::new(Some(name.clone()), n));
        let exprs = wanted
            .iter()
            .map(|&i| {
                if i < width {
                    return column(stored_schema.field(i).name());
                }
                let d = &derived[i - width];
                let mut resource_kind = stored_schema
                    .field_with_name(&d.resource_column)
                    .ok()
                    .and_then(|f| tag_kind(f))
                    .unwrap_or_default()
                    .to_string();
                let mut id = column(&d.resource_column);
                for attribute in d.via.iter().chain([&d.kind]) {
                    id = self.derive.call(vec![
                        id,
                        column("time"),
                        utf8(resource_kind),
                        utf8(attribute.clone()),
                    ]);
                    resource_kind = attribute.clone();
                }
                id.alias_qualified(Some(name.clone()), &d.name)
            })
            .collect();
        Ok(LogicalPlan::Projection(Projection::try_new(
            exprs,
            Arc::new(LogicalPlan::TableScan(input)),
        )?))
    }

    fn rewrite_join(&self, mut j: Join) -> Result<LogicalPlan> {
        let (left, right) = (Arc::clone(j.left.schema()), Arc::clone(j.right.schema()));
        j.on =
            j.on.into_iter()
                .map(
                    |(l, r)| match (Self::kind_of(&l, &left), Self::kind_of(&r, &right)) {
                        (Some(a), Some(b)) if a == b => Ok((l, r)),
                        _ => Ok((
                            self.rewrite_value(l, &left)?,
                            self.rewrite_value(r, &right)?,
                        )),
                    },
                )
                .collect::<Result<Vec<_>>>()?;
        if let Some(filter) = j.filter.take() {
            let mut both = left.as_ref().clone();
            both.merge(&right);
            j.filter = Some(self.rewrite_value(filter, &both)?);
        }
        Ok(LogicalPlan::Join(j))
    }
}

fn utf8(value: String) -> Expr {
    Expr::Literal(ScalarValue::Utf8(Some(value)), None)
}

fn string_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(value, _) => scalar_string(Some(value)),
        _ => None,
    }
}

/// `count(tag)`, `count(DISTINCT tag)`, `approx_distinct(tag)`: ids count like strings.
fn counts_distinct_values(agg: &AggregateFunction, schema: &DFSchema) -> bool {
    matches!(agg.func.name(), "count" | "approx_distinct")
        && agg.params.filter.is_none()
        && agg.params.order_by.is_empty()
        && agg
            .params
            .args
            .iter()
            .all(|a| TagRewriter::kind_of(a, schema).is_some())
}
