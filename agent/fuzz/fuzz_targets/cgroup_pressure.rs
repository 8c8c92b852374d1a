//! Pressure stall information: a cgroup's `cpu|memory|io|irq.pressure` and the
//! host's `/proc/pressure/*`, one parser (agent/src/cgroup/pressure.rs).
#![no_main]

use cgscope::cgroup::pressure::Pressure;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = text.parse::<Pressure>() {
        for stall in [p.some, p.full].into_iter().flatten() {
            assert!(stall.avg10.is_finite() && stall.avg10 >= 0.0, "{stall:?}");
        }
    }
});
