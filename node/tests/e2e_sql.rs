//! PostgreSQL and MariaDB from Debian, driven by their own clients: pgbench's statements
//! counted per kind, and a mariadb client's known queries with the right error codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Command, time::Duration};

use common::{servers, *};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn postgres_pgbench(node: &FlowmeshNode) {
    let pg = servers::postgres();
    let port = pg.port.to_string();
    let pgbench = |args: &[&str]| {
        run(Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(args)
            .arg("postgres"))
    };
    pgbench(&["-i", "-q", "-s", "1"]);
    let (clients, txs) = (4, 500);
    let report = pgbench(&[
        "-c",
        &clients.to_string(),
        "-t",
        &txs.to_string(),
        "-M",
        "simple",
        "-n",
    ]);
    assert!(
        report.contains(&format!(
            "number of transactions actually processed: {}/{}",
            clients * txs,
            clients * txs
        )),
        "{report}"
    );
    let expected = i64::from(clients * txs);
    // the seven statements of pgbench's TPC-B-like script, each once per transaction
    let kinds = [
        ("BEGIN", "BEGIN%"),
        ("UPDATE accounts", "UPDATE pgbench_accounts%"),
        ("SELECT abalance", "SELECT abalance%"),
        ("UPDATE tellers", "UPDATE pgbench_tellers%"),
        ("UPDATE branches", "UPDATE pgbench_branches%"),
        ("INSERT history", "INSERT INTO pgbench_history%"),
        ("END", "END%"),
    ];
    for point in ["server", "client"] {
        for (label, pattern) in kinds {
            let sql = format!(
                "SELECT count(*) FROM flow_log.l7_flow_log WHERE l7_protocol = 'PostgreSQL' AND server_port = {} \
                 AND observation_point = '{point}' AND ltrim(request_resource) LIKE '{pattern}'",
                pg.port
            );
            let n = wait_for(
                Duration::from_secs(20),
                &format!("pgbench {label} rows at {point}"),
                || {
                    let n = node.sql(&sql)[0][0].as_i64().unwrap();
                    (n >= expected).then_some(n)
                },
            );
            assert_eq!(n, expected, "{label} at {point}");
        }
        // every pgbench write touches one row (row_effect, from CommandComplete)
        let effects = node.sql(&format!(
            "SELECT DISTINCT row_effect FROM flow_log.l7_flow_log WHERE l7_protocol = 'PostgreSQL' \
             AND server_port = {} AND observation_point = '{point}' \
             AND (ltrim(request_resource) LIKE 'UPDATE pgbench_%' \
             OR ltrim(request_resource) LIKE 'INSERT INTO pgbench_history%')",
            pg.port
        ));
        assert_eq!(effects, vec![vec![serde_json::json!(1)]], "{point}");
    }
    // a failing statement carries its SQLSTATE and message
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-c",
            "SELECT * FROM no_such_table_e2e",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let rows = wait_for(Duration::from_secs(10), "the failed query's row", || {
        let rows = node.sql(&format!(
            "SELECT response_status, response_exception, response_code FROM flow_log.l7_flow_log \
             WHERE server_port = {} AND observation_point = 'server' AND request_resource LIKE '%no_such_table_e2e%'",
            pg.port
        ));
        (!rows.is_empty()).then_some(rows)
    });
    assert_ne!(rows[0][0], "ok", "{rows:?}");
    assert!(
        rows[0][1].as_str().unwrap().contains("no_such_table_e2e"),
        "{rows:?}"
    );
}

fn mariadb_queries(node: &FlowmeshNode) {
    let db = servers::mariadb();
    let port = db.port.to_string();
    // statements with a known outcome each: 1062 duplicate key, 1146 unknown table, 1064 syntax
    let script = "CREATE DATABASE e2e; CREATE TABLE e2e.t (id INT PRIMARY KEY);
        INSERT INTO e2e.t VALUES (1); INSERT INTO e2e.t VALUES (2);
        INSERT INTO e2e.t VALUES (1); SELECT * FROM e2e.nope; SELEC 1 FROM e2e.t;
        SELECT count(*) FROM e2e.t; SELECT id FROM e2e.t WHERE id = 2;";
    // from stdin, so that --force goes on after each failing statement (it does not with -e)
    let mut child = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &port,
            "-u",
            "root",
            "--force",
            "--ssl=0",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for code in ["1062", "1146", "1064"] {
        assert!(
            stderr.contains(code),
            "mariadb client should report {code}: {stderr}"
        );
    }
    let rows = wait_for(Duration::from_secs(10), "the nine statements' rows", || {
        let rows = node.sql(&format!(
            "SELECT request_resource, response_status, response_code FROM flow_log.l7_flow_log \
             WHERE l7_protocol = 'MySQL' AND server_port = {} AND observation_point = 'server' \
             AND request_resource LIKE '%e2e%' ORDER BY time",
            db.port
        ));
        (rows.len() >= 9).then_some(rows)
    });
    assert_eq!(rows.len(), 9, "{rows:#?}");
    let code = |i: usize| rows[i][2].as_i64();
    let ok = |i: usize| rows[i][1] == "ok";
    assert!((0..4).all(ok), "{rows:#?}");
    assert_eq!(
        (code(4), code(5), code(6)),
        (Some(1062), Some(1146), Some(1064)),
        "{rows:#?}"
    );
    assert!(!ok(4) && !ok(5) && !ok(6), "{rows:#?}");
    assert!(ok(7) && ok(8), "{rows:#?}");
}

#[test]
fn postgres_and_mariadb_statements_are_counted_with_their_errors() {
    require(&["pgbench", "psql", "mariadb", "mariadbd", "runuser"]);
    let work = tempfile::tempdir().unwrap();
    let node = FlowmeshNode::start(&work.path().join("data"), free_port(), &[]);
    postgres_pgbench(&node);
    mariadb_queries(&node);
}
