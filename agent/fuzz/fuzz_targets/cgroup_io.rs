//! `io.stat`, `io.max` and the `MAJ:MIN` device numbers in them
//! (agent/src/cgroup/io.rs).
#![no_main]

use cgscope::cgroup::io::{parse_io_max, parse_io_stat, Device};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut stats = Vec::new();
    if parse_io_stat(text, &mut stats).is_ok() {
        for (device, _) in &stats {
            // What the exporters print is what the parser reads back.
            assert_eq!(device.to_string().parse::<Device>().as_ref(), Ok(device));
        }
    }
    let mut max = Vec::new();
    let _ = parse_io_max(text, &mut max);
    let _ = text.parse::<Device>();
});
