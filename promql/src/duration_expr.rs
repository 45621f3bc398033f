//! Duration expressions (`foo[5m+30s]`, `foo[1h:step()*2]`, `foo offset (2*1m)`,
//! `min_of(range(), 1h)` …), a Prometheus 3 feature the parser we use does not accept.
//!
//! Before parsing, the query text is rewritten: every range/subquery bracket and every
//! `offset` operand that is not a plain literal is evaluated (with the query's `step()`
//! and `range()`) and replaced by a literal number of milliseconds. String literals and
//! comments are copied untouched. Anything this module cannot read is left as it is, for
//! the parser to report.

use std::borrow::Cow;

use crate::error::{Error, Result};

/// What `step()` and `range()` evaluate to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DurationContext {
    /// The query step in ms (0 for an instant query).
    pub step_ms: i64,
    /// `end - start` of the query in ms (0 for an instant query).
    pub range_ms: i64,
}

/// Rewrites duration expressions in `query` into literals.
pub(crate) fn rewrite(query: &str, ctx: DurationContext) -> Result<Cow<'_, str>> {
    if !query.contains('[') && !query.to_ascii_lowercase().contains("offset") {
        return Ok(Cow::Borrowed(query));
    }
    let bytes = query.as_bytes();
    let mut out = String::with_capacity(query.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => {
                let end = skip_string(bytes, i);
                out.push_str(&query[i..end]);
                i = end;
            }
            b'#' => {
                let end = query[i..].find('\n').map_or(bytes.len(), |p| i + p);
                out.push_str(&query[i..end]);
                i = end;
            }
            b'[' => {
                let Some(close) = find_close_bracket(bytes, i) else {
                    out.push_str(&query[i..]);
                    break;
                };
                let inner = &query[i + 1..close];
                match rewrite_bracket(inner, ctx)? {
                    Some(replaced) => {
                        out.push('[');
                        out.push_str(&replaced);
                        out.push(']');
                        changed = true;
                    }
                    None => out.push_str(&query[i..=close]),
                }
                i = close + 1;
            }
            _ if is_word_byte(c) => {
                let start = i;
                while i < bytes.len() && is_word_byte(bytes[i]) {
                    i += 1;
                }
                let word = &query[start..i];
                out.push_str(word);
                if !word.eq_ignore_ascii_case("offset") {
                    continue;
                }
                if let Some((end, ms)) = offset_operand(query, i, ctx)? {
                    if ms == 0 {
                        // The parser rejects a zero duration; no offset is the same.
                        out.truncate(out.len() - word.len());
                    } else {
                        out.push(' ');
                        out.push_str(&format!("{ms}ms"));
                    }
                    i = end;
                    changed = true;
                }
            }
            _ => {
                // Copy one whole UTF-8 character.
                let len = utf8_len(c);
                let end = (i + len).min(bytes.len());
                out.push_str(query.get(i..end).unwrap_or(""));
                i = end;
            }
        }
    }
    Ok(if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(query)
    })
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// Returns the index just past the string literal starting at `start`.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

fn find_close_bracket(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b']' => return Some(i),
            b'[' => return None,
            b'"' | b'\'' | b'`' => i = skip_string(bytes, i),
            _ => i += 1,
        }
    }
    None
}

/// Rewrites the inside of `[...]`; `None` when it only holds literals.
fn rewrite_bracket(inner: &str, ctx: DurationContext) -> Result<Option<String>> {
    let parts = split_top_level_colon(inner);
    if parts.len() > 2 || parts.iter().all(|p| is_plain_literal(p.trim())) {
        return Ok(None);
    }
    let mut rewritten = Vec::with_capacity(parts.len());
    for (idx, part) in parts.iter().enumerate() {
        let trimmed = part.trim();
        if trimmed.is_empty() || is_plain_literal(trimmed) {
            rewritten.push(trimmed.to_string());
            continue;
        }
        let mut parser = DurParser::new(trimmed, ctx);
        let Some(secs) = parser.parse_full() else {
            return Ok(None);
        };
        let ms = secs_to_ms(secs)?;
        if ms <= 0 {
            let what = if idx == 0 { "range" } else { "step" };
            return Err(Error::Parse {
                message: format!("{what} duration must be greater than 0, got {ms}ms"),
            });
        }
        rewritten.push(format!("{ms}ms"));
    }
    Ok(Some(rewritten.join(":")))
}

fn split_top_level_colon(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ':' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A number or a duration literal such as `5m`, `1h30m`, `90`, `1.5`.
fn is_plain_literal(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let mut p = DurParser::new(
        s,
        DurationContext {
            step_ms: 0,
            range_ms: 0,
        },
    );
    p.literal().is_some() && p.pos == s.len()
}

fn secs_to_ms(secs: f64) -> Result<i64> {
    if !secs.is_finite() || secs.abs() > 9.0e15 {
        return Err(Error::Parse {
            message: format!("duration expression out of range: {secs}s"),
        });
    }
    Ok((secs * 1000.0).round() as i64)
}

/// Parses the operand after `offset` at byte `start`: signs and one primary. Returns the
/// end of the operand and its value in ms when the operand is not a plain literal.
fn offset_operand(query: &str, start: usize, ctx: DurationContext) -> Result<Option<(usize, i64)>> {
    let rest = &query[start..];
    let mut p = DurParser::new(rest, ctx);
    p.skip_ws();
    let mut negative = false;
    let mut signs = 0;
    loop {
        p.skip_ws();
        match p.peek() {
            Some(b'-') => {
                negative = !negative;
                signs += 1;
                p.pos += 1;
            }
            Some(b'+') => {
                signs += 1;
                p.pos += 1;
            }
            _ => break,
        }
    }
    p.skip_ws();
    let before = p.pos;
    if p.literal().is_some() && signs <= 1 {
        // A plain (possibly negative) literal: the parser reads it itself.
        return Ok(None);
    }
    p.pos = before;
    let Some(value) = p.primary() else {
        return Ok(None);
    };
    let value = if negative { -value } else { value };
    Ok(Some((start + p.pos, secs_to_ms(value)?)))
}

/// A small recursive-descent evaluator for duration arithmetic, in seconds.
struct DurParser<'a> {
    s: &'a [u8],
    pos: usize,
    ctx: DurationContext,
    depth: usize,
}

impl<'a> DurParser<'a> {
    fn new(s: &'a str, ctx: DurationContext) -> Self {
        DurParser {
            s: s.as_bytes(),
            pos: 0,
            ctx,
            depth: 0,
        }
    }

    fn parse_full(&mut self) -> Option<f64> {
        let v = self.expr()?;
        self.skip_ws();
        (self.pos == self.s.len()).then_some(v)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn expr(&mut self) -> Option<f64> {
        self.depth += 1;
        if self.depth > 64 {
            return None;
        }
        let mut lhs = self.term()?;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'+') => {
                    self.pos += 1;
                    lhs += self.term()?;
                }
                Some(b'-') => {
                    self.pos += 1;
                    lhs -= self.term()?;
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Some(lhs)
    }

    fn term(&mut self) -> Option<f64> {
        let mut lhs = self.unary()?;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'*') => {
                    self.pos += 1;
                    lhs *= self.unary()?;
                }
                Some(b'/') => {
                    self.pos += 1;
                    lhs /= self.unary()?;
                }
                Some(b'%') => {
                    self.pos += 1;
                    lhs %= self.unary()?;
                }
                _ => break,
            }
        }
        Some(lhs)
    }

    fn unary(&mut self) -> Option<f64> {
        self.skip_ws();
        match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                Some(-self.unary()?)
            }
            Some(b'+') => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Option<f64> {
        let base = self.primary()?;
        self.skip_ws();
        if self.peek() == Some(b'^') {
            self.pos += 1;
            let exp = self.unary()?;
            return Some(base.powf(exp));
        }
        Some(base)
    }

    fn primary(&mut self) -> Option<f64> {
        self.skip_ws();
        match self.peek()? {
            b'(' => {
                self.pos += 1;
                let v = self.expr()?;
                self.skip_ws();
                if self.peek() != Some(b')') {
                    return None;
                }
                self.pos += 1;
                Some(v)
            }
            c if c.is_ascii_digit() || c == b'.' => self.literal(),
            c if c.is_ascii_alphabetic() => self.call(),
            _ => None,
        }
    }

    fn call(&mut self) -> Option<f64> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.pos += 1;
        }
        let name = std::str::from_utf8(&self.s[start..self.pos])
            .ok()?
            .to_ascii_lowercase();
        self.skip_ws();
        if self.peek() != Some(b'(') {
            return None;
        }
        self.pos += 1;
        let mut args = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b')') {
            self.pos += 1;
        } else {
            loop {
                args.push(self.expr()?);
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b')') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        match (name.as_str(), args.as_slice()) {
            ("step", []) => Some(self.ctx.step_ms as f64 / 1000.0),
            ("range", []) => Some(self.ctx.range_ms as f64 / 1000.0),
            ("min_of", [a, b]) => Some(if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.min(*b)
            }),
            ("max_of", [a, b]) => Some(if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(*b)
            }),
            _ => None,
        }
    }

    /// A number (seconds) or a duration literal (`1h30m`, `500ms`).
    fn literal(&mut self) -> Option<f64> {
        let start = self.pos;
        let mut total_ms: f64 = 0.0;
        let mut saw_unit = false;
        loop {
            let num_start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'.') {
                self.pos += 1;
            }
            if self.pos == num_start {
                break;
            }
            // Exponent, only for unitless numbers.
            if !saw_unit && matches!(self.peek(), Some(b'e' | b'E')) {
                let save = self.pos;
                self.pos += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.pos += 1;
                }
                let exp_start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                if self.pos == exp_start {
                    self.pos = save;
                } else {
                    let text = std::str::from_utf8(&self.s[num_start..self.pos]).ok()?;
                    return text.parse::<f64>().ok();
                }
            }
            let number: f64 = std::str::from_utf8(&self.s[num_start..self.pos])
                .ok()?
                .parse()
                .ok()?;
            let unit_ms = self.unit();
            match unit_ms {
                Some(ms) => {
                    saw_unit = true;
                    total_ms += number * ms;
                }
                None => {
                    if saw_unit {
                        self.pos = num_start;
                        break;
                    }
                    return Some(number);
                }
            }
        }
        if !saw_unit {
            self.pos = start;
            return None;
        }
        Some(total_ms / 1000.0)
    }

    fn unit(&mut self) -> Option<f64> {
        let rest = &self.s[self.pos..];
        let (len, ms) = if rest.starts_with(b"ms") {
            (2, 1.0)
        } else {
            match rest.first()? {
                b's' => (1, 1000.0),
                b'm' => (1, 60_000.0),
                b'h' => (1, 3_600_000.0),
                b'd' => (1, 86_400_000.0),
                b'w' => (1, 604_800_000.0),
                b'y' => (1, 31_536_000_000.0),
                _ => return None,
            }
        };
        // A unit must not run into an identifier (`5min`, `1step`).
        if rest
            .get(len)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        {
            return None;
        }
        self.pos += len;
        Some(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(q: &str, step_ms: i64, range_ms: i64) -> String {
        rewrite(q, DurationContext { step_ms, range_ms })
            .unwrap()
            .into_owned()
    }

    #[test]
    fn plain_queries_are_untouched() {
        assert_eq!(rw("rate(x[5m])", 0, 0), "rate(x[5m])");
        assert_eq!(rw("x[1h:1m] offset 5m", 0, 0), "x[1h:1m] offset 5m");
        assert_eq!(rw("x offset -50", 0, 0), "x offset -50");
        assert_eq!(rw(r#"x{a="[1+1]"}"#, 0, 0), r#"x{a="[1+1]"}"#);
    }

    #[test]
    fn bracket_arithmetic() {
        assert_eq!(rw("changes(x[26m+4m])", 0, 0), "changes(x[1800000ms])");
        assert_eq!(rw("x[30m1s-30m1s % 1m]", 0, 0), "x[1800000ms]");
        assert_eq!(rw("x[1+(STep()-5)*2]", 10_000, 0), "x[11000ms]");
        assert_eq!(rw("x[29s+1s:5s+5s]", 0, 0), "x[30000ms:10000ms]");
        assert_eq!(rw("x[min_of(step()+1,1h)]", 5000, 0), "x[6000ms]");
    }

    #[test]
    fn offset_operand_is_signs_and_one_primary() {
        assert_eq!(rw("x offset (2 * 2)", 0, 0), "x offset 4000ms");
        assert_eq!(rw("x offset (-2 ^ 2)", 0, 0), "x offset -4000ms");
        assert_eq!(rw("x offset -step()*2", 5000, 0), "x offset -5000ms*2");
        assert_eq!(
            rw("x offset min_of(step(), 1s)+8000", 5000, 0),
            "x offset 1000ms+8000"
        );
        assert_eq!(rw("x offset range()", 0, 10_000), "x offset 10000ms");
        assert_eq!(rw("sum by (offset) (x)", 0, 0), "sum by (offset) (x)");
    }
}
