//! The line formats every cgroup parser is built from (agent/src/cgroup/format.rs):
//! flat and nested keyed files, fields, limits, numbers, PSI percentages.
#![no_main]

use cgscope::cgroup::format::{fields, flat, limit, lines, nested, number, percent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (key, value) in flat(text) {
        assert!(!key.contains('\n') && !value.contains('\n'));
        let _ = (number(value), limit(value), percent(value));
    }
    for (key, subs) in nested(text) {
        assert!(!key.is_empty());
        for (name, value) in subs {
            assert!(!name.contains(' ') && !value.contains(' '));
            let _ = (limit(value), percent(value));
        }
    }
    for line in lines(text) {
        assert!(!line.contains('\n'));
        for field in fields(line) {
            assert!(!field.is_empty() && !field.contains(' '));
        }
    }
    if let Ok(p) = percent(text) {
        assert!(p.is_finite() && p >= 0.0, "{text:?}: {p}");
    }
});
