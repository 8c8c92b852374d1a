//! A playbook page's ```` ```cgscope-playbook ```` TOML block
//! (agent/src/playbook/mod.rs). The shipped pages are compiled in, but the parser is
//! the one a user's own page would meet.
#![no_main]

use cgscope::playbook::parse_block;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(page) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(playbook) = parse_block("fuzz", page) {
        // Every measure a parsed playbook names exists.
        for check in &playbook.checks {
            assert!(cgscope::measure::find(&check.measure).is_some());
        }
    }
});
