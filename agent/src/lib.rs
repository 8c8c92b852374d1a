//! cgscope: per-container kernel performance agent. The binary (`main.rs`) only
//! parses the command line and wires these modules together.

pub mod btf;
pub mod cgroup;
pub mod check;
pub mod config;
pub mod export;
pub mod histogram;
pub mod host;
pub mod measure;
pub mod metadata;
pub mod net;
pub mod playbook;
pub mod privilege;
pub mod probes;
pub mod sample;
pub mod sampler;
pub mod table;
pub mod text;
pub mod top;
pub mod window;

/// A file's text from `tests/fixtures/`, captured from real hosts, for the parser
/// tests of every module.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
