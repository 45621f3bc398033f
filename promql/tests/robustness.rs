//! Bad input never panics: arbitrary query text, generated PromQL over random series
//! (NaN, ±Inf, staleness markers, duplicate timestamps, negative times).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flowmesh_promql::{Engine, EngineOptions, Labels, MemorySource, stale_nan};
use proptest::prelude::*;

/// (name index, job index, samples) of one random series.
type RandomSeries = (u8, u8, Vec<(i64, f64)>);

fn engine_with(series: &[RandomSeries]) -> Engine<MemorySource> {
    let mut src = MemorySource::new();
    for (name, job, samples) in series {
        let labels = Labels::from_pairs([
            ("__name__", format!("m{}", name % 3)),
            ("job", format!("j{}", job % 4)),
            (
                "le",
                ["0.1", "1", "+Inf", "x"][(*job % 4) as usize].to_string(),
            ),
        ]);
        for (t, v) in samples {
            src.append(&labels, *t, *v);
        }
    }
    Engine::with_options(
        src,
        EngineOptions {
            max_samples: 200_000,
            timeout: Some(Duration::from_millis(500)),
            ..EngineOptions::default()
        },
    )
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1000.0..1000.0f64,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(stale_nan()),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
    ]
}

fn series() -> impl Strategy<Value = Vec<RandomSeries>> {
    prop::collection::vec(
        (
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec((-600_000i64..3_600_000, value()), 0..30),
        ),
        0..8,
    )
}

/// Leaf expressions.
fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("m0".to_string()),
        Just("m1{job=\"j1\"}".to_string()),
        Just("{__name__=~\"m.*\"}".to_string()),
        Just("m2{job!~\"j[02]\"} offset 5m".to_string()),
        Just("m0 @ 100".to_string()),
        Just("m1 offset -1m".to_string()),
        Just("time()".to_string()),
        Just("vector(1)".to_string()),
        prop_oneof![
            Just("0"),
            Just("1"),
            Just("-1"),
            Just("NaN"),
            Just("Inf"),
            Just("0.5"),
            Just("1e308")
        ]
        .prop_map(String::from),
    ]
}

fn range_arg() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("m0"), Just("m1"), Just("{job=\"j2\"}")],
        prop_oneof![Just("1s"), Just("1m"), Just("5m"), Just("1h")],
        prop_oneof![
            Just(""),
            Just(" offset 1m"),
            Just(" @ 60"),
            Just(" offset -30s")
        ],
    )
        .prop_map(|(s, r, m)| format!("{s}[{r}]{m}"))
}

fn expr() -> impl Strategy<Value = String> {
    leaf().prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                inner.clone(),
                prop_oneof![
                    Just("+"),
                    Just("-"),
                    Just("*"),
                    Just("/"),
                    Just("%"),
                    Just("^"),
                    Just("atan2"),
                    Just("== bool"),
                    Just("!="),
                    Just(">"),
                    Just("< bool"),
                    Just("and"),
                    Just("or"),
                    Just("unless"),
                    Just("+ on(job)"),
                    Just("* ignoring(le) group_left"),
                    Just("/ on(job) group_right(le)"),
                    Just("+ fill(0)"),
                ]
            )
                .prop_map(|(a, b, op)| format!("({a}) {op} ({b})")),
            (
                inner.clone(),
                prop_oneof![
                    Just("sum"),
                    Just("avg"),
                    Just("min"),
                    Just("max"),
                    Just("count"),
                    Just("group"),
                    Just("stddev"),
                    Just("stdvar"),
                ],
                prop_oneof![Just(""), Just(" by (job)"), Just(" without (le)")]
            )
                .prop_map(|(a, agg, m)| format!("{agg}{m} ({a})")),
            (
                inner.clone(),
                prop_oneof![
                    Just("topk"),
                    Just("bottomk"),
                    Just("limitk"),
                    Just("quantile"),
                    Just("limit_ratio"),
                ],
                inner.clone()
            )
                .prop_map(|(a, agg, p)| format!("{agg}(scalar({p}), {a})")),
            inner
                .clone()
                .prop_map(|a| format!("count_values(\"v\", {a})")),
            (
                inner.clone(),
                prop_oneof![
                    Just("abs"),
                    Just("ceil"),
                    Just("ln"),
                    Just("sqrt"),
                    Just("sgn"),
                    Just("round"),
                    Just("timestamp"),
                    Just("absent"),
                    Just("sort_desc"),
                    Just("minute"),
                    Just("days_in_month"),
                    Just("scalar"),
                    Just("-"),
                ]
            )
                .prop_map(|(a, f)| format!("{f}({a})")),
            inner.clone().prop_map(|a| format!("clamp({a}, -1, 1)")),
            inner
                .clone()
                .prop_map(|a| format!("label_replace({a}, \"x\", \"$1\", \"job\", \"j(.*)\")")),
            inner
                .clone()
                .prop_map(|a| format!("label_join({a}, \"__name__\", \"-\", \"job\", \"le\")")),
            inner
                .clone()
                .prop_map(|a| format!("histogram_quantile(0.9, {a})")),
            inner
                .clone()
                .prop_map(|a| format!("histogram_fraction(0, 1, {a})")),
            (
                inner.clone(),
                prop_oneof![Just("5m:1m"), Just("1h:7s"), Just("30s:"), Just("1m:1m")]
            )
                .prop_map(|(a, r)| format!("max_over_time(({a})[{r}])")),
            (
                range_arg(),
                prop_oneof![
                    Just("rate"),
                    Just("irate"),
                    Just("increase"),
                    Just("delta"),
                    Just("idelta"),
                    Just("deriv"),
                    Just("changes"),
                    Just("resets"),
                    Just("avg_over_time"),
                    Just("stddev_over_time"),
                    Just("mad_over_time"),
                    Just("last_over_time"),
                    Just("present_over_time"),
                    Just("absent_over_time"),
                    Just("ts_of_max_over_time"),
                ]
            )
                .prop_map(|(r, f)| format!("{f}({r})")),
            range_arg().prop_map(|r| format!("predict_linear({r}, 600)")),
            range_arg().prop_map(|r| format!("quantile_over_time(0.3, {r})")),
            range_arg().prop_map(|r| format!("double_exponential_smoothing({r}, 0.5, 0.5)")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(query in any::<String>(), t in -1_000_000i64..5_000_000) {
        let engine = engine_with(&[]);
        let _ = engine.instant(&query, t);
        let _ = engine.range(&query, t, t + 120_000, 30_000);
    }

    #[test]
    fn promql_alphabet_never_panics(
        query in "[a-z_(){}\\[\\]\"=~!,:.0-9 +*/%^<>@-]{0,60}",
        data in series(),
    ) {
        let engine = engine_with(&data);
        let _ = engine.instant(&query, 1_800_000);
        let _ = engine.range(&query, 0, 600_000, 60_000);
    }

    #[test]
    fn generated_queries_over_random_series_never_panic(
        query in expr(),
        data in series(),
        t in -600_000i64..4_000_000,
        step in 1_000i64..600_000,
    ) {
        let engine = engine_with(&data);
        let _ = engine.instant(&query, t);
        let _ = engine.range(&query, t, t + 10 * step, step);
    }
}
