//! `cargo xtask bench scale`: the scale bench (`agent/benches/scale.rs`) where dense
//! nodes run, a pure cgroup v2 tree with every controller on: Debian's 6.12 kernel in
//! a VM (4 GiB, one vCPU, TCG), booted as `cargo xtask vm` boots it. `--here` runs it
//! on this host's v2 mount instead.

use std::{fs, time::Duration};

use anyhow::{bail, Context as _};

use crate::{cmd, kernels, vm};

/// The kernel of a current production node (Debian 13).
const KERNEL: &str = "6.12";
const MEMORY_MIB: u32 = 4096;
const TIMEOUT: Duration = Duration::from_secs(3600);
/// Printed by the VM's init before the bench's output again and with its exit code.
const OUTPUT_MARK: &str = "CGSCOPE-SCALE-OUTPUT";
const RC_MARK: &str = "CGSCOPE-SCALE-RC";

pub fn run(here: bool, busy: &[usize]) -> anyhow::Result<()> {
    let counts: Vec<String> = busy.iter().map(ToString::to_string).collect();
    if here {
        let mut args = vec!["bench", "-q", "-p", "cgscope", "--bench", "scale", "--"];
        args.extend(counts.iter().map(String::as_str));
        return cmd::cargo(&args);
    }
    let cache = cmd::workspace_root().join(".cache/vm");
    fs::create_dir_all(&cache)?;
    let binaries = vm::build_binaries(&["bench", "-p", "cgscope", "--bench", "scale"])?;
    let bench = binaries
        .iter()
        .find(|b| b.label == "scale[bench]")
        .context("cargo bench built no scale bench")?;
    let run = format!(
        "cd /tmp && {bench} {counts} > /tmp/scale-output; rc=$?\n\
         echo {OUTPUT_MARK}; cat /tmp/scale-output; echo \"{RC_MARK} $rc\"\n",
        bench = bench.path.display(),
        counts = counts.join(" "),
    );
    let initrd = vm::build_initramfs(&binaries, &run, &cache)?;
    let kernel = kernels::KERNELS
        .iter()
        .find(|k| k.name == KERNEL)
        .context("the scale bench's kernel is in the VM matrix")?;
    let vmlinuz = kernels::fetch_kernel(kernel, &cache)?;
    let initrd = vm::with_modules(&initrd, &cache.join(kernel.name))?;
    let log = cache.join("scale.log");
    vm::boot(&vmlinuz, &initrd, &log, TIMEOUT, MEMORY_MIB)?;
    // The serial console ends lines with CRLF.
    let text = fs::read_to_string(&log)?.replace("\r\n", "\n");
    let Some((_, output)) = text.split_once(&format!("{OUTPUT_MARK}\n")) else {
        bail!(
            "the scale bench did not finish (serial log: {})",
            log.display()
        );
    };
    let (output, rc) = output
        .split_once(RC_MARK)
        .context("the scale bench's exit code is missing")?;
    print!("{output}");
    match rc.split_whitespace().next() {
        Some("0") => Ok(()),
        rc => bail!(
            "the scale bench failed (exit {}; serial log: {})",
            rc.unwrap_or("?"),
            log.display()
        ),
    }
}
