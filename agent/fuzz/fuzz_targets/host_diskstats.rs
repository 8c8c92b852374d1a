//! `/proc/diskstats` (agent/src/host.rs): device names come from drivers, and loop
//! and device-mapper names from whoever sets them up.
#![no_main]

use cgscope::host::parse_diskstats;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_diskstats(text, |_| true);
    let _ = parse_diskstats(text, |name| name.len() % 2 == 0);
});
