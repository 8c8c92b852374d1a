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
pub mod sampler;
pub mod snapshot;
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

/// Asserts that the generated document at `path` (from the repository root) is
/// `want`, saying `stale` if not; `CGSCOPE_BLESS=1` writes it first.
#[cfg(test)]
pub(crate) fn assert_blessed(path: &str, want: &str, stale: &str) {
    let path = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("CGSCOPE_BLESS").is_some() {
        std::fs::write(&path, want).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(have == want, "{path} is stale: {stale}");
}
