//! Builds the kernel programs (`agent-ebpf`) with the pinned nightly and bpf-linker,
//! and leaves the object in OUT_DIR for `include_bytes!`.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let root = Path::new(manifest_dir).join("..");
    let toolchain = std::fs::read_to_string(root.join("agent-ebpf/rust-toolchain-pin"))?;
    let ebpf_dir = root.join("agent-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    println!("cargo:rerun-if-changed=../agent-common");
    // aya-build writes nothing with AYA_BUILD_SKIP=1 (host-only checks, the fuzz
    // targets): an empty object, which the probes report as "no eBPF programs",
    // lets the crate build in a target dir that never held the real one.
    let skip = std::env::var_os("AYA_BUILD_SKIP")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let object = Path::new(&std::env::var("OUT_DIR")?).join("cgscope-ebpf");
    if skip && !object.exists() {
        std::fs::write(&object, [])?;
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "cgscope-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(toolchain.trim()),
    )
}
