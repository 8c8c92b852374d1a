//! `cargo xtask lab [scenario]`: builds a playbook's situation with real cgroups and
//! workloads (the same scenarios the playbook tests run against) and holds it until
//! Ctrl-C, for a person to run `cgscope playbook run` or `cgscope top` on it.

use anyhow::{bail, Context};

use crate::{cmd, vm};

pub fn run(scenario: Option<&str>) -> anyhow::Result<()> {
    let binaries = vm::build_test_binaries(&["cgscope"])?;
    let playbook = binaries
        .iter()
        .find(|b| b.is_test && b.label == "playbook")
        .context("no playbook test binary was built")?;
    if scenario.is_some() && !nix::unistd::geteuid().is_root() {
        bail!("the lab creates cgroups and network namespaces: run it as root");
    }
    std::env::set_var("CGSCOPE_LAB", scenario.unwrap_or(""));
    // The test binary itself, not cargo: Ctrl-C reaches it, and it tears down.
    let args = ["lab", "--exact", "--ignored", "--nocapture", "--quiet"];
    cmd::exec(&playbook.path, &args.map(String::from))
}
