//! Why a parser lost a stream's framing.

/// A reason a protocol parser rejected the bytes of a stream.
///
/// Parse errors are not returned to callers of [`crate::Conversation`]: they make the parser
/// resynchronise and are counted in [`crate::ConversationStats::parse_errors`]. They are public
/// so that users of the lower-level [`crate::http1::Http1Parser`] can tell causes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// `httparse` rejected the message head.
    #[error("malformed http/1 message head: {0}")]
    MalformedHead(&'static str),
    /// The request line's method is not one this crate recognises.
    #[error("unknown http/1 request method")]
    UnknownMethod,
    /// The head is longer than the configured limit.
    #[error("http/1 message head longer than {limit} bytes")]
    HeadTooLong {
        /// The configured `max_head_bytes`.
        limit: usize,
    },
    /// A `Content-Length` header is not a decimal number, or several disagree.
    #[error("invalid http/1 content-length header")]
    InvalidContentLength,
    /// A request with a `Transfer-Encoding` whose last coding is not `chunked`.
    #[error("http/1 request transfer-encoding is not chunked")]
    UnsupportedTransferEncoding,
    /// A chunk-size line is malformed or its size overflows 64 bits.
    #[error("invalid http/1 chunk size line")]
    InvalidChunkSize,
    /// Chunk data is not followed by CRLF.
    #[error("http/1 chunk data not followed by crlf")]
    MissingChunkTerminator,
    /// Chunk trailers are longer than the head limit.
    #[error("http/1 chunk trailers longer than {limit} bytes")]
    TrailersTooLong {
        /// The configured `max_head_bytes`.
        limit: usize,
    },
}
