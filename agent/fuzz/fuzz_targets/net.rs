//! A network namespace's `/proc/<pid>/net/dev`, `snmp` and `netstat`
//! (agent/src/net.rs): interface names are chosen inside the container.
#![no_main]

use cgscope::net::{each_snmp_value, parse_dev};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut interfaces = Vec::new();
    let _ = parse_dev(text, &mut interfaces);
    let _ = each_snmp_value(text, |section, key, _| {
        assert!(!section.contains(':') && !key.is_empty());
    });
});
