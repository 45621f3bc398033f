//! Query errors and their client-visible classes.

use datafusion::error::DataFusionError;

/// What went wrong with a query, classified for the client.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is malformed, names unknown objects, or is not allowed (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The query needs more memory than the engine may use now (HTTP 503, retryable).
    #[error("query exceeded its resources: {0}")]
    ResourcesExhausted(String),
    /// A node in the query's scope did not answer, and the query was strict (HTTP 503,
    /// retryable).
    #[error("{0}")]
    Unavailable(String),
    /// Execution failed for another reason (HTTP 500).
    #[error("query failed: {0}")]
    Internal(String),
}

impl QueryError {
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::Invalid(_))
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::ResourcesExhausted(_) | Self::Unavailable(_))
    }
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        let root = e.find_root();
        if let DataFusionError::External(inner) = root
            && let Some(q) = inner.downcast_ref::<QueryError>()
        {
            return match q {
                Self::Invalid(m) => Self::Invalid(m.clone()),
                Self::ResourcesExhausted(m) => Self::ResourcesExhausted(m.clone()),
                Self::Unavailable(m) => Self::Unavailable(m.clone()),
                Self::Internal(m) => Self::Internal(m.clone()),
            };
        }
        match root {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => Self::Invalid(e.strip_backtrace()),
            DataFusionError::ResourcesExhausted(_) => Self::ResourcesExhausted(e.strip_backtrace()),
            _ => Self::Internal(e.strip_backtrace()),
        }
    }
}
