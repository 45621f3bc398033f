//! PostgreSQL protocol 3 messages (PostgreSQL documentation, chapter "Frontend/Backend
//! Protocol", sections "Message Formats" and "Error and Notice Message Fields"), and
//! DeepFlow's classification of SQLSTATE codes.

use crate::ResponseStatus;
use crate::mysql::sql_text::until_nul;
use crate::text::lossy;

/// Longest message accepted (the server's own limit is 1 GiB).
pub(crate) const MAX_MESSAGE: u32 = 1 << 30;
/// Longest startup packet (the server rejects longer ones).
pub(crate) const MAX_STARTUP: u32 = 10_000;
/// The request codes of untyped messages.
pub(crate) const SSL_REQUEST: u32 = 80_877_103;
pub(crate) const GSSENC_REQUEST: u32 = 80_877_104;
pub(crate) const CANCEL_REQUEST: u32 = 80_877_102;

/// A big-endian u32 at `at`.
pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let x = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
}

/// The protocol version of a StartupMessage: major 3.
pub(crate) fn is_protocol_3(code: u32) -> bool {
    code >> 16 == 3 && code & 0xffff <= 9
}

/// Typed backend messages.
pub(crate) const BACKEND_TYPES: &[u8] = b"RSKZENC123TDntsIGHWdcAVv";

/// The NUL-terminated strings at the start of `body`, as far as captured.
pub(crate) fn strings(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(body);
    std::iter::from_fn(move || {
        let b = rest?;
        match b.iter().position(|&x| x == 0) {
            Some(end) => {
                rest = Some(&b[end + 1..]);
                Some(&b[..end])
            }
            None => {
                rest = None;
                (!b.is_empty()).then_some(b)
            }
        }
    })
}

/// `user=<user> database=<database>` from a StartupMessage's parameters.
pub(crate) fn startup_resource(params: &[u8]) -> String {
    let mut user = None;
    let mut database = None;
    let mut items = strings(params);
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        match key {
            b"user" => user = Some(lossy(value)),
            b"database" => database = Some(lossy(value)),
            _ => {}
        }
    }
    let mut resource = format!("user={}", user.unwrap_or_default());
    if let Some(database) = database {
        resource.push_str(" database=");
        resource.push_str(&database);
    }
    resource
}

/// The fields of an ErrorResponse that a row needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ErrorFields {
    pub(crate) severity: String,
    pub(crate) code: String,
    pub(crate) message: String,
}

/// Parses an ErrorResponse body (fields cut off by the capture are left empty).
pub(crate) fn error_fields(body: &[u8]) -> ErrorFields {
    let mut fields = ErrorFields::default();
    for field in strings(body) {
        let Some((&kind, value)) = field.split_first() else {
            break; // the terminator
        };
        match kind {
            b'V' => fields.severity = lossy(value),
            b'S' if fields.severity.is_empty() => fields.severity = lossy(value),
            b'C' => fields.code = lossy(value),
            b'M' => fields.message = lossy(value),
            _ => {}
        }
    }
    fields
}

/// Rows a CommandComplete tag reports: the last number of `INSERT 0 5`, `UPDATE 3`,
/// `DELETE 1`, `SELECT 10`, `MERGE 2`, `COPY 100`.
pub(crate) fn tag_rows(body: &[u8]) -> Option<u64> {
    let tag = until_nul(body);
    let mut words = tag.split(|&b| b == b' ');
    let command = words.next()?;
    if !matches!(
        command,
        b"INSERT" | b"UPDATE" | b"DELETE" | b"SELECT" | b"MERGE" | b"COPY"
    ) {
        return None;
    }
    let last = words.next_back()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

/// DeepFlow's classification of SQLSTATE codes (its `postgre_convert.rs`): the classes of
/// errors in the statement (syntax, data, constraints, names, transactions rolled back by
/// conflicts) are the client's, the others (connection, resources, operator intervention,
/// system and internal errors, and codes of no known class) the server's.
pub(crate) fn sqlstate_status(code: &str) -> ResponseStatus {
    const CLIENT_CLASSES: [&str; 15] = [
        "03", "0A", "0B", "0F", "0L", "0P", "20", "22", "23", "26", "2F", "34", "3D", "3F", "42",
    ];
    const CLIENT_CODES: [&str; 3] = ["40001", "40003", "40P01"];
    let class = code.get(..2).unwrap_or_default();
    if CLIENT_CLASSES.contains(&class) || CLIENT_CODES.contains(&code) {
        ResponseStatus::ClientError
    } else {
        ResponseStatus::ServerError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_and_tags() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0P15\0\0";
        let fields = error_fields(body);
        assert_eq!(fields.severity, "ERROR");
        assert_eq!(fields.code, "42P01");
        assert_eq!(fields.message, "relation \"t\" does not exist");
        // cut by the capture in the message
        let cut = error_fields(&body[..30]);
        assert_eq!(
            (cut.code.as_str(), cut.message.as_str()),
            ("42P01", "relation")
        );
        assert_eq!(tag_rows(b"INSERT 0 5\0"), Some(5));
        assert_eq!(tag_rows(b"UPDATE 3\0"), Some(3));
        assert_eq!(tag_rows(b"SELECT 10"), Some(10));
        assert_eq!(tag_rows(b"BEGIN\0"), None);
        assert_eq!(tag_rows(b"CREATE TABLE\0"), None);
        assert_eq!(
            startup_resource(b"user\0app\0database\0bench\0application_name\0psql\0\0"),
            "user=app database=bench"
        );
        assert_eq!(startup_resource(b"user\0app\0\0"), "user=app");
    }

    #[test]
    fn sqlstate_classes_follow_deepflow() {
        for code in [
            "42601", "42P01", "23505", "22012", "40001", "40P01", "0A000",
        ] {
            assert_eq!(sqlstate_status(code), ResponseStatus::ClientError, "{code}");
        }
        for code in [
            "28P01", "53300", "57014", "XX000", "40000", "08006", "", "9",
        ] {
            assert_eq!(sqlstate_status(code), ResponseStatus::ServerError, "{code}");
        }
    }
}
