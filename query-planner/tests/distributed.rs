//! A query split into fragments over several shards answers exactly what one engine over all
//! their rows answers. Each shard has its own dictionary with its own ids (as regions do),
//! so an id that crossed shards would give wrong answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use datafusion::{
    arrow::{
        array::{
            ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray, UInt32Array,
        },
        datatypes::{DataType, Field, Schema, TimeUnit},
        record_batch::RecordBatch,
        util::display::{ArrayFormatter, FormatOptions},
    },
    datasource::MemTable,
};
use flowmesh_query_planner::{
    QueryConfig, QueryEngine, QueryError, QueryOutput,
    distributed::{Fragment, FragmentRunner},
    tags::{EncodedTable, TagDictionary, tag_field},
};

/// (region, service, endpoint, code, duration µs) per row; the shard is `row % 3`.
fn rows() -> Vec<(&'static str, &'static str, &'static str, i64, f64)> {
    let services = ["cart", "user", "db", "web"];
    let endpoints = ["/a", "/b", "GET x", ""];
    (0..60)
        .map(|i: usize| {
            (
                if i % 3 == 2 { "eu" } else { "us" },
                services[i % 4],
                endpoints[(i / 2) % 4],
                if i.is_multiple_of(7) { 500 } else { 200 },
                (i * 37 % 101) as f64 + 0.5,
            )
        })
        .collect()
}

/// A dictionary whose ids depend on `salt`: every shard numbers the same strings differently.
#[derive(Debug)]
struct SaltedDictionary {
    ids: HashMap<(String, String), u32>,
    strings: HashMap<(String, u32), Arc<str>>,
}

impl SaltedDictionary {
    fn new(salt: u32) -> Self {
        let mut d = Self {
            ids: HashMap::new(),
            strings: HashMap::new(),
        };
        for (kind, values) in [
            ("region", vec!["us", "eu"]),
            ("service", vec!["cart", "user", "db", "web"]),
            ("endpoint", vec!["/a", "/b", "GET x", ""]),
        ] {
            for (i, v) in values.iter().enumerate() {
                let id = (i as u32 + salt) % values.len() as u32 + 1;
                d.ids.insert((kind.into(), v.to_string()), id);
                d.strings.insert((kind.into(), id), Arc::from(*v));
            }
        }
        d
    }
}

impl TagDictionary for SaltedDictionary {
    fn lookup(&self, kind: &str, value: &str) -> Option<u32> {
        self.ids
            .get(&(kind.to_string(), value.to_string()))
            .copied()
    }
    fn decode(&self, kind: &str, id: u32) -> Option<Arc<str>> {
        self.strings.get(&(kind.to_string(), id)).cloned()
    }
}

/// `flow_log.requests` over `rows`, with tags as ids through `dictionary` (or strings).
fn engine(
    rows: &[(&str, &str, &str, i64, f64)],
    dictionary: Option<Arc<SaltedDictionary>>,
) -> QueryEngine {
    let tag = |name: &str, kind: &str, values: Vec<&str>| -> (Field, ArrayRef) {
        match &dictionary {
            Some(d) => (
                tag_field(name, kind, false),
                Arc::new(UInt32Array::from_iter_values(
                    values.iter().map(|v| d.lookup(kind, v).unwrap()),
                )),
            ),
            None => (
                Field::new(name, DataType::Utf8, false),
                Arc::new(StringArray::from_iter_values(values)),
            ),
        }
    };
    let (f_region, c_region) = tag("region", "region", rows.iter().map(|r| r.0).collect());
    let (f_service, c_service) = tag("service", "service", rows.iter().map(|r| r.1).collect());
    let (f_endpoint, c_endpoint) = tag("endpoint", "endpoint", rows.iter().map(|r| r.2).collect());
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        f_region,
        f_service,
        f_endpoint,
        Field::new("code", DataType::Int64, false),
        Field::new("duration", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.4 as i64 * 1_000_000),
                )
                .with_timezone("UTC"),
            ),
            c_region,
            c_service,
            c_endpoint,
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.4))),
        ],
    )
    .unwrap();
    let table: Arc<dyn datafusion::catalog::TableProvider> =
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap());
    let owners = Arc::new(Schema::new(vec![
        Field::new("service", DataType::Utf8, false),
        Field::new("team", DataType::Utf8, false),
    ]));
    let owners_batch = RecordBatch::try_new(
        Arc::clone(&owners),
        vec![
            Arc::new(StringArray::from(vec!["cart", "user", "db"])),
            Arc::new(StringArray::from(vec!["shop", "identity", "platform"])),
        ],
    )
    .unwrap();
    let tables: Vec<(String, Arc<dyn datafusion::catalog::TableProvider>)> = vec![
        (
            "flow_log.requests".into(),
            match &dictionary {
                Some(_) => Arc::new(EncodedTable::new(table)),
                None => table,
            },
        ),
        (
            "meta.owners".into(),
            Arc::new(MemTable::try_new(owners, vec![vec![owners_batch]]).unwrap()),
        ),
    ];
    let engine = QueryEngine::new(tables, &QueryConfig::default())
        .unwrap()
        .with_distributed_schemas(["flow_log"]);
    match dictionary {
        Some(d) => engine.with_tags(d as Arc<dyn TagDictionary>),
        None => engine,
    }
}

/// Runs each fragment on every shard's engine (as a node runs it: plain local SQL), and
/// records the SQL it was given.
struct Shards {
    engines: Vec<QueryEngine>,
    seen: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} shards", self.engines.len())
    }
}

#[async_trait]
impl FragmentRunner for Shards {
    async fn run(&self, fragment: &Fragment) -> Result<Vec<RecordBatch>, QueryError> {
        self.seen.lock().unwrap().push(fragment.sql.clone());
        let mut out = Vec::new();
        for e in &self.engines {
            out.extend(e.sql(&fragment.sql).await?.batches);
        }
        Ok(out)
    }
}

fn shards(dictionaries: bool) -> (Arc<Shards>, QueryEngine, QueryEngine) {
    let all = rows();
    let engines: Vec<QueryEngine> = (0..3)
        .map(|s| {
            let part: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 3 == s)
                .map(|(_, r)| *r)
                .collect();
            engine(
                &part,
                dictionaries.then(|| Arc::new(SaltedDictionary::new(s as u32))),
            )
        })
        .collect();
    let runner = Arc::new(Shards {
        engines,
        seen: Mutex::new(Vec::new()),
    });
    // the coordinator's own tables are never read: its fragments go through the runner
    let coordinator = engine(
        &[],
        dictionaries.then(|| Arc::new(SaltedDictionary::new(7))),
    );
    let whole = engine(&all, None);
    (runner, coordinator, whole)
}

fn lines(out: &QueryOutput, sorted: bool) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for batch in &out.batches {
        let f: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            lines.push(
                f.iter()
                    .map(|f| f.value(row).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    if sorted {
        lines.sort();
    }
    lines
}

const QUERIES: &[(&str, bool)] = &[
    // (query, whether its row order is defined by the query)
    (
        "SELECT region, count(*) FROM flow_log.requests GROUP BY region",
        false,
    ),
    (
        "SELECT service, sum(duration) AS s, min(duration), max(duration), avg(duration), count(code) \
         FROM flow_log.requests WHERE code = 200 GROUP BY service ORDER BY service",
        true,
    ),
    (
        "SELECT count(*), avg(duration) FROM flow_log.requests",
        false,
    ),
    (
        "SELECT count(*), sum(code) FROM flow_log.requests WHERE service = 'nope'",
        false,
    ),
    (
        "SELECT region, service, count(*) AS n FROM flow_log.requests \
         GROUP BY region, service HAVING count(*) > 3 ORDER BY n DESC, region, service",
        true,
    ),
    (
        "SELECT date_trunc('minute', time) AS m, count(*) FROM flow_log.requests GROUP BY 1 ORDER BY 1",
        true,
    ),
    (
        "SELECT count(DISTINCT endpoint), service FROM flow_log.requests GROUP BY service",
        false,
    ),
    (
        "SELECT region, service, count(*), sum(duration) FROM flow_log.requests \
         GROUP BY ROLLUP (region, service)",
        false,
    ),
    (
        "SELECT endpoint, duration FROM flow_log.requests ORDER BY duration DESC, endpoint LIMIT 5",
        true,
    ),
    (
        "SELECT endpoint, duration FROM flow_log.requests ORDER BY duration LIMIT 4 OFFSET 3",
        true,
    ),
    (
        "SELECT service FROM flow_log.requests WHERE endpoint LIKE '/%' AND code >= 500",
        false,
    ),
    (
        "SELECT o.team, count(*) FROM flow_log.requests r JOIN meta.owners o ON r.service = o.service \
         GROUP BY o.team",
        false,
    ),
    (
        "SELECT service, count(*) FROM flow_log.requests WHERE duration > \
         (SELECT avg(duration) FROM flow_log.requests) GROUP BY service",
        false,
    ),
    (
        "SELECT t.service, t.n FROM (SELECT service, count(*) AS n FROM flow_log.requests GROUP BY service) t \
         WHERE t.n > 14",
        false,
    ),
    (
        "SELECT upper(service) AS s, length(endpoint) FROM flow_log.requests WHERE region = 'eu' AND code = 500",
        false,
    ),
];

#[tokio::test]
async fn fragments_over_shards_answer_as_one_engine_over_all_rows() {
    for dictionaries in [false, true] {
        let (runner, coordinator, whole) = shards(dictionaries);
        for (sql, ordered) in QUERIES {
            let expected = whole.sql(sql).await.unwrap();
            let (got, fragments) = coordinator
                .sql_distributed(sql, Arc::clone(&runner) as Arc<dyn FragmentRunner>)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(!fragments.is_empty(), "{sql}: nothing was distributed");
            assert_eq!(
                lines(&got, !ordered),
                lines(&expected, !ordered),
                "dictionaries {dictionaries}: {sql}\nfragments: {:#?}",
                fragments.iter().map(|f| &f.sql).collect::<Vec<_>>()
            );
            let names = |o: &QueryOutput| -> Vec<String> {
                o.schema.fields().iter().map(|f| f.name().clone()).collect()
            };
            assert_eq!(names(&got), names(&expected), "{sql}");
        }
    }
}

#[tokio::test]
async fn aggregates_ship_partials_and_limits_ship_top_rows() {
    let (runner, coordinator, _) = shards(true);
    let run = |sql: &'static str| {
        let runner = Arc::clone(&runner) as Arc<dyn FragmentRunner>;
        let coordinator = &coordinator;
        async move { coordinator.sql_distributed(sql, runner).await.unwrap().1 }
    };
    let f =
        run("SELECT region, avg(duration) FROM flow_log.requests WHERE code = 200 GROUP BY region")
            .await;
    assert_eq!(f.len(), 1);
    let sql = f[0].sql.to_lowercase();
    assert!(sql.contains("group by"), "{sql}");
    assert!(
        sql.contains("sum(") && sql.contains("count("),
        "avg splits into sum and count: {sql}"
    );
    assert!(sql.contains("200"), "the filter runs on the nodes: {sql}");
    let names: Vec<_> = f[0]
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["g0", "p0", "p1"]);

    let f = run("SELECT endpoint FROM flow_log.requests ORDER BY duration DESC LIMIT 5").await;
    let sql = f[0].sql.to_lowercase();
    assert!(sql.contains("limit 5") && sql.contains("order by"), "{sql}");

    assert_eq!(f[0].regions, None);

    // filters on region and cluster say where matching rows can be
    let f = run("SELECT count(*) FROM flow_log.requests WHERE region = 'eu' AND code = 200").await;
    assert_eq!(f[0].regions, Some(vec!["eu".to_string()]));
    let f = run(
        "SELECT count(*) FROM flow_log.requests WHERE region IN ('eu', 'us') AND region <> 'x'",
    )
    .await;
    assert_eq!(f[0].regions, Some(vec!["eu".to_string(), "us".to_string()]));
    let f = run("SELECT count(*) FROM flow_log.requests WHERE region = 'eu' OR code = 500").await;
    assert_eq!(
        f[0].regions, None,
        "a disjunction does not limit the regions"
    );

    // not decomposable: rows go, the aggregate stays here
    let f = run("SELECT count(DISTINCT endpoint) FROM flow_log.requests").await;
    assert!(!f[0].sql.to_lowercase().contains("count("), "{}", f[0].sql);

    // a fragment's SQL is itself distributable, with partials of the same shape: the
    // region merger's step
    let f = run("SELECT service, count(*), min(duration) FROM flow_log.requests GROUP BY service")
        .await;
    let inner = coordinator
        .sql_distributed(&f[0].sql, Arc::clone(&runner) as Arc<dyn FragmentRunner>)
        .await
        .unwrap();
    let direct = runner.engines.iter().map(|e| e.sql(&f[0].sql));
    let mut direct_rows = 0;
    for d in direct {
        direct_rows += d.await.unwrap().num_rows();
    }
    assert_eq!(
        inner.1[0].schema, f[0].schema,
        "partials of partials keep their shape"
    );
    assert_eq!(inner.0.num_rows(), 4, "one merged partial per service");
    assert!(
        direct_rows > 4,
        "each shard has its own partial per service"
    );
}

#[tokio::test]
async fn queries_without_distributed_tables_run_here() {
    let (runner, coordinator, _) = shards(false);
    for sql in ["SELECT 1", "SELECT count(*) FROM meta.owners"] {
        let (out, fragments) = coordinator
            .sql_distributed(sql, Arc::clone(&runner) as Arc<dyn FragmentRunner>)
            .await
            .unwrap();
        assert!(fragments.is_empty(), "{sql}");
        assert_eq!(out.num_rows(), 1);
    }
    assert!(runner.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failing_node_fails_the_query_with_its_class() {
    #[derive(Debug)]
    struct Down;
    #[async_trait]
    impl FragmentRunner for Down {
        async fn run(&self, _: &Fragment) -> Result<Vec<RecordBatch>, QueryError> {
            Err(QueryError::Unavailable("node n3 did not answer".into()))
        }
    }
    let (_, coordinator, _) = shards(false);
    let err = coordinator
        .sql_distributed("SELECT count(*) FROM flow_log.requests", Arc::new(Down))
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("n3"), "{err}");
    assert!(err.is_retryable());
}
