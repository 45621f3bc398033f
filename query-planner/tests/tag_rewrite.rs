//! The same SQL gives the same answers whether tags are stored as strings or as dictionary
//! ids: every `.slt` file under `tests/slt/` runs against both and must pass unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use datafusion::{
    arrow::{
        array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray, UInt32Array},
        datatypes::{DataType, Field, Schema, TimeUnit},
        record_batch::RecordBatch,
        util::display::{ArrayFormatter, FormatOptions},
    },
    datasource::MemTable,
};
use flowmesh_query_planner::{
    QueryConfig, QueryEngine, QueryError,
    tags::{DerivedTag, EncodedTable, TagDictionary, tag_field},
};
use sqllogictest::{DBOutput, DefaultColumnType};

/// A dictionary that hands out ids in reverse alphabetical order, so an engine that
/// compared or sorted ids instead of strings would give different answers.
#[derive(Debug, Default)]
struct TestDictionary {
    ids: HashMap<(String, String), u32>,
    strings: HashMap<(String, u32), Arc<str>>,
    /// (resource kind, resource id, attribute kind) → [(valid_from_us, attribute id)]
    versions: HashMap<(String, u32, String), Vec<(i64, u32)>>,
    /// Literals looked up: the rewrite must never create ids.
    lookups: Mutex<Vec<String>>,
}

impl TestDictionary {
    fn build(values: &[(&str, Vec<&str>)]) -> Self {
        let mut d = TestDictionary::default();
        for (kind, strings) in values {
            let mut sorted: Vec<&str> = strings.clone();
            sorted.sort();
            sorted.dedup();
            sorted.reverse();
            for (i, s) in sorted.iter().enumerate() {
                let id = i as u32 + 1;
                d.ids.insert((kind.to_string(), s.to_string()), id);
                d.strings.insert((kind.to_string(), id), Arc::from(*s));
            }
        }
        d
    }
    fn id(&self, kind: &str, s: &str) -> u32 {
        self.ids[&(kind.to_string(), s.to_string())]
    }
}

impl TagDictionary for TestDictionary {
    fn lookup(&self, kind: &str, value: &str) -> Option<u32> {
        self.lookups.lock().unwrap().push(value.to_string());
        self.ids
            .get(&(kind.to_string(), value.to_string()))
            .copied()
    }
    fn decode(&self, kind: &str, id: u32) -> Option<Arc<str>> {
        if id == flowmesh_query_planner::tags::EMPTY {
            return Some(Arc::from("")); // as the real dictionary: id 0 is the empty string
        }
        self.strings.get(&(kind.to_string(), id)).cloned()
    }
    fn attribute_versions(&self, resource_kind: &str, id: u32, attribute: &str) -> Vec<(i64, u32)> {
        self.versions
            .get(&(resource_kind.to_string(), id, attribute.to_string()))
            .cloned()
            .unwrap_or_default()
    }
}

/// (client service, server service, endpoint, status code, duration); row `i` is at
/// second `i`.
type Request = (&'static str, &'static str, &'static str, i64, i64);
const REQUESTS: &[Request] = &[
    ("web", "cart", "/cart/add", 200, 12),
    ("web", "cart", "/cart/add", 500, 40),
    ("web", "cart", "/cart/list", 200, 8),
    ("web", "user", "/login", 200, 30),
    ("web", "user", "/login", 401, 3),
    ("cart", "db", "SELECT", 0, 2),
    ("cart", "db", "INSERT", 0, 5),
    ("cart", "db", "SELECT", 0, 1),
    ("user", "db", "SELECT", 0, 4),
    ("admin", "user", "/users", 200, 90),
    ("zeta", "alpha", "/", 404, 1),
];

/// The process (a resource) behind each service, and when it started having that
/// service: `frontend` served as `web`, then was renamed `admin` at second 9; `zeta`'s
/// first known version is after its only row, which still shows it.
const PROCESSES: &[(&str, &str, i64)] = &[
    ("gp-frontend", "web", 0),
    ("gp-frontend", "admin", 9),
    ("gp-cart", "cart", 0),
    ("gp-user", "user", 0),
    ("gp-db", "db", 0),
    ("gp-alpha", "alpha", 0),
    ("gp-zeta", "zeta", 100),
];

fn process_of(service: &str) -> &'static str {
    match service {
        "web" | "admin" => "gp-frontend",
        other => PROCESSES.iter().find(|p| p.1 == other).unwrap().0,
    }
}

/// A service's team and labels over time (a resource reached in two hops: row → process →
/// service → team): `user` moved from `identity` to `accounts` at second 4. Services not
/// listed have neither (an empty tag).
const SERVICE_TAGS: &[(&str, &str, &str, i64)] = &[
    ("cart", "shop", r#"app="cart",tier="backend""#, 0),
    ("user", "identity", r#"app="user""#, 0),
    ("user", "accounts", r#"app="user",tier="backend""#, 4),
    ("db", "platform", r#"app="db",tier="storage""#, 0),
    ("web", "shop", r#"app="web",tier="frontend""#, 0),
];

/// The (team, labels) of `service` at second `at`.
fn service_tags(service: &str, at: i64) -> (&'static str, &'static str) {
    SERVICE_TAGS
        .iter()
        .rfind(|t| t.0 == service && t.3 <= at)
        .map_or(("", ""), |t| (t.1, t.2))
}

/// (service, team): a second table to join on.
const OWNERS: &[(&str, &str)] = &[
    ("cart", "shop"),
    ("user", "identity"),
    ("db", "platform"),
    ("alpha", "labs"),
];

type Tables = Vec<(String, Arc<dyn datafusion::catalog::TableProvider>)>;

/// The two tables. Without a dictionary every tag is a string column. With one, tags are
/// ids, and `auto_service_*` are not stored at all: they are derived from the process
/// columns through the dictionary's resource versions.
fn tables(dictionary: Option<&TestDictionary>) -> Tables {
    let tag = |name: &str, kind: &str| match dictionary {
        Some(_) => tag_field(name, kind, false),
        None => Field::new(name, DataType::Utf8, false),
    };
    let tags = |kind: &str, values: Vec<&str>| -> ArrayRef {
        match dictionary {
            Some(d) => Arc::new(UInt32Array::from_iter_values(
                values.iter().map(|v| d.id(kind, v)),
            )),
            None => Arc::new(StringArray::from_iter_values(values)),
        }
    };
    let column = |f: fn(&Request) -> &'static str| REQUESTS.iter().map(f).collect();
    let number = |f: fn(&Request) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(REQUESTS.iter().map(f)))
    };
    let mut fields = vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        tag("gprocess_id_0", "gprocess"),
        tag("gprocess_id_1", "gprocess"),
        tag("endpoint", "endpoint"),
        Field::new("response_code", DataType::Int64, false),
        Field::new("response_duration", DataType::Int64, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                (0..REQUESTS.len() as i64).map(|i| i * 1_000_000),
            )
            .with_timezone("UTC"),
        ),
        tags("gprocess", column(|r| process_of(r.0))),
        tags("gprocess", column(|r| process_of(r.1))),
        tags("endpoint", column(|r| r.2)),
        number(|r| r.3),
        number(|r| r.4),
    ];
    if dictionary.is_none() {
        fields.extend([tag("auto_service_0", ""), tag("auto_service_1", "")]);
        columns.extend([tags("", column(|r| r.0)), tags("", column(|r| r.1))]);
        for (name, pick) in [
            (
                "team",
                (|t: (&'static str, &'static str)| t.0) as fn(_) -> &'static str,
            ),
            ("k8s_labels", |t| t.1),
        ] {
            for side in 0..2 {
                fields.push(tag(&format!("{name}_{side}"), ""));
                columns.push(tags(
                    "",
                    REQUESTS
                        .iter()
                        .enumerate()
                        .map(|(i, r)| {
                            pick(service_tags(if side == 0 { r.0 } else { r.1 }, i as i64))
                        })
                        .collect(),
                ));
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
    let owners_schema = Arc::new(Schema::new(vec![
        tag("auto_service", "service"),
        Field::new("team", DataType::Utf8, false),
    ]));
    let owners = RecordBatch::try_new(
        Arc::clone(&owners_schema),
        vec![
            tags("service", OWNERS.iter().map(|o| o.0).collect()),
            Arc::new(StringArray::from_iter_values(OWNERS.iter().map(|o| o.1))),
        ],
    )
    .unwrap();
    let requests: Arc<dyn datafusion::catalog::TableProvider> =
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap());
    let requests: Arc<dyn datafusion::catalog::TableProvider> = match dictionary {
        Some(_) => Arc::new(EncodedTable::with_derived(
            requests,
            [
                ("auto_service", "service", vec![]),
                ("team", "team", vec!["service".to_string()]),
                ("k8s_labels", "series", vec!["service".to_string()]),
            ]
            .iter()
            .flat_map(|(name, kind, via)| {
                ["0", "1"].map(|side| DerivedTag {
                    name: format!("{name}_{side}"),
                    kind: kind.to_string(),
                    resource_column: format!("gprocess_id_{side}"),
                    via: via.clone(),
                })
            })
            .collect(),
        )),
        None => requests,
    };
    vec![
        ("flow_log.l7_flow_log".into(), requests),
        (
            "meta.owners".into(),
            Arc::new(MemTable::try_new(owners_schema, vec![vec![owners]]).unwrap()),
        ),
    ]
}

fn dictionary() -> TestDictionary {
    let mut services: Vec<&str> = REQUESTS.iter().flat_map(|r| [r.0, r.1]).collect();
    services.extend(OWNERS.iter().map(|o| o.0));
    let mut d = TestDictionary::build(&[
        ("service", services),
        ("endpoint", REQUESTS.iter().map(|r| r.2).collect()),
        ("gprocess", PROCESSES.iter().map(|p| p.0).collect()),
        ("team", SERVICE_TAGS.iter().map(|t| t.1).collect()),
        ("series", SERVICE_TAGS.iter().map(|t| t.2).collect()),
    ]);
    let mut version = |resource: (&str, &str), attribute: (&str, &str), from: i64| {
        let key = (
            resource.0.to_string(),
            d.id(resource.0, resource.1),
            attribute.0.to_string(),
        );
        let id = d.id(attribute.0, attribute.1);
        d.versions
            .entry(key)
            .or_default()
            .push((from * 1_000_000, id));
    };
    for (process, service, from) in PROCESSES {
        version(("gprocess", process), ("service", service), *from);
    }
    for (service, team, labels, from) in SERVICE_TAGS {
        version(("service", service), ("team", team), *from);
        version(("service", service), ("series", labels), *from);
    }
    d
}

/// An engine over id-encoded tables that decodes through `d`.
fn id_engine(d: &Arc<TestDictionary>) -> QueryEngine {
    QueryEngine::new(tables(Some(d)), &QueryConfig::default())
        .unwrap()
        .with_tags(Arc::clone(d) as Arc<dyn TagDictionary>)
}

struct Db {
    engine: Arc<QueryEngine>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl sqllogictest::DB for Db {
    type Error = QueryError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, QueryError> {
        let out = self.runtime.block_on(self.engine.sql(sql))?;
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &out.batches {
            let formatters: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| match f.value(row).to_string() {
                            s if s.is_empty() => "(empty)".to_string(),
                            s => s,
                        })
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; out.schema.fields().len()],
            rows,
        })
    }
}

fn run_all(engine: QueryEngine) {
    let engine = Arc::new(engine);
    let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let mut runner = sqllogictest::Runner::new(|| {
            let db = Db {
                engine: Arc::clone(&engine),
                runtime: Arc::clone(&runtime),
            };
            async move { Ok(db) }
        });
        if let Err(e) = runner.run_file(&file) {
            panic!("{}: {e}", file.display());
        }
    }
}

#[test]
fn slt_files_pass_over_string_columns() {
    run_all(QueryEngine::new(tables(None), &QueryConfig::default()).unwrap());
}

#[test]
fn slt_files_pass_over_dictionary_ids() {
    let d = Arc::new(dictionary());
    let engine = id_engine(&d);
    run_all(engine);
}

fn plan_text(engine: &QueryEngine, runtime: &tokio::runtime::Runtime, sql: &str) -> String {
    let out = runtime
        .block_on(engine.sql(&format!("EXPLAIN {sql}")))
        .unwrap();
    let batch = &out.batches[0];
    let options = FormatOptions::default();
    let plans = ArrayFormatter::try_new(batch.column(1).as_ref(), &options).unwrap();
    (0..batch.num_rows())
        .map(|i| plans.value(i).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn filters_compare_ids_and_outputs_decode_after_aggregation() {
    let d = Arc::new(dictionary());
    let engine = id_engine(&d);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cart = d.id("service", "cart");
    let plan = plan_text(
        &engine,
        &rt,
        "SELECT auto_service_0, count(*) FROM flow_log.l7_flow_log \
         WHERE auto_service_1 = 'cart' GROUP BY auto_service_0",
    );
    // the filter compares the id of the service derived from the server process, the
    // group key is an id, decoding sits above the aggregate
    assert!(
        plan.contains(&format!(
            "tag_derive(flow_log.l7_flow_log.gprocess_id_1, flow_log.l7_flow_log.time, \
             Utf8(\"gprocess\"), Utf8(\"service\")) = UInt32({cart})"
        )),
        "{plan}"
    );
    let logical = plan.split("physical_plan").next().unwrap();
    let decode_at = logical.find("tag_decode").expect(logical);
    let aggregate_at = logical.find("Aggregate").expect(logical);
    assert!(
        decode_at < aggregate_at,
        "decode must be above the aggregate:\n{logical}"
    );

    // an unknown literal matches nothing and is only looked up, never created
    let before = d.ids.len();
    let out = rt
        .block_on(engine.sql(
            "SELECT count(*) FROM flow_log.l7_flow_log WHERE auto_service_1 = 'no-such-service'",
        ))
        .unwrap();
    let count = out.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(count, 0);
    assert_eq!(d.ids.len(), before);
    assert!(
        d.lookups
            .lock()
            .unwrap()
            .contains(&"no-such-service".to_string())
    );

    // output types are strings; users see no ids
    let out = rt
        .block_on(engine.sql("SELECT * FROM flow_log.l7_flow_log LIMIT 1"))
        .unwrap();
    for name in ["gprocess_id_0", "endpoint", "auto_service_1"] {
        let i = out.schema.index_of(name).unwrap();
        assert_eq!(out.schema.field(i).data_type(), &DataType::Utf8, "{name}");
        assert_eq!(
            out.batches[0].column(i).data_type(),
            &DataType::Utf8,
            "{name}"
        );
    }
}
