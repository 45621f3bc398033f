//! Label sets stored as one canonical string (`a="x",b="y"`, sorted by name): Prometheus
//! series labels, Influx tags and Kubernetes labels alike.
//!
//! - [`parse_canonical_labels`] reads the form back into pairs;
//! - `label_value(labels, 'name')` ([`LabelValue`]) is one label's value in SQL, or NULL;
//! - [`rewrite_label_columns`] lets SQL name a Kubernetes label as DeepFlow users do,
//!   `k8s.label.app_1` (or `"k8s.label.app.kubernetes.io/name_1"` for names that are
//!   not identifiers): it becomes `label_value(k8s_labels_1, 'app')`, shown under the
//!   name the user wrote.

use std::{ops::ControlFlow, sync::Arc};

use datafusion::{
    arrow::{
        array::{Array, ArrayRef, AsArray, StringBuilder},
        datatypes::DataType,
    },
    common::{Result, exec_err},
    logical_expr::{
        ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
    },
    sql::{
        parser::Statement as DfStatement,
        sqlparser::{
            ast::{
                Expr as SqlExpr, Ident, Query, SelectItem, SetExpr, Statement, Value, VisitMut,
                VisitorMut,
            },
            dialect::GenericDialect,
            parser::Parser,
        },
    },
};

/// A canonical label string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed label string {text:?} at byte {at}: {what}")]
pub struct LabelsParseError {
    pub text: String,
    pub at: usize,
    pub what: &'static str,
}

/// Parses the canonical form, `a="x",b="y"`, back into pairs. Values unescape `\\`, `\"`
/// and `\n` (Prometheus' text format escapes); any other escaped character stands for
/// itself. Names run up to `="`, which a valid Prometheus label name never contains.
pub fn parse_canonical_labels(text: &str) -> Result<Vec<(String, String)>, LabelsParseError> {
    let fail = |at: usize, what: &'static str| LabelsParseError {
        text: text.to_string(),
        at,
        what,
    };
    let mut pairs = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let name_end = text[i..]
            .find("=\"")
            .map(|n| i + n)
            .ok_or_else(|| fail(i, "expected name=\"value\""))?;
        if name_end == i {
            return Err(fail(i, "empty label name"));
        }
        let name = &text[i..name_end];
        i = name_end + 2;
        let mut value = String::new();
        let mut closed = false;
        let mut chars = text[i..].char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                '"' => {
                    i += offset + 1;
                    closed = true;
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => return Err(fail(i + offset, "escape at the end")),
                },
                c => value.push(c),
            }
        }
        if !closed {
            return Err(fail(text.len(), "unterminated value"));
        }
        pairs.push((name.to_string(), value));
        match bytes.get(i) {
            None => break,
            Some(b',') if i + 1 < bytes.len() => i += 1,
            Some(_) => return Err(fail(i, "expected ',' between labels")),
        }
    }
    Ok(pairs)
}

/// Name of the SQL function `label_value(labels, name)`.
pub const LABEL_VALUE: &str = "label_value";

/// `label_value(labels Utf8, name Utf8) → Utf8`: the value of label `name` in a canonical
/// label string; NULL when the set has no such label or the string is NULL. A string that
/// does not parse is an error naming it (stored sets are always canonical).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LabelValue {
    signature: Signature,
}

impl Default for LabelValue {
    fn default() -> Self {
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8])],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for LabelValue {
    fn name(&self) -> &str {
        LABEL_VALUE
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [labels, names] = args.args.as_slice() else {
            return exec_err!("{LABEL_VALUE} takes 2 arguments");
        };
        let labels = labels.to_array(args.number_rows)?;
        let names = names.to_array(args.number_rows)?;
        let (labels, names) = (labels.as_string::<i32>(), names.as_string::<i32>());
        let mut out = StringBuilder::with_capacity(args.number_rows, 0);
        // rows of one resource come in runs: parse each distinct string once per run
        let mut last: Option<(&str, Vec<(String, String)>)> = None;
        for row in 0..args.number_rows {
            if labels.is_null(row) || names.is_null(row) {
                out.append_null();
                continue;
            }
            let (text, name) = (labels.value(row), names.value(row));
            if last.as_ref().is_none_or(|(t, _)| *t != text) {
                let pairs = parse_canonical_labels(text).map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!("{LABEL_VALUE}: {e}"))
                })?;
                last = Some((text, pairs));
            }
            let value = last
                .as_ref()
                .and_then(|(_, pairs)| pairs.iter().find(|(n, _)| n == name));
            match value {
                Some((_, v)) => out.append_value(v),
                None => out.append_null(),
            }
        }
        let array: ArrayRef = Arc::new(out.finish());
        Ok(ColumnarValue::Array(array))
    }
}

/// Prefix of a Kubernetes label column as users write it.
const K8S_LABEL_PREFIX: &str = "k8s.label.";

/// `k8s.label.<name>[_<side>]` → (label name, the column holding the label set).
fn k8s_label_column(written: &str) -> Option<(&str, String)> {
    let rest = written
        .get(..K8S_LABEL_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(K8S_LABEL_PREFIX))
        .map(|_| &written[K8S_LABEL_PREFIX.len()..])?;
    let (name, column) = match rest.rsplit_once('_') {
        Some((name, side @ ("0" | "1"))) => (name, format!("k8s_labels_{side}")),
        _ => (rest, "k8s_labels".to_string()),
    };
    (!name.is_empty()).then_some((name, column))
}

/// The text of an identifier expression: `a.b.c` joined with dots, or one (quoted) name.
fn identifier_text(expr: &SqlExpr) -> Option<String> {
    match expr {
        SqlExpr::Identifier(id) => Some(id.value.clone()),
        SqlExpr::CompoundIdentifier(ids) => Some(
            ids.iter()
                .map(|i| i.value.as_str())
                .collect::<Vec<_>>()
                .join("."),
        ),
        _ => None,
    }
}

/// The `label_value(…)` call standing for a Kubernetes label identifier, if it is one.
fn k8s_label_call(expr: &SqlExpr) -> Option<SqlExpr> {
    let written = identifier_text(expr)?;
    let (name, column) = k8s_label_column(&written)?;
    let mut call = Parser::new(&GenericDialect {})
        .try_with_sql(&format!("{LABEL_VALUE}({column}, '')"))
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    // the label name goes in as a value, never through SQL text
    let _ = call.visit(&mut ReplaceEmptyString(name.to_string()));
    Some(call)
}

struct ReplaceEmptyString(String);

impl VisitorMut for ReplaceEmptyString {
    type Break = ();
    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        if let SqlExpr::Value(v) = expr
            && v.value == Value::SingleQuotedString(String::new())
        {
            v.value = Value::SingleQuotedString(std::mem::take(&mut self.0));
        }
        ControlFlow::Continue(())
    }
}

struct K8sLabels;

impl VisitorMut for K8sLabels {
    type Break = ();

    /// A projected label keeps the name the user wrote as its column name.
    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        fn alias(body: &mut SetExpr) {
            match body {
                SetExpr::Select(select) => {
                    for item in &mut select.projection {
                        if let SelectItem::UnnamedExpr(expr) = item
                            && let (Some(call), Some(written)) =
                                (k8s_label_call(expr), identifier_text(expr))
                        {
                            *item = SelectItem::ExprWithAlias {
                                expr: call,
                                alias: Ident::with_quote('"', written),
                            };
                        }
                    }
                }
                SetExpr::SetOperation { left, right, .. } => {
                    alias(left);
                    alias(right);
                }
                _ => {}
            }
        }
        alias(&mut query.body);
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        if let Some(call) = k8s_label_call(expr) {
            *expr = call;
        }
        ControlFlow::Continue(())
    }
}

/// Rewrites every `k8s.label.<name>_<side>` identifier in `statement` to
/// `label_value(k8s_labels_<side>, '<name>')`; a projected one keeps its written name.
pub fn rewrite_label_columns(statement: &mut DfStatement) {
    fn sql(statement: &mut Statement) {
        let _ = statement.visit(&mut K8sLabels);
    }
    match statement {
        DfStatement::Statement(s) => sql(s),
        DfStatement::Explain(e) => rewrite_label_columns(&mut e.statement),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_labels_parse_with_escapes() {
        assert_eq!(
            parse_canonical_labels(r#"a="x",b="q\"uo\\te\n""#).unwrap(),
            vec![
                ("a".to_string(), "x".to_string()),
                ("b".to_string(), "q\"uo\\te\n".to_string())
            ]
        );
        assert_eq!(parse_canonical_labels("").unwrap(), vec![]);
        for bad in [r#"a"#, r#"="x""#, r#"a="x"#, r#"a="x"b="y""#, r#"a="x","#] {
            assert!(parse_canonical_labels(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn k8s_label_identifiers_name_a_label_and_a_side() {
        assert_eq!(
            k8s_label_column("k8s.label.app_1"),
            Some(("app", "k8s_labels_1".to_string()))
        );
        assert_eq!(
            k8s_label_column("K8S.LABEL.app.kubernetes.io/name_0"),
            Some(("app.kubernetes.io/name", "k8s_labels_0".to_string()))
        );
        assert_eq!(
            k8s_label_column("k8s.label.pod_template_hash"),
            Some(("pod_template_hash", "k8s_labels".to_string()))
        );
        assert_eq!(k8s_label_column("k8s.label."), None);
        assert_eq!(k8s_label_column("k8s.labels.app_1"), None);
        assert_eq!(k8s_label_column("pod_1"), None);
    }

    #[test]
    fn statements_are_rewritten_and_names_cannot_inject_sql() {
        let rewrite = |sql: &str| {
            let mut s = datafusion::sql::parser::DFParser::parse_sql(sql)
                .unwrap()
                .pop_front()
                .unwrap();
            rewrite_label_columns(&mut s);
            s.to_string()
        };
        assert_eq!(
            rewrite(
                "SELECT k8s.label.app_1, count(*) FROM t WHERE k8s.label.tier_0 = 'web' GROUP BY k8s.label.app_1"
            ),
            "SELECT label_value(k8s_labels_1, 'app') AS \"k8s.label.app_1\", count(*) FROM t \
             WHERE label_value(k8s_labels_0, 'tier') = 'web' GROUP BY label_value(k8s_labels_1, 'app')"
        );
        assert_eq!(
            rewrite(r#"SELECT x FROM t WHERE "k8s.label.a'b_1" IS NULL"#),
            "SELECT x FROM t WHERE label_value(k8s_labels_1, 'a''b') IS NULL"
        );
        assert_eq!(
            rewrite("EXPLAIN SELECT k8s.label.app FROM t"),
            "EXPLAIN SELECT label_value(k8s_labels, 'app') AS \"k8s.label.app\" FROM t"
        );
    }
}
