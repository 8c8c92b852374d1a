//! `cargo xtask setup`: installs only what is missing, and says what it did.
//! Idempotent: a second run checks and does nothing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::cmd;

/// bpf-linker 0.11+ needs an external LLVM 21-23; 0.10.2 uses the LLVM inside the
/// pinned nightly (LLVM 22).
const BPF_LINKER_VERSION: &str = "0.10.2";

/// cargo-fuzz, for `cargo xtask fuzz` (libFuzzer; it runs on the pinned nightly,
/// whose sanitizer and coverage flags libFuzzer needs).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Debian packages the tests and benchmarks use, with why.
pub const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    (
        "qemu-system-x86",
        "cargo xtask vm: boots the 6.1 and 6.12 kernels",
    ),
    ("busybox-static", "cargo xtask vm: the VM's userland"),
    (
        "debootstrap",
        "cargo xtask node: the node's Debian root file system",
    ),
    (
        "qemu-utils",
        "cargo xtask node: qemu-img, a copy-on-write overlay of the cached node",
    ),
    (
        "e2fsprogs",
        "cargo xtask node: mkfs.ext4 -d, the node's disks without mounting",
    ),
    ("cpio", "cargo xtask vm: packs the initramfs"),
    ("binutils", "cargo xtask vm: strips the test binaries"),
    (
        "xz-utils",
        "cargo xtask vm: unpacks the 6.12 kernel's modules",
    ),
    (
        "fio",
        "io tests and cargo xtask bench io: the IO workload and its own count of IOs",
    ),
    (
        "tmux",
        "top test: drives cgscope top in a terminal (send-keys, capture-pane)",
    ),
    (
        "iproute2",
        "network tests: network namespaces and veth pairs",
    ),
    (
        "bpftool",
        "cargo xtask bench: per-program run time (bpf_stats)",
    ),
    (
        "libbpf-tools",
        "blockio test, cargo xtask bench: runqlat and biolatency, the references",
    ),
    (
        "bpftrace",
        "cargo xtask bench net: a tcp_probe histogram, the reference (no libbpf tool \
         for TCP attaches without kprobes)",
    ),
    (
        "iperf3",
        "cargo xtask bench net: TCP throughput, the workload",
    ),
    (
        "linux-perf",
        "cargo xtask bench: perf bench sched messaging, the workload",
    ),
    (
        "podman",
        "metadata test: a real Docker Engine API (podman system service)",
    ),
    (
        "containerd",
        "cri test: a real CRI server (runs no pods, creates no cgroups)",
    ),
    (
        "openssl",
        "export test: a TLS server that verifies cgscope's client certificate (mTLS)",
    ),
    (
        "systemd",
        "deploy test: systemd-analyze verify checks the unit in deploy/systemd",
    ),
    (
        "prometheus",
        "export test: Prometheus scrapes /metrics and answers PromQL; promtool lints it",
    ),
    (
        "pcp",
        "cargo xtask bench agents: PCP (pmcd, the proc and bpf PMDAs, pmlogger), the peer; export test: its openmetrics PMDA scrapes /metrics",
    ),
    (
        "python3-requests",
        "export test: PCP's openmetrics PMDA fetches with it (pcp only suggests it)",
    ),
    (
        "python3-jsonschema",
        "export test: validates a served snapshot against docs/snapshot.schema.json",
    ),
];

/// PyPI packages (pinned), with why.
pub const PYPI_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "rotel",
        "0.0.1a15",
        "export tests: a real OTLP collector (gRPC and HTTP) printing what it receives",
    ),
    (
        "kubernetes-validate",
        "1.37.0",
        "deploy test: the manifests against Kubernetes' OpenAPI schemas (offline)",
    ),
    (
        "yamllint",
        "1.38.0",
        "deploy test: every YAML file under deploy/",
    ),
];

/// The nightly that builds `agent-ebpf`; defined once, in `agent-ebpf/rust-toolchain-pin`.
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    let path = cmd::workspace_root().join("agent-ebpf/rust-toolchain-pin");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

pub fn run() -> anyhow::Result<()> {
    let mut did = Vec::new();
    let toolchain = build_toolchain(&mut did)?;
    // `xtask test` runs the fuzz targets.
    cargo_fuzz(&mut did)?;

    // `xtask test` runs fmt and clippy on the host toolchain.
    let has_lints = cmd::succeeds(cmd::cargo_command().args(["fmt", "--version"]))
        && cmd::succeeds(cmd::cargo_command().args(["clippy", "--version"]));
    if !has_lints {
        cmd::run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
        did.push("installed rustfmt and clippy".to_owned());
    }

    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !debian_installed(p))
        .collect();
    if !missing.is_empty() {
        if !Path::new("/usr/bin/apt-get").exists() {
            bail!("missing Debian packages {missing:?} and no apt-get to install them");
        }
        cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        let _shim = without_service_manager(&mut install)?;
        cmd::run(&mut install)?;
        did.push(format!("installed Debian packages {}", missing.join(" ")));
    }

    for (package, version, _) in PYPI_PACKAGES {
        let installed = cmd::output(Command::new("python3").args(["-m", "pip", "show", package]))
            .is_ok_and(|out| out.lines().any(|l| l == format!("Version: {version}")));
        if !installed {
            cmd::run(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "-q",
                "--root-user-action=ignore",
                &format!("{package}=={version}"),
            ]))?;
            did.push(format!("installed PyPI {package}=={version}"));
        }
    }

    if did.is_empty() {
        eprintln!("setup: everything present ({toolchain} + rust-src, bpf-linker {BPF_LINKER_VERSION}, cargo-fuzz {CARGO_FUZZ_VERSION}, {} Debian packages)", DEBIAN_PACKAGES.len());
    } else {
        for line in did {
            eprintln!("setup: {line}");
        }
    }
    Ok(())
}

/// What building cgscope needs (no more: the image's build stage runs only this):
/// the pinned nightly with rust-src, and bpf-linker. Returns the nightly's name.
pub fn build_toolchain(did: &mut Vec<String>) -> anyhow::Result<String> {
    let toolchain = ebpf_toolchain()?;
    let has_rust_src = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        &toolchain,
    ]))
    .is_ok_and(|out| out.lines().any(|l| l.starts_with("rust-src")));
    if !has_rust_src {
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            &toolchain,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
        did.push(format!("installed toolchain {toolchain} with rust-src"));
    }

    let linker = cmd::output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        cmd::run(cmd::cargo_command().args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))?;
        did.push(format!("installed bpf-linker {BPF_LINKER_VERSION}"));
    }
    Ok(toolchain)
}

/// cargo-fuzz at its pinned version, unless it is there.
pub fn cargo_fuzz(did: &mut Vec<String>) -> anyhow::Result<()> {
    let installed =
        cmd::output(cmd::cargo_command().args(["fuzz", "--version"])).unwrap_or_default();
    if !installed.contains(CARGO_FUZZ_VERSION) {
        cmd::run(cmd::cargo_command().args([
            "install",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
            "--locked",
            "--force",
        ]))?;
        did.push(format!("installed cargo-fuzz {CARGO_FUZZ_VERSION}"));
    }
    Ok(())
}

fn debian_installed(package: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

/// Where PID 1 is not systemd (a container, this project's CI machine), a package
/// whose postinst runs `systemctl start` (pcp's does, without checking that systemd
/// runs) fails to configure and leaves dpkg half done. Puts first on the PATH of
/// `command` (an `apt-get`) and of the dpkg it runs a `systemctl` that starts nothing;
/// the directory is removed when dropped. apt sets dpkg's PATH from `DPkg::Path`
/// (default `/usr/sbin:/usr/bin:/sbin:/bin`), not from its own: a fresh machine's
/// setup failed on pcp while the shim sat only on apt's PATH.
fn without_service_manager(command: &mut Command) -> anyhow::Result<Option<TempDir>> {
    let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if pid1.trim() == "systemd" {
        return Ok(None);
    }
    let dir = TempDir(std::env::temp_dir().join(format!("cgscope-setup-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let shim = dir.0.join("systemctl");
    std::fs::write(
        &shim,
        "#!/bin/sh\n# PID 1 is not systemd: no service to start or reload.\nexit 0\n",
    )?;
    cmd::run(Command::new("chmod").arg("755").arg(&shim))?;
    let path = std::env::var("PATH").unwrap_or_default();
    command.env("PATH", format!("{}:{path}", dir.0.display()));
    command.arg("-o").arg(format!(
        "DPkg::Path={}:/usr/sbin:/usr/bin:/sbin:/bin",
        dir.0.display()
    ));
    Ok(Some(dir))
}

/// A directory removed (with its files) when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
