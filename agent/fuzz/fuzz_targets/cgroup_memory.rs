//! `memory.stat` and `memory.events` (agent/src/cgroup/memory.rs).
#![no_main]

use cgscope::cgroup::memory::{working_set, MemoryEvents, MemoryStat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(stat) = text.parse::<MemoryStat>() {
        let current = stat.get("anon").unwrap_or(0);
        assert!(working_set(current, &stat) <= current);
    }
    let _ = text.parse::<MemoryEvents>();
});
