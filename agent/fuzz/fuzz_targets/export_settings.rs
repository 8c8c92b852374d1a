//! The `OTEL_*` variables (agent/src/export/settings.rs, and `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` in agent/src/export/resource.rs): one `NAME=value`
//! per line of the input is the environment.
#![no_main]

use cgscope::export::{resource::AgentResource, settings::OtlpSettings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let mut warnings = Vec::new();
    if let Some(s) = OtlpSettings::from_env(env, &mut warnings) {
        assert!(!s.timeout.is_zero());
        assert!(s.interval.is_none_or(|i| !i.is_zero()));
        assert!(!s.endpoint.is_empty());
    }
    let resource = AgentResource::from_env(env);
    assert!(resource.0.iter().any(|(k, _)| k == "service.name"));
});
