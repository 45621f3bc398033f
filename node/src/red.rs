//! 1-second RED aggregation of L7 rows into `flow_metrics.application` (per server-side
//! key) and `flow_metrics.application_map` (per client → server edge), shared by the eBPF
//! and the packet pipelines. Bounded: past `MAX_RED_KEYS` distinct keys a row is not
//! aggregated and the caller counts it.

use std::sync::Arc;

use hashbrown::HashMap;

use datafusion::arrow::record_batch::RecordBatch;
use tracing::warn;

use crate::tables::{
    APPLICATION, APPLICATION_MAP, EdgeKey, L7Row, NodeTags, RedCounters, application_batch,
    application_map_batch,
};

/// Distinct keys held per table between drains.
const MAX_RED_KEYS: usize = 200_000;

/// RED counters per second and key, until the second is drained.
#[derive(Default)]
pub struct RedAggregator {
    application: HashMap<EdgeKey, RedCounters>,
    application_map: HashMap<EdgeKey, RedCounters>,
}

impl RedAggregator {
    /// Counts one row in its second; false when the row was not aggregated (too many keys).
    pub fn add(&mut self, row: &L7Row) -> bool {
        let edge = EdgeKey {
            second: row.time_us.div_euclid(1_000_000),
            observation_point: row.observation_point,
            signal_source: row.signal_source,
            l7_protocol: row.l7_protocol,
            endpoint: row.endpoint.clone(),
            ip_0: row.ip_0.clone(),
            ip_1: row.ip_1.clone(),
            server_port: row.server_port,
            process_kname_0: Arc::clone(&row.process_kname_0),
            process_kname_1: Arc::clone(&row.process_kname_1),
            auto_service_0: Arc::clone(&row.auto_service_0),
            auto_service_1: Arc::clone(&row.auto_service_1),
        };
        let server_side = EdgeKey {
            ip_0: String::new(),
            process_kname_0: "".into(),
            auto_service_0: "".into(),
            ..edge.clone()
        };
        let full = |map: &HashMap<EdgeKey, RedCounters>, key: &EdgeKey| {
            map.len() >= MAX_RED_KEYS && !map.contains_key(key)
        };
        if full(&self.application_map, &edge) || full(&self.application, &server_side) {
            return false;
        }
        let has_response = row.has_response;
        self.application_map.entry(edge).or_default().add(
            row.response_status,
            row.response_duration_us,
            has_response,
        );
        self.application.entry(server_side).or_default().add(
            row.response_status,
            row.response_duration_us,
            has_response,
        );
        true
    }

    /// Moves every second before `cutoff` out as batches of both tables.
    pub fn drain(&mut self, cutoff: i64, tags: &NodeTags, out: &mut Vec<(String, RecordBatch)>) {
        for (table, map) in [
            (APPLICATION, &mut self.application),
            (APPLICATION_MAP, &mut self.application_map),
        ] {
            let closed: Vec<EdgeKey> = map.keys().filter(|k| k.second < cutoff).cloned().collect();
            if closed.is_empty() {
                continue;
            }
            let rows: Vec<(EdgeKey, RedCounters)> = closed
                .into_iter()
                .filter_map(|k| map.remove(&k).map(|c| (k, c)))
                .collect();
            let batch = if table == APPLICATION {
                application_batch(tags, &rows)
            } else {
                application_map_batch(tags, &rows)
            };
            match batch {
                Ok(batch) => out.push((table.to_string(), batch)),
                Err(e) => warn!(error = %e, table, "failed to build metrics batch"),
            }
        }
    }
}
