//! `/proc/self/mountinfo` (agent/src/cgroup/mount.rs): mount points and roots are
//! escaped paths that containers and users create.
#![no_main]

use cgscope::{cgroup::mount::parse_mountinfo, snapshot::CgroupMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let m = parse_mountinfo(text);
    assert_eq!(m.v2_root.is_none(), m.mode == CgroupMode::Legacy);
});
