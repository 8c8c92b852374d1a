//! The CRI's replies as protobuf (agent/src/metadata/cri.rs): `Version`,
//! `ListPodSandbox` and `ListContainers`, decoded and merged into container names.
//! Input: three length-prefixed messages (`u16` little-endian length, then the
//! bytes); the last takes what is left.
#![no_main]

use cgscope::metadata::cri::{
    containers_of, ListContainersResponse, ListPodSandboxResponse, VersionResponse,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn take<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return std::mem::take(data);
    };
    let (message, rest) = rest.split_at(usize::from(u16::from_le_bytes(*len)).min(rest.len()));
    *data = rest;
    message
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let version = VersionResponse::decode(take(&mut data)).unwrap_or_default();
    let pods = ListPodSandboxResponse::decode(take(&mut data)).unwrap_or_default();
    let containers = ListContainersResponse::decode(data).unwrap_or_default();
    for c in containers_of(&version, &pods, &containers) {
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
        assert!(c.created_seconds.is_none_or(f64::is_finite));
    }
});
