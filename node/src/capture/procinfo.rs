//! Process names from /proc, cached per pid for a short while (pids get reused).

use std::{collections::HashMap, sync::Arc, time::Duration};

const TTL: Duration = Duration::from_secs(30);
const MAX_ENTRIES: usize = 16_384;

/// pid → process name (`/proc/<pid>/comm`, the main thread's name).
#[derive(Default)]
pub struct ProcNames {
    names: HashMap<u32, (Arc<str>, u64)>,
}

impl ProcNames {
    /// The name of `pid`; `fallback` (the event's thread name) when /proc has no entry
    /// any more, e.g. for a process that already exited.
    pub fn get(&mut self, pid: u32, fallback: &str, now_ns: u64) -> Arc<str> {
        if let Some((name, at)) = self.names.get(&pid)
            && now_ns.saturating_sub(*at) < TTL.as_nanos() as u64
        {
            return Arc::clone(name);
        }
        let name: Arc<str> = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim_end().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| fallback.to_string())
            .into();
        if self.names.len() >= MAX_ENTRIES {
            self.names
                .retain(|_, (_, at)| now_ns.saturating_sub(*at) < TTL.as_nanos() as u64);
            if self.names.len() >= MAX_ENTRIES {
                self.names.clear();
            }
        }
        self.names.insert(pid, (Arc::clone(&name), now_ns));
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_name_and_falls_back_for_missing_pids() {
        let mut p = ProcNames::default();
        let me = p.get(std::process::id(), "x", 1);
        let expected = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(&*me, expected.trim_end());
        assert_eq!(&*p.get(u32::MAX - 1, "gone", 1), "gone");
    }
}
