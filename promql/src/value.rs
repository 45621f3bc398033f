//! Query results.

use crate::labels::Labels;
use crate::source::Series;

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Labels of the series (after metric-name dropping).
    pub labels: Labels,
    /// The evaluation timestamp in milliseconds.
    pub t_ms: i64,
    /// The value.
    pub value: f64,
}

/// An instant vector: at most one sample per label set.
pub type Vector = Vec<Sample>;

/// A range vector or a range query result: series sorted by labels, each with its
/// points sorted by time.
pub type Matrix = Vec<Series>;

/// The result of an instant query.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number, with the evaluation timestamp.
    Scalar {
        /// Evaluation timestamp in milliseconds.
        t_ms: i64,
        /// The number.
        value: f64,
    },
    /// A string literal.
    String(String),
    /// An instant vector, in the order PromQL produced it (meaningful after `sort`,
    /// `topk` …).
    Vector(Vector),
    /// A range vector (an instant query such as `metric[5m]`).
    Matrix(Matrix),
}

impl Value {
    /// The PromQL type name: "scalar", "string", "vector" or "matrix".
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}
