//! What a cgroup is from its path (agent/src/cgroup/identity.rs): the directory names
//! under a delegated subtree are chosen by whoever holds it. One path per line (the
//! first tab-separated column, as in tests/fixtures/trees).
#![no_main]

use cgscope::{cgroup::identity::classify, snapshot::CgroupKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for path in text.lines().map(|l| l.split('\t').next().unwrap_or(l)) {
        let id = classify(path);
        if let Some(cid) = &id.container_id {
            assert_eq!(id.kind, Some(CgroupKind::Container), "{path:?}");
            assert!(cid.len() == 64 && path.contains(cid.as_str()), "{path:?}");
        }
        if let Some(uid) = &id.pod_uid {
            assert_eq!(uid.len(), 36, "{path:?}");
        }
    }
});
