//! Binary operators: arithmetic, comparisons, set operators, vector matching.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use crate::engine::eval::{EvalValue, Evaluator, InstSample, InstVector};
use crate::error::{Error, Result};
use crate::labels::Labels;

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    fn from_token(token: &str) -> Option<BinOp> {
        Some(match token.to_ascii_lowercase().as_str() {
            "+" => BinOp::Add,
            "-" => BinOp::Sub,
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            "%" => BinOp::Mod,
            "^" => BinOp::Pow,
            "atan2" => BinOp::Atan2,
            "==" => BinOp::Eq,
            "!=" => BinOp::Ne,
            ">" => BinOp::Gt,
            "<" => BinOp::Lt,
            ">=" => BinOp::Ge,
            "<=" => BinOp::Le,
            "and" => BinOp::And,
            "or" => BinOp::Or,
            "unless" => BinOp::Unless,
            _ => return None,
        })
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }

    fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// Applies the operator to two floats: `(value, keep)`. Comparisons return the left
    /// operand and whether the comparison holds.
    pub fn apply(self, l: f64, r: f64) -> (f64, bool) {
        match self {
            BinOp::Add => (l + r, true),
            BinOp::Sub => (l - r, true),
            BinOp::Mul => (l * r, true),
            BinOp::Div => (l / r, true),
            BinOp::Mod => (l % r, true),
            BinOp::Pow => (l.powf(r), true),
            BinOp::Atan2 => (l.atan2(r), true),
            BinOp::Eq => (l, l == r),
            BinOp::Ne => (l, l != r),
            BinOp::Gt => (l, l > r),
            BinOp::Lt => (l, l < r),
            BinOp::Ge => (l, l >= r),
            BinOp::Le => (l, l <= r),
            BinOp::And | BinOp::Or | BinOp::Unless => (l, true),
        }
    }
}

/// How two vectors are matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

struct Matching<'e> {
    on: bool,
    labels: &'e [String],
    card: Card,
    include: &'e [String],
    return_bool: bool,
    fill_lhs: Option<f64>,
    fill_rhs: Option<f64>,
}

impl<'e> Matching<'e> {
    fn from_expr(b: &'e BinaryExpr) -> Matching<'e> {
        let empty: &'e [String] = &[];
        let Some(m) = &b.modifier else {
            return Matching {
                on: false,
                labels: empty,
                card: Card::OneToOne,
                include: empty,
                return_bool: false,
                fill_lhs: None,
                fill_rhs: None,
            };
        };
        let (on, labels) = match &m.matching {
            Some(LabelModifier::Include(l)) => (true, l.labels.as_slice()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.as_slice()),
            None => (false, empty),
        };
        let (card, include) = match &m.card {
            VectorMatchCardinality::OneToOne => (Card::OneToOne, empty),
            VectorMatchCardinality::ManyToOne(l) => (Card::ManyToOne, l.labels.as_slice()),
            VectorMatchCardinality::OneToMany(l) => (Card::OneToMany, l.labels.as_slice()),
            VectorMatchCardinality::ManyToMany => (Card::ManyToMany, empty),
        };
        Matching {
            on,
            labels,
            card,
            include,
            return_bool: m.return_bool,
            fill_lhs: m.fill_values.lhs,
            fill_rhs: m.fill_values.rhs,
        }
    }

    /// The match-group labels of a series: the `on` labels, or every label but the
    /// `ignoring` ones and the metric name.
    fn signature(&self, labels: &Labels) -> Labels {
        let mut sig = labels.clone();
        if self.on {
            sig.keep(self.labels);
        } else {
            sig.drop_names(self.labels);
            sig.remove(crate::labels::METRIC_NAME);
        }
        sig
    }

    /// Labels of a result element; `lhs` is the "many" side (after swapping for
    /// `group_right`).
    fn result_labels(&self, lhs: &Labels, rhs: &Labels) -> Labels {
        let mut out = lhs.clone();
        if self.card == Card::OneToOne {
            if self.on {
                out.keep(self.labels);
            } else {
                out.drop_names(self.labels);
            }
        }
        for name in self.include {
            match rhs.get(name) {
                Some(v) => out.set(name.clone(), v.to_string()),
                None => out.remove(name),
            }
        }
        out
    }
}

impl Evaluator<'_> {
    pub(crate) fn eval_binary(&mut self, b: &BinaryExpr, t: i64) -> Result<EvalValue> {
        let token = b.op.to_string();
        let op = BinOp::from_token(&token)
            .ok_or_else(|| Error::execution(format!("unknown binary operator {token:?}")))?;
        let matching = Matching::from_expr(b);
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        match (lhs, rhs) {
            (EvalValue::Scalar(l), EvalValue::Scalar(r)) => {
                if op.is_set() {
                    return Err(Error::execution(format!(
                        "set operator {token:?} not allowed in binary scalar expression"
                    )));
                }
                let (value, keep) = op.apply(l, r);
                if op.is_comparison() {
                    // The parser demands `bool` between scalars.
                    return Ok(EvalValue::Scalar(if keep { 1.0 } else { 0.0 }));
                }
                Ok(EvalValue::Scalar(value))
            }
            (EvalValue::Vector(l), EvalValue::Scalar(r)) => {
                self.set_op_guard(op, &token)?;
                Ok(EvalValue::Vector(vector_scalar(
                    l,
                    r,
                    op,
                    false,
                    matching.return_bool,
                )))
            }
            (EvalValue::Scalar(l), EvalValue::Vector(r)) => {
                self.set_op_guard(op, &token)?;
                Ok(EvalValue::Vector(vector_scalar(
                    r,
                    l,
                    op,
                    true,
                    matching.return_bool,
                )))
            }
            (EvalValue::Vector(l), EvalValue::Vector(r)) => {
                let out = if op.is_set() {
                    set_op(l, r, op, &matching)
                } else {
                    vector_vector(l, r, op, &matching)?
                };
                self.charge(out.len())?;
                Ok(EvalValue::Vector(out))
            }
            (l, r) => Err(Error::execution(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                l.type_name(),
                r.type_name()
            ))),
        }
    }

    fn set_op_guard(&self, op: BinOp, token: &str) -> Result<()> {
        if op.is_set() {
            return Err(Error::execution(format!(
                "set operator {token:?} not allowed in binary scalar expression"
            )));
        }
        Ok(())
    }
}

/// Vector ⊕ scalar (or scalar ⊕ vector when `swap`).
fn vector_scalar(
    v: InstVector,
    scalar: f64,
    op: BinOp,
    swap: bool,
    return_bool: bool,
) -> InstVector {
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        let (l, r) = if swap {
            (scalar, s.value)
        } else {
            (s.value, scalar)
        };
        let (mut value, mut keep) = op.apply(l, r);
        if op.is_comparison() && swap {
            // The vector element's value is the output, whichever side it is on.
            value = r;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if !keep {
            continue;
        }
        if !op.is_comparison() || return_bool {
            s.drop_name = true;
        }
        s.value = value;
        out.push(s);
    }
    out
}

fn set_op(lhs: InstVector, rhs: InstVector, op: BinOp, m: &Matching<'_>) -> InstVector {
    match op {
        BinOp::And => {
            if lhs.is_empty() || rhs.is_empty() {
                return Vec::new();
            }
            let right: HashSet<Labels> = rhs.iter().map(|s| m.signature(&s.labels)).collect();
            lhs.into_iter()
                .filter(|s| right.contains(&m.signature(&s.labels)))
                .collect()
        }
        BinOp::Or => {
            let left: HashSet<Labels> = lhs.iter().map(|s| m.signature(&s.labels)).collect();
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|s| !left.contains(&m.signature(&s.labels))),
            );
            out
        }
        _ => {
            let right: HashSet<Labels> = rhs.iter().map(|s| m.signature(&s.labels)).collect();
            lhs.into_iter()
                .filter(|s| !right.contains(&m.signature(&s.labels)))
                .collect()
        }
    }
}

/// Vector ⊕ vector with one-to-one / many-to-one / one-to-many matching and the
/// optional `fill`/`fill_left`/`fill_right` values for unmatched elements.
fn vector_vector(
    lhs: InstVector,
    rhs: InstVector,
    op: BinOp,
    m: &Matching<'_>,
) -> Result<InstVector> {
    // After the swap, `lhs` is the "many" side and `rhs` the "one" side.
    let swapped = m.card == Card::OneToMany;
    let (lhs, rhs) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    if (lhs.is_empty() && m.fill_lhs.is_none()) || (rhs.is_empty() && m.fill_rhs.is_none()) {
        return Ok(Vec::new());
    }

    let mut right_sigs: HashMap<Labels, usize> = HashMap::with_capacity(rhs.len());
    for (i, rs) in rhs.iter().enumerate() {
        let sig = m.signature(&rs.labels);
        if let Some(&j) = right_sigs.get(&sig) {
            let side = if swapped { "left" } else { "right" };
            let mut pair = [rhs[j].labels.to_string(), rs.labels.to_string()];
            pair.sort();
            return Err(Error::execution(format!(
                "found duplicate series for the match group {sig} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                pair[0], pair[1]
            )));
        }
        right_sigs.insert(sig, i);
    }

    let compute =
        |many: &Labels, one: &Labels, many_value: f64, one_value: f64, many_drop: bool| {
            let (vl, vr) = if swapped {
                (one_value, many_value)
            } else {
                (many_value, one_value)
            };
            let (mut value, mut keep) = op.apply(vl, vr);
            if m.return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            let labels = m.result_labels(many, one);
            let drop_name = if op.is_comparison() && !m.return_bool {
                many_drop
            } else {
                true
            };
            (
                InstSample {
                    labels,
                    value,
                    drop_name,
                },
                keep,
            )
        };

    let mut out = Vec::new();
    let mut matched_right = vec![false; rhs.len()];
    let mut matched_sigs: HashSet<Labels> = HashSet::new();
    let mut inserted: HashMap<Labels, HashSet<Labels>> = HashMap::new();
    for ls in &lhs {
        let sig = m.signature(&ls.labels);
        match right_sigs.get(&sig) {
            Some(&ri) => {
                matched_right[ri] = true;
                let rs = &rhs[ri];
                let (sample, keep) =
                    compute(&ls.labels, &rs.labels, ls.value, rs.value, ls.drop_name);
                if m.card == Card::OneToOne {
                    if !matched_sigs.insert(sig) {
                        return Err(Error::execution(
                            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                        ));
                    }
                } else if !inserted
                    .entry(sig)
                    .or_default()
                    .insert(sample.labels.clone())
                {
                    return Err(Error::execution(
                        "multiple matches for labels: grouping labels must ensure unique matches",
                    ));
                }
                if keep {
                    out.push(sample);
                }
            }
            None => {
                if let Some(fill) = m.fill_rhs {
                    let (sample, keep) = compute(&ls.labels, &sig, ls.value, fill, ls.drop_name);
                    if keep {
                        out.push(sample);
                    }
                }
            }
        }
    }
    if let Some(fill) = m.fill_lhs {
        for (ri, rs) in rhs.iter().enumerate() {
            if matched_right[ri] {
                continue;
            }
            let group = m.signature(&rs.labels);
            let (sample, keep) = compute(&group, &rs.labels, fill, rs.value, false);
            if keep {
                out.push(sample);
            }
        }
    }
    Ok(out)
}
