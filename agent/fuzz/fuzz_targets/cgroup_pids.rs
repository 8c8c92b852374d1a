//! `pids.events`, `pids.max`, `pids.current` (agent/src/cgroup/pids.rs and the
//! single-value readers of agent/src/cgroup/format.rs that stats.rs uses for them).
#![no_main]

use cgscope::cgroup::{
    format::{limit, number},
    pids::PidsEvents,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text.parse::<PidsEvents>();
    let _ = limit(text);
    let _ = number(text.trim());
});
