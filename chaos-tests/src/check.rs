//! The invariants. Each returns the violations it found, as sentences; none means it held.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{MeshSh, http};

/// Runs SQL at `scope` on the node at `base`: `Ok(body)` for HTTP 200, else the error.
pub fn sql(base: &str, sql: &str, scope: &str, strict: bool) -> Result<Value, String> {
    let resp = http()
        .post(format!("{base}/v1/sql"))
        .query(&[
            ("scope", scope),
            ("strict", if strict { "true" } else { "false" }),
        ])
        .json(&json!({ "sql": sql }))
        .send()
        .map_err(|e| format!("{base}: {e}"))?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().map_err(|e| format!("{base}: {e}"))?;
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("{base}: HTTP {status}: {body}"))
    }
}

fn rows(body: &Value) -> &[Value] {
    body["rows"].as_array().map_or(&[], Vec::as_slice)
}

/// The sequence numbers of `measurement`'s points an answer at `scope` holds, and the
/// nodes it says it is missing.
pub fn points(
    base: &str,
    measurement: &str,
    scope: &str,
    strict: bool,
) -> Result<(BTreeSet<u64>, Vec<String>), String> {
    let body = sql(
        base,
        &format!("SELECT value FROM ext_metrics.metrics WHERE measurement = '{measurement}'"),
        scope,
        strict,
    )?;
    let seqs = rows(&body)
        .iter()
        .filter_map(|r| r[0].as_f64())
        .map(|v| v as u64)
        .collect();
    let missing = body["missing_nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((seqs, missing))
}

/// Every acknowledged point is found by a global, strict query from every node (retried
/// for up to `wait`, while the mesh heals). Returns (points found, violations).
pub fn acknowledged_found(
    mesh: &MeshSh,
    measurement: &str,
    acked: &[u64],
    wait: Duration,
) -> (usize, Vec<String>) {
    let deadline = Instant::now() + wait;
    let mut found = 0;
    let mut violations = Vec::new();
    for i in 0..mesh.nodes {
        let last = loop {
            let attempt = points(&mesh.base(i), measurement, "global", true);
            let done = match &attempt {
                Ok((seqs, _)) => acked.iter().all(|s| seqs.contains(s)),
                Err(_) => false,
            };
            if done || Instant::now() > deadline {
                break attempt;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        match last {
            Ok((seqs, _)) => {
                found = found.max(seqs.len());
                let lost: Vec<u64> = acked
                    .iter()
                    .filter(|s| !seqs.contains(s))
                    .copied()
                    .collect();
                if !lost.is_empty() {
                    violations.push(format!(
                        "{}: {} acknowledged points not found, e.g. {:?}",
                        mesh.name(i),
                        lost.len(),
                        &lost[..lost.len().min(10)]
                    ));
                }
            }
            Err(e) => violations.push(format!("{}: no strict global answer: {e}", mesh.name(i))),
        }
    }
    (found, violations)
}

/// A query during a fault, entered at `base`: complete, holding every point acknowledged
/// before the fault (`before`), or partial naming exactly `at_fault`.
pub fn during_fault(
    base: &str,
    measurement: &str,
    before: &[u64],
    at_fault: &[String],
) -> Vec<String> {
    match points(base, measurement, "global", false) {
        Ok((seqs, missing)) if missing.is_empty() => {
            let lost = before.iter().filter(|s| !seqs.contains(s)).count();
            if lost == 0 {
                Vec::new()
            } else {
                vec![format!(
                    "{base}: a complete answer during the fault lacks {lost} points acknowledged before it"
                )]
            }
        }
        Ok((_, mut missing)) => {
            missing.sort();
            let mut expected = at_fault.to_vec();
            expected.sort();
            if missing == expected {
                Vec::new()
            } else {
                vec![format!(
                    "{base}: partial answer names {missing:?}, the nodes at fault are {expected:?}"
                )]
            }
        }
        Err(e) => vec![format!("{base}: no answer during the fault: {e}")],
    }
}

/// The dictionary replicas: each one-to-one (its id side and string side agree), and all
/// replicas of one region (as each node's status names it) equal, retried for up to
/// `wait` while learners catch up.
pub fn dictionaries(mesh: &MeshSh, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    loop {
        let violations = dictionaries_once(mesh);
        if violations.is_empty() || Instant::now() > deadline {
            return violations;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

type Mapping = BTreeSet<(String, u64, String)>;

fn dictionaries_once(mesh: &MeshSh) -> Vec<String> {
    let mut violations = Vec::new();
    let mut by_region: BTreeMap<String, Vec<(String, Mapping)>> = BTreeMap::new();
    for i in 0..mesh.nodes {
        let Some(region) = status(mesh, i).and_then(|s| s["region"].as_str().map(str::to_owned))
        else {
            violations.push(format!("{}: no status", mesh.name(i)));
            continue;
        };
        let body = match sql(
            &mesh.base(i),
            "SELECT kind, id, value, forward_id FROM system.dictionary",
            "node",
            true,
        ) {
            Ok(b) => b,
            Err(e) => {
                violations.push(format!("{}: dictionary not readable: {e}", mesh.name(i)));
                continue;
            }
        };
        let mut mapping = Mapping::new();
        let mut strings: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in rows(&body) {
            let (kind, value) = (
                r[0].as_str().unwrap_or_default().to_owned(),
                r[2].as_str().unwrap_or_default().to_owned(),
            );
            let (id, forward) = (r[1].as_u64(), r[3].as_u64());
            if id.is_none() || id != forward {
                violations.push(format!(
                    "{}: {kind} {value:?} has id {id:?} one way and {forward:?} the other",
                    mesh.name(i)
                ));
            }
            if let Some(id) = id {
                if let Some(other) = strings.insert((kind.clone(), value.clone()), id) {
                    violations.push(format!(
                        "{}: {kind} {value:?} has two ids, {other} and {id}",
                        mesh.name(i)
                    ));
                }
                mapping.insert((kind, id, value));
            }
        }
        by_region
            .entry(region)
            .or_default()
            .push((mesh.name(i), mapping));
    }
    for (region, replicas) in by_region {
        let Some((first_name, first)) = replicas.first() else {
            continue;
        };
        for (name, mapping) in &replicas[1..] {
            if mapping != first {
                let only_first = first.difference(mapping).count();
                let only_this = mapping.difference(first).count();
                violations.push(format!(
                    "region {region}: {name}'s replica differs from {first_name}'s \
                     ({only_this} entries only in {name}, {only_first} only in {first_name})"
                ));
            }
        }
    }
    violations
}

/// No node's log shows a panic.
pub fn no_panics(mesh: &MeshSh) -> Vec<String> {
    (0..mesh.nodes)
        .filter_map(|i| {
            let log = mesh.log_text(i);
            log.lines()
                .find(|l| l.contains("panicked"))
                .map(|l| format!("{}: {l}", mesh.name(i)))
        })
        .collect()
}

/// Node `i`'s `/v1/status`, if it answers.
pub fn status(mesh: &MeshSh, i: usize) -> Option<Value> {
    http()
        .get(format!("{}/v1/status", mesh.base(i)))
        .send()
        .ok()?
        .json()
        .ok()
}

/// The first node among `among` whose `/v1/status` says it leads its region's dictionary
/// group.
pub fn leader(mesh: &MeshSh, among: &[usize]) -> Option<usize> {
    among
        .iter()
        .copied()
        .find(|&i| status(mesh, i).is_some_and(|s| s["dictionary"]["role"] == "leader"))
}

/// Until every node sees all `mesh.nodes` nodes alive (up to `wait`).
pub fn wait_all_alive(mesh: &MeshSh, wait: Duration) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    for i in 0..mesh.nodes {
        loop {
            let alive = status(mesh, i)
                .and_then(|s| {
                    s["mesh"]["nodes"]
                        .as_array()
                        .map(|a| a.iter().filter(|n| n["alive"] == true).count())
                })
                .unwrap_or(0);
            if alive == mesh.nodes {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} sees {alive} of {} nodes alive after {wait:?}",
                    mesh.name(i),
                    mesh.nodes
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}
