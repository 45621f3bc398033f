//! Distributed-tracing ids carried in HTTP headers and gRPC metadata.
//!
//! A request may carry the caller's trace context in any of the common propagation
//! formats. [`TraceHeaders`] collects every one it is offered while a header block is
//! scanned and [`TraceHeaders::finish`] picks one, in this order:
//!
//! 1. W3C `traceparent` (`version-traceid-parentid-flags`);
//! 2. Zipkin B3 single header `b3` (`traceid-spanid[-sampled[-parentspanid]]`);
//! 3. Zipkin B3 multi headers `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`;
//! 4. Jaeger `uber-trace-id` (`traceid:spanid:parentspanid:flags`, possibly URL-encoded);
//! 5. SkyWalking `sw8` (`sample-traceid-segmentid-spanid-…`, Base64 fields).
//!
//! In every format the span id is the **sender's** span (the client span that made the
//! request), as in DeepFlow. Hex ids are lowercased and left-padded with zeros to 32 (trace)
//! and 16 (span) digits, so a 64-bit B3 or Jaeger trace id matches the 128-bit form the
//! OpenTelemetry SDKs give the same trace. SkyWalking ids are strings: the trace id is the
//! decoded trace id, the span id `segmentid-spanid`.
//!
//! The names of the headers that carry a request id (`x_request_id_0/1`) are configurable
//! with [`set_request_id_headers`]; the default is `X-Request-ID`.

use std::sync::OnceLock;

/// The ids of a request's trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id: 32 lowercase hex digits, not all zero (a string for SkyWalking).
    pub trace_id: String,
    /// The caller's span: 16 lowercase hex digits, not all zero (SkyWalking:
    /// `segmentid-spanid`).
    pub span_id: String,
    /// The caller's parent span, where the format carries it (B3, Jaeger).
    pub parent_span_id: Option<String>,
}

impl TraceContext {
    /// Parses a W3C `traceparent` value: `version-traceid-parentid-flags`. Future versions
    /// may append fields after the flags; version `ff` and all-zero ids are invalid.
    pub fn from_traceparent(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        if value.len() < 55 {
            return None;
        }
        let (fields, rest) = value.split_at(55);
        let version = &fields[0..2];
        let flags = &fields[53..55];
        let dashes = fields[2] == b'-' && fields[35] == b'-' && fields[52] == b'-';
        if !dashes || !is_hex(version) || !is_hex(flags) {
            return None;
        }
        if version.eq_ignore_ascii_case(b"ff") {
            return None;
        }
        if !rest.is_empty() && (version == b"00" || rest[0] != b'-') {
            return None;
        }
        Some(TraceContext {
            trace_id: hex_id(&fields[3..35], 32)?,
            span_id: hex_id(&fields[36..52], 16)?,
            parent_span_id: None,
        })
    }

    /// Parses a B3 single-header value: `traceid-spanid`, optionally followed by
    /// `-sampled` and `-parentspanid`. A value of only the sampling state (`0`, `1`, `d`)
    /// carries no ids.
    pub fn from_b3(value: &[u8]) -> Option<Self> {
        let mut fields = value.trim_ascii().split(|&b| b == b'-');
        let trace_id = hex_id(fields.next()?, 32)?;
        let span_id = hex_id(fields.next()?, 16)?;
        let _sampled = fields.next();
        let parent_span_id = match fields.next() {
            Some(parent) => Some(hex_id(parent, 16)?),
            None => None,
        };
        if fields.next().is_some() {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            parent_span_id,
        })
    }

    /// Parses a Jaeger `uber-trace-id` value `traceid:spanid:parentspanid:flags`, where
    /// the colons may be URL-encoded as `%3A`; a parent of `0` means none.
    pub fn from_uber_trace_id(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        let decoded;
        let value = if value.windows(3).any(|w| w.eq_ignore_ascii_case(b"%3a")) {
            decoded = replace_encoded_colons(value);
            &decoded[..]
        } else {
            value
        };
        let fields: Vec<&[u8]> = value.split(|&b| b == b':').collect();
        let [trace_id, span_id, parent, flags] = fields[..] else {
            return None;
        };
        if flags.is_empty() || !is_hex(flags) {
            return None;
        }
        let parent_span_id = if parent.iter().all(|&b| b == b'0') {
            None
        } else {
            Some(hex_id(parent, 16)?)
        };
        Some(TraceContext {
            trace_id: hex_id(trace_id, 32)?,
            span_id: hex_id(span_id, 16)?,
            parent_span_id,
        })
    }

    /// Parses a SkyWalking `sw8` value:
    /// `sample-traceid-segmentid-spanid-service-instance-endpoint-address`, where the ids
    /// and names are Base64 and the span id is decimal.
    pub fn from_sw8(value: &[u8]) -> Option<Self> {
        let fields: Vec<&[u8]> = value.trim_ascii().split(|&b| b == b'-').collect();
        if fields.len() != 8 || !matches!(fields[0], b"0" | b"1") {
            return None;
        }
        let trace_id = base64_text(fields[1])?;
        let segment_id = base64_text(fields[2])?;
        let span = fields[3];
        if span.is_empty() || span.len() > 10 || !span.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id: format!("{segment_id}-{}", String::from_utf8_lossy(span)),
            parent_span_id: None,
        })
    }
}

/// The trace-context headers of one header block, collected in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    traceparent: Option<TraceContext>,
    b3: Option<TraceContext>,
    b3_trace_id: Option<String>,
    b3_span_id: Option<String>,
    b3_parent_span_id: Option<String>,
    uber: Option<TraceContext>,
    sw8: Option<TraceContext>,
}

impl TraceHeaders {
    /// Looks at one header (`name` in any case). Returns true when the header is one of the
    /// trace-context headers, whether or not its value was valid; the first valid value of
    /// each header counts.
    pub fn offer(&mut self, name: &[u8], value: &[u8]) -> bool {
        let eq = |known: &[u8]| name.eq_ignore_ascii_case(known);
        if eq(b"traceparent") {
            if self.traceparent.is_none() {
                self.traceparent = TraceContext::from_traceparent(value);
            }
        } else if eq(b"b3") {
            if self.b3.is_none() {
                self.b3 = TraceContext::from_b3(value);
            }
        } else if eq(b"x-b3-traceid") {
            set_hex_once(&mut self.b3_trace_id, value, 32);
        } else if eq(b"x-b3-spanid") {
            set_hex_once(&mut self.b3_span_id, value, 16);
        } else if eq(b"x-b3-parentspanid") {
            set_hex_once(&mut self.b3_parent_span_id, value, 16);
        } else if eq(b"uber-trace-id") {
            if self.uber.is_none() {
                self.uber = TraceContext::from_uber_trace_id(value);
            }
        } else if eq(b"sw8") {
            if self.sw8.is_none() {
                self.sw8 = TraceContext::from_sw8(value);
            }
        } else {
            return false;
        }
        true
    }

    /// The context of the highest-ranked format that was present and valid.
    pub fn finish(self) -> Option<TraceContext> {
        let b3_multi = match (self.b3_trace_id, self.b3_span_id) {
            (Some(trace_id), Some(span_id)) => Some(TraceContext {
                trace_id,
                span_id,
                parent_span_id: self.b3_parent_span_id,
            }),
            _ => None,
        };
        self.traceparent
            .or(self.b3)
            .or(b3_multi)
            .or(self.uber)
            .or(self.sw8)
    }
}

/// The lowercase names of the headers that carry a request id; set once at startup.
static REQUEST_ID_HEADERS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();

/// Sets the header names that carry a request id (`x_request_id_0/1`), case-insensitive,
/// in order of preference. Only the first call has an effect; returns false for later
/// calls. Names must be non-empty header names.
pub fn set_request_id_headers(names: &[String]) -> bool {
    let names = names
        .iter()
        .map(|n| n.trim().to_ascii_lowercase().into_bytes())
        .filter(|n| !n.is_empty())
        .collect();
    REQUEST_ID_HEADERS.set(names).is_ok()
}

/// The rank of `name` among the request-id headers (0 is the most preferred), or `None`
/// when it is not one.
pub fn request_id_header_rank(name: &[u8]) -> Option<usize> {
    rank_in(REQUEST_ID_HEADERS.get().map(Vec::as_slice), name)
}

fn rank_in(configured: Option<&[Vec<u8>]>, name: &[u8]) -> Option<usize> {
    match configured {
        Some(names) => names.iter().position(|n| name.eq_ignore_ascii_case(n)),
        None => name.eq_ignore_ascii_case(b"x-request-id").then_some(0),
    }
}

/// The request id of a header block: the value of the most preferred request-id header
/// present with a non-empty value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestIdHeader {
    best: Option<(usize, String)>,
}

impl RequestIdHeader {
    /// Looks at one header; returns true when it is a request-id header.
    pub fn offer(&mut self, name: &[u8], value: &[u8]) -> bool {
        let Some(rank) = request_id_header_rank(name) else {
            return false;
        };
        let value = value.trim_ascii();
        if !value.is_empty() && self.best.as_ref().is_none_or(|(best, _)| rank < *best) {
            self.best = Some((rank, String::from_utf8_lossy(value).into_owned()));
        }
        true
    }

    /// The chosen value.
    pub fn finish(self) -> Option<String> {
        self.best.map(|(_, value)| value)
    }
}

fn is_hex(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_hexdigit)
}

/// A hex id of at most `width` digits, not all zero, lowercased and left-padded to `width`.
fn hex_id(s: &[u8], width: usize) -> Option<String> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > width || !is_hex(s) || s.iter().all(|&b| b == b'0') {
        return None;
    }
    let mut id = String::with_capacity(width);
    id.extend(std::iter::repeat_n('0', width - s.len()));
    id.extend(s.iter().map(|&b| char::from(b.to_ascii_lowercase())));
    Some(id)
}

fn set_hex_once(slot: &mut Option<String>, value: &[u8], width: usize) {
    if slot.is_none() {
        *slot = hex_id(value, width);
    }
}

fn replace_encoded_colons(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%'
            && value
                .get(i + 1..i + 3)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"3a"))
        {
            out.push(b':');
            i += 3;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    out
}

/// Standard Base64 (padding optional) decoded to UTF-8 text; `None` for bad input or an
/// empty result.
fn base64_text(s: &[u8]) -> Option<String> {
    fn sextet(b: u8) -> Option<u32> {
        Some(u32::from(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let s = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for group in s.chunks(4) {
        let mut bits = 0u32;
        for &b in group {
            bits = bits << 6 | sextet(b)?;
        }
        let bytes = group.len() * 6 / 8;
        bits <<= 6 * (4 - group.len());
        out.extend_from_slice(&bits.to_be_bytes()[1..1 + bytes]);
    }
    let text = String::from_utf8(out).ok()?;
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(trace: &str, span: &str, parent: Option<&str>) -> Option<TraceContext> {
        Some(TraceContext {
            trace_id: trace.into(),
            span_id: span.into(),
            parent_span_id: parent.map(Into::into),
        })
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn traceparent() {
        let ok = b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
        assert_eq!(
            TraceContext::from_traceparent(ok),
            ctx(TRACE, "00f067aa0ba902b7", None)
        );
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad:?}");
        }
        // a later version may append fields
        let v1 = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        assert!(TraceContext::from_traceparent(v1).is_some());
    }

    #[test]
    fn b3_single_and_multi() {
        assert_eq!(
            TraceContext::from_b3(
                b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
            ),
            ctx(
                "80f198ee56343ba864fe8b2a57d3eff7",
                "e457b5a2e4d86bd1",
                Some("05e3ac9a4f6e3b90")
            )
        );
        // 64-bit trace ids are padded to 128 bits
        assert_eq!(
            TraceContext::from_b3(b"a3ce929d0e0e4736-00F067AA0BA902B7"),
            ctx("0000000000000000a3ce929d0e0e4736", "00f067aa0ba902b7", None)
        );
        for sampling_only in [&b"0"[..], b"1", b"d", b"", b"x-y", b"0-0-1"] {
            assert_eq!(TraceContext::from_b3(sampling_only), None);
        }
        let mut headers = TraceHeaders::default();
        assert!(headers.offer(b"X-B3-TraceId", b"a3ce929d0e0e4736"));
        assert!(headers.offer(b"X-B3-SpanId", b"00f067aa0ba902b7"));
        assert!(headers.offer(b"x-b3-parentspanid", b"05e3ac9a4f6e3b90"));
        assert!(!headers.offer(b"X-B3-Sampled", b"1"));
        assert_eq!(
            headers.finish(),
            ctx(
                "0000000000000000a3ce929d0e0e4736",
                "00f067aa0ba902b7",
                Some("05e3ac9a4f6e3b90")
            )
        );
        // a trace id alone is not a context
        let mut half = TraceHeaders::default();
        half.offer(b"x-b3-traceid", b"a3ce929d0e0e4736");
        assert_eq!(half.finish(), None);
    }

    #[test]
    fn uber_trace_id() {
        assert_eq!(
            TraceContext::from_uber_trace_id(
                b"4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"
            ),
            ctx(TRACE, "00f067aa0ba902b7", None)
        );
        assert_eq!(
            TraceContext::from_uber_trace_id(b"a3ce929d0e0e4736%3Ab7ad6b7169203331%3a5%3A1"),
            ctx(
                "0000000000000000a3ce929d0e0e4736",
                "b7ad6b7169203331",
                Some("0000000000000005")
            )
        );
        for bad in [
            &b"a:b:c"[..],
            b"1:2:3:4:5",
            b"0:1:0:1",
            b"1:0:0:1",
            b"1:2:0:",
            b"%3a%3a%3a",
        ] {
            assert_eq!(TraceContext::from_uber_trace_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sw8() {
        // trace "1.2.3", segment "seg-a", span 7, then service/instance/endpoint/address
        let value = b"1-MS4yLjM=-c2VnLWE=-7-c3Zj-aW5zdA==-L2FwaQ==-MTAuMC4wLjE6ODA=";
        assert_eq!(TraceContext::from_sw8(value), ctx("1.2.3", "seg-a-7", None));
        for bad in [
            &b"1-MS4yLjM=-c2VnLWE=-x-c3Zj-aW5zdA==-L2FwaQ==-MTAuMC4wLjE6ODA="[..],
            b"2-MS4yLjM=-c2VnLWE=-7-c3Zj-aW5zdA==-L2FwaQ==-MTAuMC4wLjE6ODA=",
            b"1-!!!!-c2VnLWE=-7-c3Zj-aW5zdA==-L2FwaQ==-MTAuMC4wLjE6ODA=",
            b"1--c2VnLWE=-7-c3Zj-aW5zdA==-L2FwaQ==-MTAuMC4wLjE6ODA=",
            b"1-MS4yLjM=-c2VnLWE=-7",
        ] {
            assert_eq!(TraceContext::from_sw8(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn base64_decoding() {
        for (encoded, text) in [
            (&b"YQ=="[..], "a"),
            (b"YQ", "a"),
            (b"YWI=", "ab"),
            (b"YWJj", "abc"),
            (b"YWJjZA", "abcd"),
        ] {
            assert_eq!(base64_text(encoded).as_deref(), Some(text));
        }
        assert_eq!(base64_text(b"Y"), None);
        assert_eq!(base64_text(b""), None);
        assert_eq!(base64_text(b"/w=="), None, "not UTF-8");
    }

    #[test]
    fn precedence_and_first_valid_value() {
        let mut headers = TraceHeaders::default();
        headers.offer(
            b"sw8",
            b"1-MS4yLjM=-c2VnLWE=-7-c3Zj-aW5zdA==-L2FwaQ==-MTAuMC4wLjE6ODA=",
        );
        headers.offer(b"uber-trace-id", b"1:2:0:1");
        assert_eq!(
            headers.clone().finish().map(|c| c.span_id),
            Some("0000000000000002".into())
        );
        headers.offer(b"b3", b"3-4");
        headers.offer(b"traceparent", b"garbage");
        assert_eq!(
            headers.clone().finish().map(|c| c.span_id),
            Some("0000000000000004".into())
        );
        headers.offer(
            b"Traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        headers.offer(
            b"traceparent",
            b"00-11111111111111111111111111111111-2222222222222222-01",
        );
        assert_eq!(headers.finish(), ctx(TRACE, "00f067aa0ba902b7", None));
    }

    #[test]
    fn request_id_headers_default_to_x_request_id() {
        // The configured list is process-wide; this test only reads the default, which no
        // test in this crate changes.
        assert_eq!(request_id_header_rank(b"X-Request-ID"), Some(0));
        assert_eq!(request_id_header_rank(b"x-correlation-id"), None);
        let mut id = RequestIdHeader::default();
        assert!(!id.offer(b"host", b"a"));
        assert!(id.offer(b"x-request-id", b"  "));
        assert!(id.offer(b"X-Request-Id", b" abc "));
        assert!(id.offer(b"x-request-id", b"later"));
        assert_eq!(id.finish().as_deref(), Some("abc"));
    }

    #[test]
    fn configured_request_id_headers_rank_in_order() {
        let names = [b"x-correlation-id".to_vec(), b"x-request-id".to_vec()];
        assert_eq!(rank_in(Some(&names), b"X-Correlation-ID"), Some(0));
        assert_eq!(rank_in(Some(&names), b"x-request-id"), Some(1));
        assert_eq!(rank_in(Some(&names), b"x-trace"), None);
        assert_eq!(rank_in(Some(&[]), b"x-request-id"), None);
    }
}
