//! Runs Prometheus' own PromQL test scripts (`testdata/*.test`, Apache-2.0, see
//! `testdata/SOURCE`) against the engine, prints a per-file pass table and the failing
//! cases, and asserts the pass rate over the float-only files.
//!
//! Cases that read native histogram data (loaded with `{{...}}` or `load_with_nhcb`),
//! expect a native histogram result, or read start timestamps (`@st`) are skipped with
//! that reason: those features are out of scope. `expect warn`/`expect info` lines are
//! not checked (the engine produces no annotations); they are counted in the table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "promqltest/script.rs"]
mod script;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use flowmesh_promql::{
    Engine, Error, LabelMatcher, Labels, MemorySource, Result, Series, SeriesSource, Value,
    stale_nan,
};
use script::{Command, EvalCase, EvalKind, FailExpectation, SeqValue, SeriesLine, parse_script};

/// Files whose loads use only float samples. The pass rate over these is asserted.
const FLOAT_ONLY_FILES: &[&str] = &[
    "at_modifier.test",
    "collision.test",
    "duration_expression.test",
    "fill-modifier.test",
    "literals.test",
    "name_label_dropping.test",
    "selectors.test",
    "staleness.test",
    "trig_functions.test",
    "type_and_unit.test",
];

/// Minimum pass rate over the float-only files.
const REQUIRED_FLOAT_ONLY_PASS_RATE: f64 = 0.95;

/// A [`MemorySource`] that notes when a selector touches a series whose data the engine
/// cannot represent (native histograms, start timestamps).
struct TrackingSource {
    inner: MemorySource,
    flagged: Vec<(Labels, &'static str)>,
    touched: RefCell<Option<&'static str>>,
}

impl SeriesSource for TrackingSource {
    fn select(&self, matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>> {
        for (labels, reason) in &self.flagged {
            if LabelMatcher::matches_all(matchers, labels) {
                self.touched.borrow_mut().get_or_insert(reason);
            }
        }
        self.inner.select(matchers, start_ms, end_ms)
    }
}

#[derive(Default)]
struct FileReport {
    passed: usize,
    failed: usize,
    skipped: BTreeMap<&'static str, usize>,
    unchecked_annotations: usize,
    failures: Vec<String>,
}

enum Outcome {
    Pass,
    Fail(String),
    Skip(&'static str),
}

fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 0.000_001;
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < EPSILON * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

fn load(
    engine: &mut Engine<TrackingSource>,
    interval_ms: i64,
    series: &[SeriesLine],
    with_nhcb: bool,
) {
    for s in series {
        let src = engine.source_mut();
        if s.start_timestamps {
            src.flagged.push((s.labels.clone(), "start timestamps"));
            continue;
        }
        let mut has_histogram = false;
        for (i, v) in s.values.iter().enumerate() {
            let t = i as i64 * interval_ms;
            match v {
                SeqValue::Omitted => {}
                SeqValue::Float(f) => src.inner.append(&s.labels, t, *f),
                SeqValue::Stale => src.inner.append(&s.labels, t, stale_nan()),
                SeqValue::Histogram => has_histogram = true,
            }
        }
        if has_histogram {
            src.flagged.push((s.labels.clone(), "native histograms"));
        }
        if with_nhcb {
            let name = s.labels.metric_name().unwrap_or("").to_string();
            for suffix in ["_bucket", "_count", "_sum"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    let mut l = s.labels.clone();
                    l.set("__name__", base);
                    l.remove("le");
                    src.flagged.push((l, "native histograms"));
                }
            }
        }
    }
}

fn expected_points(values: &[SeqValue], start: i64, step: i64) -> Vec<(i64, f64)> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match v {
            SeqValue::Float(f) => Some((start + i as i64 * step, *f)),
            SeqValue::Stale => Some((start + i as i64 * step, f64::NAN)),
            _ => None,
        })
        .collect()
}

fn compare_matrix(
    got: &[Series],
    expected: &[SeriesLine],
    start: i64,
    step: i64,
) -> Result<(), String> {
    let expected: Vec<(Labels, Vec<(i64, f64)>)> = expected
        .iter()
        .map(|s| (s.labels.clone(), expected_points(&s.values, start, step)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if got.len() != expected.len() {
        return Err(format!(
            "expected {} series, got {}: {}",
            expected.len(),
            got.len(),
            got.iter()
                .map(|s| s.labels.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    for (labels, points) in &expected {
        let Some(actual) = got.iter().find(|s| &s.labels == labels) else {
            return Err(format!("missing series {labels}"));
        };
        if actual.samples.len() != points.len()
            || actual
                .samples
                .iter()
                .zip(points)
                .any(|(a, e)| a.0 != e.0 || !almost_equal(a.1, e.1))
        {
            return Err(format!(
                "series {labels}: expected {:?}, got {:?}",
                points, actual.samples
            ));
        }
    }
    Ok(())
}

fn check_result(
    case: &EvalCase,
    result: Result<Value, Error>,
    range_step: Option<(i64, i64)>,
) -> Outcome {
    let value = match (result, &case.fail) {
        (Err(e), Some(FailExpectation::Any)) => {
            let _ = e;
            return Outcome::Pass;
        }
        (Err(e), Some(FailExpectation::Msg(m))) => {
            return if e.to_string().trim() == m.trim() {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("expected error {m:?}, got {:?}", e.to_string()))
            };
        }
        (Err(e), Some(FailExpectation::Regex(r))) => {
            return match regex::Regex::new(r) {
                Ok(re) if re.is_match(&e.to_string()) => Outcome::Pass,
                _ => Outcome::Fail(format!(
                    "expected error matching {r:?}, got {:?}",
                    e.to_string()
                )),
            };
        }
        (Err(e), None) => return Outcome::Fail(format!("unexpected error: {e}")),
        (Ok(_), Some(_)) => return Outcome::Fail("expected an error, query succeeded".into()),
        (Ok(v), None) => v,
    };
    if let Some(expected) = &case.expect_string {
        return match value {
            Value::String(s) if &s == expected => Outcome::Pass,
            other => Outcome::Fail(format!("expected string {expected:?}, got {other:?}")),
        };
    }
    match value {
        Value::Scalar { value, .. } => match case.scalar {
            Some(e) if almost_equal(value, e) => Outcome::Pass,
            Some(e) => Outcome::Fail(format!("expected scalar {e}, got {value}")),
            None => Outcome::Fail(format!("got scalar {value}, expected series")),
        },
        Value::String(s) => Outcome::Fail(format!("got string {s:?}")),
        Value::Vector(v) => {
            if case.scalar.is_some() {
                return Outcome::Fail(format!("expected scalar, got vector of {}", v.len()));
            }
            if v.len() != case.series.len() {
                return Outcome::Fail(format!(
                    "expected {} samples, got {}: {}",
                    case.series.len(),
                    v.len(),
                    v.iter()
                        .map(|s| format!("{} {}", s.labels, s.value))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for (i, e) in case.series.iter().enumerate() {
                let expected_value = match e.values.as_slice() {
                    [SeqValue::Float(f)] => *f,
                    _ => return Outcome::Fail(format!("bad expectation for {}", e.labels)),
                };
                let found = if case.ordered {
                    Some(&v[i]).filter(|s| s.labels == e.labels)
                } else {
                    v.iter().find(|s| s.labels == e.labels)
                };
                match found {
                    Some(s) if almost_equal(s.value, expected_value) => {}
                    Some(s) => {
                        return Outcome::Fail(format!(
                            "{}: expected {expected_value}, got {}",
                            e.labels, s.value
                        ));
                    }
                    None => {
                        return Outcome::Fail(format!(
                            "expected {} {}{}, got {}",
                            e.labels,
                            expected_value,
                            if case.ordered { " (ordered)" } else { "" },
                            v.iter()
                                .map(|s| format!("{} {}", s.labels, s.value))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
            }
            Outcome::Pass
        }
        Value::Matrix(m) => {
            let (start, step) = match (range_step, case.range_vector) {
                (Some(rs), _) => rs,
                (None, Some((start, _, step))) => (start, step),
                (None, None) => {
                    if m.is_empty() && case.series.is_empty() {
                        return Outcome::Pass;
                    }
                    return Outcome::Fail(
                        "got a range vector without `expect range vector`".into(),
                    );
                }
            };
            match compare_matrix(&m, &case.series, start, step) {
                Ok(()) => Outcome::Pass,
                Err(e) => Outcome::Fail(e),
            }
        }
    }
}

fn run_case(engine: &Engine<TrackingSource>, case: &EvalCase) -> Outcome {
    if let Some(m) = &case.malformed {
        return Outcome::Fail(format!("harness could not read the case: {m}"));
    }
    if case
        .series
        .iter()
        .any(|s| s.values.contains(&SeqValue::Histogram))
    {
        return Outcome::Skip("native histogram result");
    }
    if case.expr.contains("</") || case.expr.contains(">/") {
        return Outcome::Skip("native histogram trim operators");
    }
    engine.source().touched.replace(None);
    let (result, range_step) = match case.kind {
        EvalKind::Instant { at_ms } => (engine.instant(&case.expr, at_ms), None),
        EvalKind::Range {
            start_ms,
            end_ms,
            step_ms,
        } => (
            engine
                .range(&case.expr, start_ms, end_ms, step_ms)
                .map(Value::Matrix),
            Some((start_ms, step_ms)),
        ),
    };
    if let Some(reason) = *engine.source().touched.borrow() {
        return Outcome::Skip(reason);
    }
    check_result(case, result, range_step)
}

fn run_file(path: &Path) -> FileReport {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let text = std::fs::read_to_string(path).unwrap();
    let commands = parse_script(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut engine = Engine::new(TrackingSource {
        inner: MemorySource::new(),
        flagged: Vec::new(),
        touched: RefCell::new(None),
    });
    let mut report = FileReport::default();
    for cmd in &commands {
        match cmd {
            Command::Clear => {
                let src = engine.source_mut();
                src.inner.clear();
                src.flagged.clear();
            }
            Command::Load {
                interval_ms,
                series,
                with_nhcb,
            } => load(&mut engine, *interval_ms, series, *with_nhcb),
            Command::Eval(case) => {
                report.unchecked_annotations += case.annotation_expectations;
                match run_case(&engine, case) {
                    Outcome::Pass => report.passed += 1,
                    Outcome::Skip(reason) => *report.skipped.entry(reason).or_default() += 1,
                    Outcome::Fail(reason) => {
                        report.failed += 1;
                        let mut reason = reason;
                        if reason.len() > 300 {
                            let mut cut = 300;
                            while !reason.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            reason.truncate(cut);
                            reason.push('…');
                        }
                        report
                            .failures
                            .push(format!("{name}:{} {} — {reason}", case.line, case.expr));
                    }
                }
            }
        }
    }
    report
}

#[test]
fn prometheus_test_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "test scripts missing from {}",
        dir.display()
    );
    for f in FLOAT_ONLY_FILES {
        assert!(dir.join(f).exists(), "float-only file {f} missing");
    }

    let mut reports = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let report = run_file(path);
        reports.push((name, report));
    }

    println!();
    println!(
        "{:<28} {:>6} {:>6} {:>6} {:>6}  skipped because / unchecked annotations",
        "file", "float", "passed", "failed", "skip"
    );
    let (mut fo_pass, mut fo_fail) = (0usize, 0usize);
    let (mut all_pass, mut all_fail, mut all_skip) = (0usize, 0usize, 0usize);
    for (name, r) in &reports {
        let float_only = FLOAT_ONLY_FILES.contains(&name.as_str());
        let skipped: usize = r.skipped.values().sum();
        if float_only {
            fo_pass += r.passed;
            fo_fail += r.failed;
        }
        all_pass += r.passed;
        all_fail += r.failed;
        all_skip += skipped;
        let reasons = r
            .skipped
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:<28} {:>6} {:>6} {:>6} {:>6}  {}{}",
            name,
            if float_only { "yes" } else { "" },
            r.passed,
            r.failed,
            skipped,
            reasons,
            if r.unchecked_annotations > 0 {
                format!(
                    " [{} warn/info expectations not checked]",
                    r.unchecked_annotations
                )
            } else {
                String::new()
            }
        );
    }
    let fo_rate = fo_pass as f64 / (fo_pass + fo_fail).max(1) as f64;
    let all_rate = all_pass as f64 / (all_pass + all_fail).max(1) as f64;
    println!(
        "float-only files: {fo_pass} passed, {fo_fail} failed ({:.1}%)",
        fo_rate * 100.0
    );
    println!(
        "all files, float cases (skipped excluded): {all_pass} passed, {all_fail} failed ({:.1}%), {all_skip} skipped",
        all_rate * 100.0
    );
    println!();
    println!("failing cases:");
    for (_, r) in &reports {
        for f in &r.failures {
            println!("  {f}");
        }
    }
    assert!(
        fo_rate >= REQUIRED_FLOAT_ONLY_PASS_RATE,
        "float-only pass rate {:.1}% is below {:.0}%",
        fo_rate * 100.0,
        REQUIRED_FLOAT_ONLY_PASS_RATE * 100.0
    );
}
