//! Errors of the PromQL engine.

/// A client-visible error class, mapped by the HTTP layer to a status (Prometheus'
/// `errorType`: `bad_data` → 400, `execution` → 422, `timeout` → 503, `internal` → 500).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The query could not be parsed or is invalid (400).
    BadData,
    /// The query is valid but failed while evaluating (422).
    Execution,
    /// The query exceeded its deadline (503).
    Timeout,
    /// The query needs more memory than it is allowed (422).
    TooLarge,
    /// The series source failed (500 or 503 depending on the source).
    Source,
}

/// Errors returned by [`crate::Engine`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The query text is not valid PromQL.
    #[error("parse error: {message}")]
    Parse {
        /// What the parser reported.
        message: String,
    },
    /// The query is well-formed but cannot be evaluated (a many-to-many match, a
    /// duplicate label set, a bad argument …). The message is Prometheus' wording.
    #[error("{message}")]
    Execution {
        /// Prometheus-compatible message.
        message: String,
    },
    /// A feature the engine does not implement (e.g. native histogram samples).
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is not supported.
        what: String,
    },
    /// The query would hold more samples in memory than `max_samples` allows.
    #[error("query processing would load too many samples into memory in {stage}")]
    TooManySamples {
        /// The stage that hit the limit (e.g. "query execution").
        stage: &'static str,
    },
    /// The query ran past its timeout.
    #[error("query timed out in {stage}")]
    Timeout {
        /// The stage that noticed the deadline.
        stage: &'static str,
    },
    /// The [`crate::SeriesSource`] failed.
    #[error("failed to select series from the source: {message}")]
    Source {
        /// The source's message.
        message: String,
        /// Whether retrying the query may succeed (e.g. a peer was unreachable).
        retryable: bool,
    },
}

impl Error {
    /// Builds an [`Error::Execution`].
    pub fn execution(message: impl Into<String>) -> Self {
        Error::Execution {
            message: message.into(),
        }
    }

    /// The client-visible class of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Parse { .. } => ErrorCode::BadData,
            Error::Execution { .. } | Error::Unsupported { .. } => ErrorCode::Execution,
            Error::TooManySamples { .. } => ErrorCode::TooLarge,
            Error::Timeout { .. } => ErrorCode::Timeout,
            Error::Source { .. } => ErrorCode::Source,
        }
    }

    /// Whether the same query may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Source { retryable, .. } => *retryable,
            Error::Timeout { .. } => true,
            _ => false,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
