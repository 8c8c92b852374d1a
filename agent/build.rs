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
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "cgscope-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(toolchain.trim()),
    )
}
