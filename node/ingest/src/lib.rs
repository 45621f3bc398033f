//! Decoders for the metric ingest formats a flowmesh node accepts.
//!
//! # Role
//!
//! DESIGN.md §3 lets Prometheus and Telegraf send data to any node, landing in the same
//! tables as captured data. This crate turns those request bodies into typed values and
//! rejects bad ones with a precise error; the HTTP endpoints, tagging and storage live in
//! `node`. It depends on `prost`, `snap` and `thiserror` only, so it builds and tests in
//! seconds and can be fuzzed on its own (`fuzz/`).
//!
//! # Modules and main types
//!
//! - [`remote_write`]: Prometheus remote_write 1.0 (`POST /api/v1/write`, a snappy-compressed
//!   protobuf `WriteRequest`). [`remote_write::decode_write_request`] decompresses, decodes
//!   and validates under [`remote_write::Limits`]; [`remote_write::encode_write_request`] is
//!   its inverse, for tests and benchmarks. A request is accepted or rejected as a whole.
//! - [`line_protocol`]: Influx line protocol (`POST /api/v2/write?precision=…`, as Telegraf
//!   and the InfluxDB v2 client libraries send it). [`line_protocol::parse`] returns
//!   [`line_protocol::Point`]s plus the rejected lines (partial writes, as InfluxDB v2 does);
//!   [`line_protocol::Point::to_line`] writes a point back.
//! - [`error`]: one error type per format, each mapped to an HTTP status.
//!
//! # Invariants
//!
//! - No input makes either decoder panic (proptests and the fuzz targets check this).
//! - Memory is bounded by the limits, checked before the allocation they guard: the body
//!   size, the size a snappy header declares, and the counts of series, samples, labels,
//!   exemplars and metadata (counted on the wire before `prost` decodes), or of lines.
//! - Decoded values are normalised for storage: remote_write labels sorted and unique with
//!   non-empty values, line protocol tags sorted and unique. Float bits are preserved,
//!   including Prometheus' staleness NaN.

#![warn(missing_docs)]

pub mod error;
pub mod line_protocol;
pub mod remote_write;

pub use error::{LineError, LineErrorKind, LineProtocolError, RemoteWriteError, SerializeError};
