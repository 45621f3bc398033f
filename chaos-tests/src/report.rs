//! One scenario's outcome, as a row of docs/RELIABILITY.md.

use std::io::Write as _;

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    /// Fault cycles run (fault, recovery, checks).
    pub runs: usize,
    /// What was done, in order (`kill -9 n2`, `SIGSTOP n1 (leader) 3 s` …).
    pub faults: Vec<String>,
    pub sent: u64,
    pub acked: usize,
    /// Points of the workload a strict global query found after recovery (unacknowledged
    /// points may be found too: a refused answer can follow a durable write).
    pub found: usize,
    /// The longest a write waited for its answer.
    pub slowest_write: std::time::Duration,
    /// The largest resident memory of any node, sampled after each cycle and at the end.
    pub peak_rss_bytes: u64,
    pub violations: Vec<String>,
}

impl Report {
    /// `| scenario | seed | runs | faults | sent | acked | found | violations |`
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} MiB | {} |",
            self.scenario,
            self.seed,
            self.runs,
            self.faults.join("; "),
            self.sent,
            self.acked,
            self.found,
            self.slowest_write.as_secs_f64(),
            self.peak_rss_bytes >> 20,
            if self.violations.is_empty() {
                "0".to_owned()
            } else {
                format!("{}: {}", self.violations.len(), self.violations.join("; "))
            }
        )
    }

    /// The table's header.
    pub fn header() -> &'static str {
        "| scenario | seed | runs | faults injected | points sent | acknowledged | found after recovery | slowest write | peak node RSS | violations |\n|---|---|---|---|---|---|---|---|---|---|"
    }

    /// Appends the row to the file named by `CHAOS_REPORT`, if set (chaos-tests/report.sh
    /// collects the rows into docs/RELIABILITY.md).
    pub fn record(&self) {
        let Ok(path) = std::env::var("CHAOS_REPORT") else {
            return;
        };
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{}", self.row()));
        if let Err(e) = appended {
            eprintln!("could not append to {path}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_has_every_column() {
        let report = Report {
            scenario: "node kill".into(),
            seed: 7,
            runs: 2,
            faults: vec!["kill -9 n2".into(), "kill -9 n3".into()],
            sent: 100,
            acked: 90,
            found: 92,
            slowest_write: std::time::Duration::from_millis(1250),
            peak_rss_bytes: 300 << 20,
            violations: vec![],
        };
        let row = report.row();
        assert_eq!(
            row,
            "| node kill | 7 | 2 | kill -9 n2; kill -9 n3 | 100 | 90 | 92 | 1.2 s | 300 MiB | 0 |"
        );
        assert_eq!(
            row.matches('|').count(),
            Report::header()
                .lines()
                .next()
                .unwrap()
                .matches('|')
                .count()
        );
    }
}
