//! The Docker Engine API's replies (agent/src/metadata/docker.rs): the HTTP head,
//! `/version` and `/containers/json`. Whoever runs the engine, or names a container
//! or a label, chooses these bytes.
#![no_main]

use cgscope::{
    snapshot::Runtime,
    metadata::docker::{body, parse_containers, parse_version},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A whole reply (head and body) when it has a head, else a body alone.
    let json = body(data).unwrap_or(data);
    let _ = parse_version(json);
    if let Ok(containers) = parse_containers(json, Runtime::Docker) {
        for c in containers {
            let strings = [
                Some(&c.id),
                c.name.as_ref(),
                c.image.as_ref(),
                c.pod.as_ref(),
            ];
            for s in strings.into_iter().flatten().chain(c.labels.values()) {
                assert!(
                    !s.chars().any(char::is_control),
                    "{s:?} kept a control character"
                );
            }
        }
    }
});
