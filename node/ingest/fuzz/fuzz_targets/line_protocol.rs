//! Feeds arbitrary bytes to the line protocol parser with the precision chosen by the first
//! byte. Every point parsed must write back with `Point::to_line` to a line that parses to
//! the same point and writes the same text again.

#![no_main]

use flowmesh_ingest::line_protocol::{Limits, Precision, parse, parse_line};
use libfuzzer_sys::fuzz_target;

const PRECISIONS: [Precision; 4] = [
    Precision::Nanoseconds,
    Precision::Microseconds,
    Precision::Milliseconds,
    Precision::Seconds,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let precision = PRECISIONS[usize::from(selector) % PRECISIONS.len()];
    let limits = Limits {
        max_line_bytes: 4096,
        max_reported_errors: 8,
        ..Limits::default()
    };
    let Ok(parsed) = parse(body, precision, &limits) else {
        return;
    };
    assert!(parsed.rejected.len() <= limits.max_reported_errors);
    assert!(parsed.rejected.len() <= parsed.rejected_lines);
    for point in &parsed.points {
        assert!(!point.fields.is_empty());
        assert!(point.tags.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let line = point.to_line().expect("a parsed point writes back");
        let again = parse_line(&line, Precision::Nanoseconds)
            .expect("its line parses")
            .expect("and holds a point");
        assert_eq!(&again, point);
        assert_eq!(again.to_line().expect("writes back"), line);
    }
});
