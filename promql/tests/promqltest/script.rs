//! Parser for Prometheus' PromQL test script language (see `testdata/FORMAT.md`).

use flowmesh_promql::Labels;

/// One value of an expanding series notation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SeqValue {
    Omitted,
    Float(f64),
    Stale,
    /// A native histogram sample (`{{...}}`); not supported by the engine.
    Histogram,
}

#[derive(Clone, Debug)]
pub struct SeriesLine {
    pub labels: Labels,
    pub values: Vec<SeqValue>,
    /// `metric{...}@st`: start timestamps for the series (not supported).
    pub start_timestamps: bool,
}

#[derive(Clone, Debug)]
pub enum FailExpectation {
    Any,
    Msg(String),
    Regex(String),
}

#[derive(Clone, Debug)]
pub enum EvalKind {
    Instant {
        at_ms: i64,
    },
    Range {
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    },
}

#[derive(Clone, Debug)]
pub struct EvalCase {
    pub line: usize,
    pub expr: String,
    pub kind: EvalKind,
    pub fail: Option<FailExpectation>,
    pub ordered: bool,
    pub expect_string: Option<String>,
    pub range_vector: Option<(i64, i64, i64)>,
    pub series: Vec<SeriesLine>,
    pub scalar: Option<f64>,
    /// `expect warn`/`expect info` lines (annotations are not implemented).
    pub annotation_expectations: usize,
    /// Why the harness could not read this case, if it could not.
    pub malformed: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Command {
    Load {
        interval_ms: i64,
        series: Vec<SeriesLine>,
        with_nhcb: bool,
    },
    Clear,
    Eval(Box<EvalCase>),
}

/// Parses a test script. Errors name the line.
pub fn parse_script(input: &str) -> Result<Vec<Command>, String> {
    // Trimmed lines; comment lines become blank (and so end a block), as in promqltest.
    let lines: Vec<String> = input
        .lines()
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') {
                String::new()
            } else {
                t.to_string()
            }
        })
        .collect();
    let mut commands = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        let lineno = i + 1;
        if line.is_empty() {
            i += 1;
            continue;
        }
        let word = line.split_whitespace().next().unwrap_or("");
        match word {
            "clear" => {
                commands.push(Command::Clear);
                i += 1;
            }
            "load" | "load_with_nhcb" => {
                let rest = line[word.len()..].trim();
                let interval_ms = parse_duration_ms(rest)
                    .ok_or_else(|| format!("line {lineno}: bad load interval {rest:?}"))?;
                let mut series = Vec::new();
                i += 1;
                while i < lines.len() && !lines[i].is_empty() {
                    series.push(
                        parse_series_line(&lines[i], true)
                            .map_err(|e| format!("line {}: {e}", i + 1))?,
                    );
                    i += 1;
                }
                commands.push(Command::Load {
                    interval_ms,
                    series,
                    with_nhcb: word == "load_with_nhcb",
                });
            }
            w if w.starts_with("eval") => {
                let mut body = Vec::new();
                let mut j = i + 1;
                while j < lines.len() && !lines[j].is_empty() {
                    body.push((j + 1, lines[j].clone()));
                    j += 1;
                }
                commands.push(Command::Eval(Box::new(parse_eval(lineno, line, &body))));
                i = j;
            }
            _ => return Err(format!("line {lineno}: unknown command {line:?}")),
        }
    }
    Ok(commands)
}

fn parse_eval(lineno: usize, line: &str, body: &[(usize, String)]) -> EvalCase {
    let mut case = EvalCase {
        line: lineno,
        expr: String::new(),
        kind: EvalKind::Instant { at_ms: 0 },
        fail: None,
        ordered: false,
        expect_string: None,
        range_vector: None,
        series: Vec::new(),
        scalar: None,
        annotation_expectations: 0,
        malformed: None,
    };
    if let Err(e) = parse_eval_into(&mut case, line, body) {
        case.malformed = Some(e);
    }
    case
}

fn parse_eval_into(
    case: &mut EvalCase,
    line: &str,
    body: &[(usize, String)],
) -> Result<(), String> {
    let instant = regex::Regex::new(
        r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$",
    )
    .map_err(|e| e.to_string())?;
    let range = regex::Regex::new(
        r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$",
    )
    .map_err(|e| e.to_string())?;
    let modifier;
    if let Some(c) = range.captures(line) {
        modifier = c.get(1).map(|m| m.as_str().to_string());
        let start_ms = parse_duration_ms(&c[2]).ok_or("bad range start")?;
        let end_ms = parse_duration_ms(&c[3]).ok_or("bad range end")?;
        let step_ms = parse_duration_ms(&c[4]).ok_or("bad range step")?;
        case.kind = EvalKind::Range {
            start_ms,
            end_ms,
            step_ms,
        };
        case.expr = c[5].to_string();
    } else if let Some(c) = instant.captures(line) {
        modifier = c.get(1).map(|m| m.as_str().to_string());
        let at_ms = match c.get(2) {
            Some(m) => parse_duration_ms(m.as_str()).ok_or("bad instant time")?,
            None => 0,
        };
        case.kind = EvalKind::Instant { at_ms };
        case.expr = c[3].to_string();
    } else {
        return Err(format!("unreadable eval line {line:?}"));
    }
    match modifier.as_deref() {
        Some("fail") => case.fail = Some(FailExpectation::Any),
        Some("ordered") => case.ordered = true,
        Some("warn") | Some("info") => case.annotation_expectations += 1,
        _ => {}
    }
    for (_, l) in body {
        if let Some(rest) = l.strip_prefix("expected_fail_message") {
            case.fail = Some(FailExpectation::Msg(rest.trim().to_string()));
            continue;
        }
        if let Some(rest) = l.strip_prefix("expected_fail_regexp") {
            case.fail = Some(FailExpectation::Regex(rest.trim().to_string()));
            continue;
        }
        if let Some(rest) = l.strip_prefix("expect ") {
            parse_expect(case, rest.trim())?;
            continue;
        }
        if let Some(v) = parse_go_float(l) {
            case.scalar = Some(v);
            continue;
        }
        case.series.push(parse_series_line(l, false)?);
    }
    Ok(())
}

fn parse_expect(case: &mut EvalCase, rest: &str) -> Result<(), String> {
    let (kind, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let tail = tail.trim();
    match kind {
        "fail" => {
            case.fail = Some(if let Some(m) = tail.strip_prefix("msg:") {
                FailExpectation::Msg(unquote_loose(m.trim()))
            } else if let Some(r) = tail.strip_prefix("regex:") {
                FailExpectation::Regex(unquote_loose(r.trim()))
            } else {
                FailExpectation::Any
            });
        }
        "ordered" => case.ordered = true,
        "warn" | "info" => case.annotation_expectations += 1,
        "no_warn" | "no_info" => {}
        "string" => {
            let s = tail.trim();
            case.expect_string = Some(
                promql_parser::util::unquote_string(s)
                    .map_err(|e| format!("bad expected string {s:?}: {e}"))?,
            );
        }
        "range" => {
            // range vector from <start> to <end> step <step>
            let words: Vec<&str> = tail.split_whitespace().collect();
            match words.as_slice() {
                ["vector", "from", s, "to", e, "step", st] => {
                    case.range_vector = Some((
                        parse_duration_ms(s).ok_or("bad range vector start")?,
                        parse_duration_ms(e).ok_or("bad range vector end")?,
                        parse_duration_ms(st).ok_or("bad range vector step")?,
                    ));
                }
                _ => return Err(format!("bad expect range line {tail:?}")),
            }
        }
        other => return Err(format!("unknown expectation {other:?}")),
    }
    Ok(())
}

/// Removes surrounding double quotes if present (messages are written both ways).
fn unquote_loose(s: &str) -> String {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        promql_parser::util::unquote_string(s).unwrap_or_else(|_| s[1..s.len() - 1].to_string())
    } else {
        s.to_string()
    }
}

/// Parses `metric{a="b"} values...`.
pub fn parse_series_line(line: &str, load: bool) -> Result<SeriesLine, String> {
    let (labels, rest) = parse_descriptor(line)?;
    let (start_timestamps, rest) = match rest.strip_prefix("@st") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    // Start-timestamp lines hold durations, not values; they are not loaded.
    let values = if start_timestamps {
        Vec::new()
    } else {
        parse_values(rest.trim()).map_err(|e| format!("{e} in {line:?}"))?
    };
    if !load && values.is_empty() {
        return Err(format!("expected values in {line:?}"));
    }
    Ok(SeriesLine {
        labels,
        values,
        start_timestamps,
    })
}

fn parse_descriptor(line: &str) -> Result<(Labels, &str), String> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'{' && bytes[i] != b'@'
    {
        i += 1;
    }
    let name = &line[..i];
    let mut labels = Labels::empty();
    if !name.is_empty() {
        labels.set("__name__", name);
    }
    if i < bytes.len() && bytes[i] == b'{' {
        let close =
            find_brace_end(line, i).ok_or_else(|| format!("unclosed braces in {line:?}"))?;
        parse_label_pairs(&line[i + 1..close], &mut labels)?;
        i = close + 1;
    }
    if name.is_empty() && i == 0 {
        return Err(format!("no series descriptor in {line:?}"));
    }
    Ok((labels, &line[i..]))
}

fn find_brace_end(s: &str, open: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'}' => return Some(i),
            b'"' | b'\'' | b'`' => {
                let q = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

fn parse_label_pairs(inner: &str, labels: &mut Labels) -> Result<(), String> {
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (name, after) = if rest.starts_with('"') {
            let end = quoted_end(rest).ok_or("bad quoted label name")?;
            (
                promql_parser::util::unquote_string(&rest[..end]).map_err(|e| e.to_string())?,
                &rest[end..],
            )
        } else {
            let end = rest
                .find(|c: char| c == '=' || c.is_whitespace())
                .ok_or("bad label")?;
            (rest[..end].to_string(), &rest[end..])
        };
        let after = after
            .trim_start()
            .strip_prefix('=')
            .ok_or("expected '='")?
            .trim_start();
        let end = quoted_end(after).ok_or("bad label value")?;
        let value =
            promql_parser::util::unquote_string(&after[..end]).map_err(|e| e.to_string())?;
        labels.set(name, value);
        rest = after[end..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(())
}

/// Index just past the quoted string at the start of `s`.
fn quoted_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let q = *bytes.first()?;
    if q != b'"' && q != b'\'' && q != b'`' {
        return None;
    }
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if bytes[i] == q {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Splits the values part into items, keeping `{{ ... }}` together.
fn split_items(s: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"{{") {
            depth += 1;
            start.get_or_insert(i);
            i += 2;
            continue;
        }
        if bytes[i..].starts_with(b"}}") && depth > 0 {
            depth -= 1;
            i += 2;
            continue;
        }
        if bytes[i].is_ascii_whitespace() && depth == 0 {
            if let Some(st) = start.take() {
                items.push(&s[st..i]);
            }
        } else {
            start.get_or_insert(i);
        }
        i += 1;
    }
    if let Some(st) = start {
        items.push(&s[st..]);
    }
    items
}

fn parse_values(s: &str) -> Result<Vec<SeqValue>, String> {
    let mut out = Vec::new();
    for item in split_items(s) {
        if item.contains("{{") {
            let after = item.rsplit("}}").next().unwrap_or("");
            let n = match after.strip_prefix('x') {
                Some(d) => {
                    d.parse::<usize>()
                        .map_err(|_| format!("bad repeat {item:?}"))?
                        + 1
                }
                None => 1,
            };
            out.extend(std::iter::repeat_n(SeqValue::Histogram, n));
            continue;
        }
        if item == "_" {
            out.push(SeqValue::Omitted);
            continue;
        }
        if let Some(n) = item.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad repeat {item:?}"))?;
            out.extend(std::iter::repeat_n(SeqValue::Omitted, n));
            continue;
        }
        if item == "stale" {
            out.push(SeqValue::Stale);
            continue;
        }
        let (head, times) = match item.rfind('x') {
            Some(p)
                if p > 0
                    && item[p + 1..].chars().all(|c| c.is_ascii_digit())
                    && p + 1 < item.len() =>
            {
                (
                    &item[..p],
                    Some(item[p + 1..].parse::<usize>().map_err(|e| e.to_string())?),
                )
            }
            _ => (item, None),
        };
        // Split `a+b` / `a-b`, ignoring a leading sign and exponent signs.
        let hb = head.as_bytes();
        let mut op_pos = None;
        for k in 1..hb.len() {
            if (hb[k] == b'+' || hb[k] == b'-') && !matches!(hb[k - 1], b'e' | b'E') {
                op_pos = Some(k);
                break;
            }
        }
        let (a, b) = match op_pos {
            Some(k) => (
                parse_go_float(&head[..k]).ok_or_else(|| format!("bad number in {item:?}"))?,
                parse_go_float(&head[k..]).ok_or_else(|| format!("bad number in {item:?}"))?,
            ),
            None => (
                parse_go_float(head).ok_or_else(|| format!("bad value {item:?}"))?,
                0.0,
            ),
        };
        match times {
            None => {
                if op_pos.is_some() {
                    return Err(format!("expansion without repeat count in {item:?}"));
                }
                out.push(SeqValue::Float(a));
            }
            Some(n) => {
                let mut v = a;
                for _ in 0..=n {
                    out.push(SeqValue::Float(v));
                    v += b;
                }
            }
        }
    }
    Ok(out)
}

/// Go's `strconv.ParseFloat` for the forms used in test files.
pub fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Some(f64::NAN),
        _ => {}
    }
    if t.is_empty()
        || !t
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Parses `50m`, `1h30m`, `10s53ms`, `0`, `100` (seconds) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<f64>() {
        return Some((n * 1000.0).round() as i64);
    }
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: i64 = s[start..i].parse().ok()?;
        let unit_ms = if s[i..].starts_with("ms") {
            i += 2;
            1
        } else {
            let u = *bytes.get(i)?;
            i += 1;
            match u {
                b's' => 1000,
                b'm' => 60_000,
                b'h' => 3_600_000,
                b'd' => 86_400_000,
                b'w' => 604_800_000,
                b'y' => 31_536_000_000,
                _ => return None,
            }
        };
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(if neg { -total } else { total })
}
