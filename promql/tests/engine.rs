//! Engine behaviour through the public API: selection ranges asked of the source,
//! lookback and staleness, rate extrapolation, vector matching errors, topk ordering,
//! histogram_quantile edge cases, limits and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::time::Duration;

use flowmesh_promql::{
    Engine, EngineOptions, Error, ErrorCode, LabelMatcher, Labels, MatchOp, MemorySource, Result,
    Series, SeriesSource, Value, stale_nan,
};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// Loads `values[i]` at `i * step_ms` (None = no sample).
fn load(src: &mut MemorySource, l: &Labels, step_ms: i64, values: &[Option<f64>]) {
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v {
            src.append(l, i as i64 * step_ms, *v);
        }
    }
}

fn vector(v: Value) -> Vec<(String, f64)> {
    match v {
        Value::Vector(v) => v
            .into_iter()
            .map(|s| (s.labels.to_string(), s.value))
            .collect(),
        other => panic!("expected a vector, got {other:?}"),
    }
}

fn scalar(v: Value) -> f64 {
    match v {
        Value::Scalar { value, .. } => value,
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// Records every `select` call.
struct Recording {
    inner: MemorySource,
    calls: RefCell<Vec<(String, i64, i64)>>,
}

impl SeriesSource for Recording {
    fn select(&self, matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>> {
        let names: Vec<String> = matchers
            .iter()
            .map(|m| format!("{}={}", m.name, m.value))
            .collect();
        self.calls
            .borrow_mut()
            .push((names.join(","), start_ms, end_ms));
        self.inner.select(matchers, start_ms, end_ms)
    }
}

#[test]
fn source_is_asked_for_exactly_the_needed_range_once_per_selector() {
    let engine = Engine::new(Recording {
        inner: MemorySource::new(),
        calls: RefCell::new(Vec::new()),
    });
    // Range query 10m..20m step 1m, rate over 5m with offset 1m, plus a subquery of 10m
    // over an instant selector (lookback 5m) evaluated at 30s resolution.
    engine
        .range(
            "rate(a[5m] offset 1m) + max_over_time(b[10m:30s])",
            600_000,
            1_200_000,
            60_000,
        )
        .unwrap();
    let calls = engine.source().calls.borrow().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let a = calls.iter().find(|c| c.0 == "__name__=a").unwrap();
    // (10m - 1m - 5m, 20m - 1m]
    assert_eq!((a.1, a.2), (240_000 + 1, 1_140_000));
    let b = calls.iter().find(|c| c.0 == "__name__=b").unwrap();
    // Subquery steps cover (10m - 10m, 20m]; each looks back 5m.
    assert_eq!((b.1, b.2), (-300_000 + 1, 1_200_000));

    // `@` pins the range regardless of the evaluation time.
    engine.source().calls.borrow_mut().clear();
    engine.instant("c @ 100", 5_000_000).unwrap();
    let calls = engine.source().calls.borrow().clone();
    assert_eq!(
        calls,
        vec![("__name__=c".to_string(), 100_000 - 300_000 + 1, 100_000)]
    );
}

#[test]
fn lookback_and_staleness_markers() {
    let mut src = MemorySource::new();
    let m = labels(&[("__name__", "m")]);
    // 0@0s, 1@10s, stale@20s, 2@30s
    load(
        &mut src,
        &m,
        10_000,
        &[Some(0.0), Some(1.0), Some(stale_nan()), Some(2.0)],
    );
    let engine = Engine::new(src);
    assert_eq!(
        vector(engine.instant("m", 10_000).unwrap()),
        vec![(r#"{__name__="m"}"#.into(), 1.0)]
    );
    // The staleness marker ends the series immediately.
    assert!(vector(engine.instant("m", 20_000).unwrap()).is_empty());
    assert_eq!(vector(engine.instant("m", 40_000).unwrap())[0].1, 2.0);
    // Lookback is left-open: 5m after the last sample the series is gone.
    assert_eq!(vector(engine.instant("m", 329_000).unwrap()).len(), 1);
    assert!(vector(engine.instant("m", 330_000).unwrap()).is_empty());
    // Range selectors drop staleness markers and are left-open too.
    assert_eq!(
        vector(engine.instant("count_over_time(m[1m])", 30_000).unwrap())[0].1,
        3.0
    );
    assert!(vector(engine.instant("count_over_time(m[10s])", 20_000).unwrap()).is_empty());

    // A custom lookback delta.
    let engine = Engine::with_options(
        engine.source().clone(),
        EngineOptions {
            lookback_delta_ms: 60_000,
            ..EngineOptions::default()
        },
    );
    assert!(vector(engine.instant("m", 91_000).unwrap()).is_empty());
}

#[test]
fn rate_extrapolation_matches_prometheus() {
    let mut src = MemorySource::new();
    // Counter 0,10,...,100 every 5m, and one starting at 1 (zero point 30s before it).
    let foo = labels(&[("__name__", "c"), ("s", "foo")]);
    let bumms = labels(&[("__name__", "c"), ("s", "bumms")]);
    let vals = |base: f64| {
        (0..=10)
            .map(|i| Some(base + 10.0 * i as f64))
            .collect::<Vec<_>>()
    };
    load(&mut src, &foo, 300_000, &vals(0.0));
    load(&mut src, &bumms, 300_000, &vals(1.0));
    let engine = Engine::new(src);
    let got = vector(engine.instant("increase(c[100m])", 3_000_000).unwrap());
    let get = |s: &str| got.iter().find(|(l, _)| l.contains(s)).unwrap().1;
    assert!((get("foo") - 100.0).abs() < 1e-9);
    assert!((get("bumms") - 101.0).abs() < 1e-9);
    let rate = vector(
        engine
            .instant("rate(c{s=\"foo\"}[50m])", 3_000_000)
            .unwrap(),
    );
    assert!((rate[0].1 - 100.0 / 3000.0).abs() < 1e-12);
    // rate drops the metric name.
    assert_eq!(rate[0].0, r#"{s="foo"}"#);
}

#[test]
fn vector_matching_errors_use_prometheus_wording() {
    let mut src = MemorySource::new();
    for (name, l, v) in [("many", "a", 1.0), ("many", "b", 2.0), ("one", "", 3.0)] {
        let mut ls = labels(&[("__name__", name), ("job", "x")]);
        ls.set("l", l);
        src.append(&ls, 0, v);
    }
    let engine = Engine::new(src);
    let err = engine.instant("many + on(job) one", 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
    );
    assert_eq!(err.code(), ErrorCode::Execution);
    // Even when the comparison filters every element away.
    assert!(engine.instant("many > on(job) one", 0).is_err());
    let err = engine.instant("one + on(job) many", 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"found duplicate series for the match group {job="x"} on the right hand-side of the operation: [{__name__="many", job="x", l="a"}, {__name__="many", job="x", l="b"}];many-to-many matching not allowed: matching labels must be unique on one side"#
    );
    // group_left makes it legal and copies labels from the one side.
    let got = vector(engine.instant("many * on(job) group_left one", 0).unwrap());
    assert_eq!(got.len(), 2);
    assert!(got.contains(&(r#"{job="x", l="a"}"#.into(), 3.0)));
    // Dropping the name makes series identical: an error at the end of evaluation.
    let err = engine
        .instant(r#"-label_replace({job="x"}, "l", "z", "", "")"#, 0)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "vector cannot contain metrics with the same labelset"
    );
    // Names are only flagged for removal until the end, so aggregating those
    // would-be duplicates is fine.
    let got = vector(
        engine
            .instant(r#"sum(-label_replace({job="x"}, "l", "z", "", ""))"#, 0)
            .unwrap(),
    );
    assert_eq!(got, vec![("{}".to_string(), -6.0)]);
}

#[test]
fn topk_orders_best_first_with_ties_in_input_order_and_nan_last() {
    let mut src = MemorySource::new();
    for (i, v) in [3.0, 5.0, f64::NAN, 5.0, 1.0].into_iter().enumerate() {
        src.append(&labels(&[("__name__", "m"), ("i", &i.to_string())]), 0, v);
    }
    let engine = Engine::new(src);
    let got = vector(engine.instant("topk(3, m)", 0).unwrap());
    let order: Vec<&str> = got.iter().map(|(l, _)| l.as_str()).collect();
    // Ties keep the order in which the series were selected (sorted by labels).
    assert_eq!(
        order,
        vec![
            r#"{__name__="m", i="1"}"#,
            r#"{__name__="m", i="3"}"#,
            r#"{__name__="m", i="0"}"#
        ]
    );
    let got = vector(engine.instant("bottomk(10, m)", 0).unwrap());
    let values: Vec<f64> = got.iter().map(|(_, v)| *v).collect();
    assert_eq!(&values[..4], &[1.0, 3.0, 5.0, 5.0]);
    assert!(values[4].is_nan());
    assert!(vector(engine.instant("topk(0, m)", 0).unwrap()).is_empty());
    assert_eq!(
        engine.instant("topk(NaN, m)", 0).unwrap_err().to_string(),
        "Parameter value is NaN"
    );
}

#[test]
fn histogram_quantile_over_classic_buckets() {
    let mut src = MemorySource::new();
    for (le, count) in [("0.1", 20.0), ("1", 10.0), ("10", 50.0), ("+Inf", 60.0)] {
        src.append(&labels(&[("__name__", "h_bucket"), ("le", le)]), 0, count);
    }
    // A histogram without +Inf bucket yields NaN.
    src.append(&labels(&[("__name__", "g_bucket"), ("le", "1")]), 0, 5.0);
    let engine = Engine::new(src);
    // Non-monotonic counts are fixed (10 → 20): rank 30 falls in (1, 10].
    let got = vector(
        engine
            .instant("histogram_quantile(0.5, h_bucket)", 0)
            .unwrap(),
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "{}");
    assert!((got[0].1 - (1.0 + 9.0 * (10.0 / 30.0))).abs() < 1e-9);
    assert_eq!(
        vector(
            engine
                .instant("histogram_quantile(1, h_bucket)", 0)
                .unwrap()
        )[0]
        .1,
        10.0
    );
    assert_eq!(
        vector(
            engine
                .instant("histogram_quantile(2, h_bucket)", 0)
                .unwrap()
        )[0]
        .1,
        f64::INFINITY
    );
    assert!(
        vector(
            engine
                .instant("histogram_quantile(0.5, g_bucket)", 0)
                .unwrap()
        )[0]
        .1
        .is_nan()
    );
    let frac = vector(
        engine
            .instant("histogram_fraction(0, 1, h_bucket)", 0)
            .unwrap(),
    );
    assert!((frac[0].1 - 20.0 / 60.0).abs() < 1e-12);
}

#[test]
fn range_query_merges_series_that_lose_their_names() {
    let mut src = MemorySource::new();
    src.append(&labels(&[("__name__", "a"), ("job", "x")]), 0, 2.0);
    src.append(&labels(&[("__name__", "b"), ("job", "x")]), 1_200_000, 4.0);
    let engine = Engine::new(src);
    let m = engine
        .range("-{job=\"x\"}", 0, 1_200_000, 1_200_000)
        .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].labels.to_string(), r#"{job="x"}"#);
    assert_eq!(m[0].samples, vec![(0, -2.0), (1_200_000, -4.0)]);
    // A scalar expression becomes one series without labels.
    let m = engine.range("time()", 0, 120_000, 60_000).unwrap();
    assert_eq!(
        m[0].samples,
        vec![(0, 0.0), (60_000, 60.0), (120_000, 120.0)]
    );
    assert!(engine.range("a[5m]", 0, 60_000, 60_000).is_err());
    assert!(engine.range("a", 0, 60_000, 0).is_err());
}

#[test]
fn subquery_steps_are_aligned_to_absolute_time() {
    let mut src = MemorySource::new();
    let m = labels(&[("__name__", "m")]);
    load(
        &mut src,
        &m,
        10_000,
        &(0..=100).map(|i| Some(i as f64)).collect::<Vec<_>>(),
    );
    let engine = Engine::new(src);
    // (970s, 1000s] at 10s steps: 980, 990, 1000 → 98 + 99 + 100.
    let v = vector(
        engine
            .instant("sum_over_time(m[30s:10s])", 1_000_000)
            .unwrap(),
    );
    assert_eq!(v[0].1, 297.0);
    // Offsets that are not multiples of the step still land on aligned steps.
    let v = vector(
        engine
            .instant("sum_over_time(m[30s:10s] offset 3s)", 1_010_000)
            .unwrap(),
    );
    assert_eq!(v[0].1, 297.0);
}

#[test]
fn literals_and_strings() {
    let engine = Engine::new(MemorySource::new());
    assert_eq!(scalar(engine.instant("2^3^2", 0).unwrap()), 512.0);
    assert_eq!(scalar(engine.instant("-2^2", 0).unwrap()), -4.0);
    assert!(scalar(engine.instant("0/0", 0).unwrap()).is_nan());
    assert_eq!(
        engine.instant("\"x\"", 0).unwrap(),
        Value::String("x".into())
    );
    assert_eq!(scalar(engine.instant("time()", 61_500).unwrap()), 61.5);
}

#[test]
fn malformed_queries_are_parse_errors() {
    let engine = Engine::new(MemorySource::new());
    for q in [
        "",
        "sum(",
        "rate(x)",
        "{}",
        "x[5m",
        "1 +",
        "foo{a=~\"(\"}",
        "x offset",
        "x[0s:]",
    ] {
        match engine.instant(q, 0) {
            Err(Error::Parse { .. }) => {}
            other => panic!("{q:?}: expected a parse error, got {other:?}"),
        }
    }
    // Pathologically deep queries are rejected before they can exhaust the stack.
    for q in [
        format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        vec!["a"; 50_000].join(" + "),
        format!("{}a", "-".repeat(50_000)),
    ] {
        assert!(matches!(engine.instant(&q, 0), Err(Error::Parse { .. })));
    }
    let e = engine.instant("sum(", 0).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadData);
    assert!(!e.is_retryable());
}

#[test]
fn max_samples_bounds_memory() {
    let mut src = MemorySource::new();
    for s in 0..10 {
        let l = labels(&[("__name__", "m"), ("s", &s.to_string())]);
        load(&mut src, &l, 1_000, &vec![Some(1.0); 100]);
    }
    let engine = Engine::with_options(
        src,
        EngineOptions {
            max_samples: 500,
            ..EngineOptions::default()
        },
    );
    let err = engine
        .instant("sum(count_over_time(m[100s]))", 100_000)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "query processing would load too many samples into memory in query execution"
    );
    assert_eq!(err.code(), ErrorCode::TooLarge);
    // A query reading less data fits.
    let ok = Engine::with_options(
        engine.source().clone(),
        EngineOptions {
            max_samples: 5_000,
            ..EngineOptions::default()
        },
    );
    assert_eq!(
        vector(ok.instant("sum(count_over_time(m[10s]))", 99_000).unwrap())[0].1,
        100.0
    );
}

#[test]
fn timeout_stops_long_queries() {
    let mut src = MemorySource::new();
    src.append(&labels(&[("__name__", "m")]), 0, 1.0);
    let engine = Engine::with_options(
        src,
        EngineOptions {
            timeout: Some(Duration::from_millis(0)),
            ..EngineOptions::default()
        },
    );
    let err = engine
        .instant("sum_over_time(sum_over_time(m[1h:1s])[1h:1s])", 3_600_000)
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[test]
fn matchers_cover_all_operators() {
    let mut src = MemorySource::new();
    for job in ["api", "app", "db"] {
        src.append(&labels(&[("__name__", "up"), ("job", job)]), 0, 1.0);
    }
    let engine = Engine::new(src);
    let count = |q: &str| vector(engine.instant(q, 0).unwrap()).len();
    assert_eq!(count(r#"up{job="api"}"#), 1);
    assert_eq!(count(r#"up{job!="api"}"#), 2);
    assert_eq!(count(r#"up{job=~"a.*"}"#), 2);
    assert_eq!(count(r#"up{job!~"a.*"}"#), 1);
    assert_eq!(count(r#"{__name__="up", job=~"API|db"}"#), 1);
    let m = LabelMatcher::new(MatchOp::Regex, "job", "a(").unwrap_err();
    assert_eq!(m.code(), ErrorCode::Execution);
}

#[test]
fn extreme_timestamps_do_not_overflow() {
    let mut src = MemorySource::new();
    let m = labels(&[("__name__", "m")]);
    src.append(&m, i64::MIN, 1.0);
    src.append(&m, -1, 2.0);
    src.append(&m, 0, 3.0);
    src.append(&m, i64::MAX, 4.0);
    let engine = Engine::new(src);
    for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
        for q in [
            "m",
            "rate(m[5m])",
            "deriv(m[1y])",
            "m offset -5m",
            "m offset 5m",
            "max_over_time(m[1h:1m])",
            "m @ 1e15",
            "timestamp(m)",
            "predict_linear(m[10y], 1e9)",
            "irate(m[100y])",
            "minute(m)",
            "sum_over_time(m[5m:1m] offset 1y)",
            "range()",
        ] {
            let _ = engine.instant(q, t);
        }
    }
    for (start, end, step) in [
        (i64::MIN, i64::MAX, i64::MAX),
        (i64::MAX - 10, i64::MAX, 1),
        (i64::MIN, i64::MIN + 10, 1),
        (0, i64::MAX, 1),
    ] {
        let _ = engine.range("rate(m[5m]) + max_over_time(m[10m:1m])", start, end, step);
    }
}

/// `match[]` selectors: matcher sets per `or` branch; anything but a bare selector is refused.
#[test]
fn series_selectors_parse_into_matcher_sets() {
    let sets = flowmesh_promql::parse_series_selector(r#"up{job="a" or job="b"}"#).unwrap();
    assert_eq!(sets.len(), 2);
    assert!(sets.iter().all(|s| s.len() == 2 && s[0].name == "__name__"));
    for bad in ["up offset 5m", "up[5m]", "sum(up)", "1", "up{"] {
        assert!(
            flowmesh_promql::parse_series_selector(bad).is_err(),
            "{bad} accepted"
        );
    }
}
