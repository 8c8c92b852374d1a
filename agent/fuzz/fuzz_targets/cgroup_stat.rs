//! `cgroup.stat` (agent/src/cgroup/stats.rs).
#![no_main]

use cgscope::cgroup::stats::CgroupStat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text.parse::<CgroupStat>();
});
