//! `/proc/stat`'s `cpu` and `cpuN` lines (agent/src/host.rs).
#![no_main]

use cgscope::host::{parse_proc_stat, parse_proc_stat_cpus};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_proc_stat(text);
    let _ = parse_proc_stat_cpus(text);
});
