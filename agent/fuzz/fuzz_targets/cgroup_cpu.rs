//! `cpu.stat` and `cpu.max` (agent/src/cgroup/cpu.rs), as a delegated cgroup's
//! files could read.
#![no_main]

use cgscope::cgroup::cpu::{CpuMax, CpuStat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // cgroup files reach the parsers through `read_to_string`: UTF-8 or an error.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text.parse::<CpuStat>();
    if let Ok(max) = text.parse::<CpuMax>() {
        if let Some(cores) = max.cores() {
            assert!(cores.is_finite() && cores >= 0.0, "{max:?}: {cores}");
        }
    }
});
