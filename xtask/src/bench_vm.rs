//! The benches that judge the agent on a production node's cgroup tree
//! (`cargo xtask bench scale` and `cargo xtask bench cgroups`, cargo bench targets in
//! `agent/benches/`): where dense nodes run, a pure cgroup v2 tree with every
//! controller on: Debian's 6.12 kernel in a VM (4 GiB, one vCPU, TCG), booted as
//! `cargo xtask vm` boots it. `--here` runs them on this host's v2 mount instead.

use std::{fs, time::Duration};

use anyhow::{bail, Context as _};

use crate::{cmd, kernels, vm};

/// The kernel of a current production node (Debian 13).
const KERNEL: &str = "6.12";
const MEMORY_MIB: u32 = 4096;
const TIMEOUT: Duration = Duration::from_secs(3600);
/// Printed by the VM's init before the bench's output again and with its exit code.
const OUTPUT_MARK: &str = "CGSCOPE-BENCH-OUTPUT";
const RC_MARK: &str = "CGSCOPE-BENCH-RC";

/// Runs the cargo bench target `bench` with `args`, in the VM or (`here`) on this host.
pub fn run(bench: &str, here: bool, args: &[String]) -> anyhow::Result<()> {
    if here {
        let mut cargo = vec!["bench", "-q", "-p", "cgscope", "--bench", bench, "--"];
        cargo.extend(args.iter().map(String::as_str));
        return cmd::cargo(&cargo);
    }
    let cache = cmd::workspace_root().join(".cache/vm");
    fs::create_dir_all(&cache)?;
    let binaries = vm::build_binaries(&["bench", "-p", "cgscope", "--bench", bench])?;
    let label = format!("{bench}[bench]");
    let binary = binaries
        .iter()
        .find(|b| b.label == label)
        .with_context(|| format!("cargo bench built no {bench} bench"))?;
    // cargo bench passes `--bench` to a bench without libtest's harness: so does this.
    let run = format!(
        "cd /tmp && {binary} --bench {args} > /tmp/bench-output; rc=$?\n\
         echo {OUTPUT_MARK}; cat /tmp/bench-output; echo \"{RC_MARK} $rc\"\n",
        binary = binary.path.display(),
        args = args.join(" "),
    );
    let initrd = vm::build_initramfs(&binaries, &run, &cache)?;
    let kernel = kernels::KERNELS
        .iter()
        .find(|k| k.name == KERNEL)
        .context("the bench kernel is in the VM matrix")?;
    let vmlinuz = kernels::fetch_kernel(kernel, &cache)?;
    let initrd = vm::with_modules(&initrd, &cache.join(kernel.name))?;
    let log = cache.join(format!("{bench}.log"));
    vm::boot(&vmlinuz, &initrd, &log, TIMEOUT, MEMORY_MIB, "")?;
    // The serial console ends lines with CRLF.
    let text = fs::read_to_string(&log)?.replace("\r\n", "\n");
    let Some((_, output)) = text.split_once(&format!("{OUTPUT_MARK}\n")) else {
        bail!(
            "the {bench} bench did not finish (serial log: {})",
            log.display()
        );
    };
    let (output, rc) = output
        .split_once(RC_MARK)
        .with_context(|| format!("the {bench} bench's exit code is missing"))?;
    print!("{output}");
    match rc.split_whitespace().next() {
        Some("0") => Ok(()),
        rc => bail!(
            "the {bench} bench failed (exit {}; serial log: {})",
            rc.unwrap_or("?"),
            log.display()
        ),
    }
}
