//! `cargo xtask test`: everything CI checks, in order of cost, and at the end what
//! was tested where: one summary per environment (the host, each VM kernel, the
//! real node) and `N passed, M failed, K skipped` (see [`report`]).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::{
    cmd, fuzz, node,
    report::{self, EnvReport},
    setup, vm,
};

/// Host crates (agent-ebpf is built by agent/build.rs, never for the host).
const HOST_PACKAGES: [&str; 3] = ["cgscope", "cgscope-common", "xtask"];

pub fn run(with_vm: bool) -> anyhow::Result<()> {
    setup::run()?;
    cmd::cargo(&["fmt", "--all", "--", "--check"])?;
    let mut clippy = vec!["clippy"];
    for p in HOST_PACKAGES {
        clippy.extend(["-p", p]);
    }
    clippy.extend(["--all-targets", "--", "-D", "warnings"]);
    cmd::cargo(&clippy)?;
    let mut envs = vec![host()?];
    // Every parser of untrusted input under libFuzzer, 18 s each (about 5.5 min).
    fuzz::run(&fuzz::FuzzArgs::bounded())?;
    // The four VM kernels, two at a time, took 27 minutes in CI in November 2026
    // (5.10 587 s, 6.1 669 s, 6.12 800 s, 7.2 1,039 s), 47 on this machine in
    // December with every binary on each (5.10 1,156 s, 6.1 1,330 s, 6.12 1,215 s,
    // 7.2 1,658 s): the scenario binaries now run on two of them (`Kernel::scenarios`).
    // The real node takes about ten. Not after a failure here.
    if with_vm && !envs[0].failed() {
        envs.extend(vm::reports(&vm::VmArgs::all())?);
        envs.push(node::report(node::TIMEOUT)?);
    }
    // A test skipped on the host is judged only if the VMs ran too.
    let whole_matrix = envs.len() > 1;
    report::conclude(&envs, whole_matrix)
}

/// Unit and integration tests on this kernel, each test binary as `cargo test` runs
/// it (in its package's directory), all of them even after a failure. One test at a
/// time: the integration tests pin CPU hogs and count loaded programs.
fn host() -> anyhow::Result<EnvReport> {
    let mut env = EnvReport::new("host");
    for binary in vm::build_test_binaries(&HOST_PACKAGES)? {
        if !binary.is_test {
            continue;
        }
        eprintln!("+ {} ({})", binary.path.display(), binary.label);
        let mut child = Command::new(&binary.path)
            .args(["--test-threads=1", "--show-output"])
            .current_dir(&binary.package_dir)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.path.display()))?;
        let mut output = String::new();
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).split(b'\n') {
                let line = line.context("reading test output")?;
                let line = String::from_utf8_lossy(&line);
                println!("{line}");
                output.push_str(&line);
                output.push('\n');
            }
        }
        std::io::stdout().flush()?;
        let status = child.wait()?;
        env.add_binary(&binary.label, &output, status.code());
    }
    Ok(env)
}
