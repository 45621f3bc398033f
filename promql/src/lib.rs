//! `flowmesh-promql`: a PromQL engine with Prometheus 3 semantics for float samples,
//! evaluated over a pluggable [`SeriesSource`].
//!
//! # Role
//!
//! The node answers the Prometheus HTTP API with this crate. A query is parsed by
//! `promql-parser`, then evaluated step by step by a tree-walking evaluator. Data comes
//! from a [`SeriesSource`]: before evaluation the engine walks the expression, computes
//! for every selector the exact time range any step can read (its range or the lookback
//! window, shifted by `offset` and `@`, widened over every step of a range query and of
//! every enclosing subquery), and calls [`SeriesSource::select`] once per selector with
//! those matchers and that range. That call is the pushdown point: a storage shard
//! prunes segments by time and matchers, and the mesh can send the selector to the
//! nodes that own the series and merge what comes back.
//!
//! # Why an evaluator and not DataFusion plans
//!
//! PromQL is not relational. Its semantics live in the details: lookback windows and
//! staleness markers, left-open range windows, rate extrapolation to window edges,
//! vector matching with `on`/`ignoring`/`group_left` and its cardinality errors,
//! Prometheus 3's delayed metric-name removal, subquery step alignment, `@` and
//! negative offsets. Expressing each of these as SQL-ish plans over a samples table
//! would mean re-deriving them as window functions and joins that are hard to get
//! exactly right and hard to check against Prometheus. A direct evaluator mirrors the
//! reference engine operator by operator and is checked against Prometheus' own test
//! scripts (see `tests/promqltest.rs`). The expensive part that does benefit from a
//! columnar engine, finding and reading the series, sits behind [`SeriesSource`], so
//! storage can still use DataFusion/Parquet underneath. The crate depends on neither
//! Arrow, DataFusion nor an async runtime; a caller runs queries on its own blocking
//! pool.
//!
//! # Main types
//!
//! - [`Engine`] with [`Engine::instant`] and [`Engine::range`], configured by
//!   [`EngineOptions`] (lookback delta, max samples, timeout, default subquery step).
//! - [`SeriesSource`], [`Series`], [`LabelMatcher`]; [`MemorySource`] keeps series in
//!   memory for tests and the script harness.
//! - [`Value`] (scalar, string, vector, matrix), [`Sample`], [`Labels`].
//! - [`Error`], with [`Error::code`] and [`Error::is_retryable`] for the API layer.
//!
//! # Invariants
//!
//! - Never panics on any query text or data: malformed queries are [`Error::Parse`],
//!   invalid evaluations [`Error::Execution`] with Prometheus' wording.
//! - Memory is bounded by [`EngineOptions::max_samples`]: fetched samples, samples
//!   materialised by the current step (including subquery steps) and the result all
//!   count; exceeding it is [`Error::TooManySamples`].
//! - Native histogram samples are out of scope: a source returns float samples only;
//!   histogram-only functions (`histogram_count`, …) see no input and return nothing.
//! - Duration expressions (`x[5m+step()]`, `offset (1h*2)`), which the parser does not
//!   read, are rewritten to literals before parsing; so are Go byte escapes in strings
//!   (`"\xc3\xa9"` is `é`, as in Prometheus).
//! - Queries nested more than 200 levels or with more than 10 000 operators are
//!   rejected before parsing, so no input can exhaust the stack.
//!
//! # Conformance
//!
//! `tests/promqltest.rs` runs Prometheus' own test scripts (`testdata/`, with their
//! licence). Every case of the float-only scripts passes. Not implemented: native
//! histograms (and so NHCB, `{{...}}` data, trim operators), start timestamps, the
//! experimental `anchored`/`smoothed` range modifiers (the parser rejects them),
//! warn/info annotations. `info()` is supported; the parser rejects its selectors
//! whose matchers all match the empty string (`{data=~".*"}`).

mod duration_expr;
mod engine;
mod error;
mod escapes;
mod labels;
mod source;
mod value;

pub use engine::{Engine, EngineOptions, parse_series_selector};
pub use error::{Error, ErrorCode, Result};
pub use labels::{BUCKET_LABEL, Label, Labels, METRIC_NAME};
pub use source::{
    LabelMatcher, MatchOp, MemorySource, STALE_NAN_BITS, Series, SeriesSource, is_stale_nan,
    stale_nan,
};
pub use value::{Matrix, Sample, Value, Vector};
