//! `cargo xtask test`: everything CI checks, in order of cost.

use crate::{cmd, setup, vm};

/// Host crates (agent-ebpf is built by agent/build.rs, never for the host).
const HOST_PACKAGES: [&str; 6] = ["-p", "cgscope", "-p", "cgscope-common", "-p", "xtask"];

pub fn run(with_vm: bool) -> anyhow::Result<()> {
    setup::run()?;
    cmd::cargo(&["fmt", "--all", "--", "--check"])?;
    let mut clippy = vec!["clippy"];
    clippy.extend(HOST_PACKAGES);
    clippy.extend(["--all-targets", "--", "-D", "warnings"]);
    cmd::cargo(&clippy)?;
    // Unit and integration tests on this kernel. One test at a time: the
    // integration tests pin CPU hogs and count loaded programs.
    let mut test = vec!["test"];
    test.extend(HOST_PACKAGES);
    test.extend(["--", "--test-threads=1"]);
    cmd::cargo(&test)?;
    if with_vm {
        vm::run(&vm::VmArgs::all())?;
    }
    eprintln!("xtask test: all passed");
    Ok(())
}
