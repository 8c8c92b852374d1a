//! `cargo xtask node`: a real node in a VM. Debian bookworm's root file system, made
//! by debootstrap and cached, boots Debian's 6.1 kernel with systemd as PID 1 on a
//! pure cgroup v2 tree, with Debian's containerd (CRI), runc, CNI plugins, Docker,
//! Podman and Prometheus installed. The node tests (`agent/tests/node/`) run there
//! as root, started by a systemd unit once the system is up: they create pods
//! through the CRI and containers with `docker run` and `podman run`, and check what
//! cgscope says about them.
//!
//! The root file system is built once per recipe (its package list, the kernel's
//! modules and the files below) into `/var/cache/cgscope/node-<key>/`, where a fresh
//! clone on the same machine finds it again; each run boots a copy-on-write overlay
//! of it, plus a small disk with this build's binaries (`/opt/cgscope`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{
    cmd, kernels,
    report::{self, EnvReport},
    setup,
    vm::{self, TestBinary},
};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

/// What the node runs, from Debian's archive. debootstrap installs Depends, not
/// Recommends: what a runtime only recommends but the tests need is listed.
const PACKAGES: &[&str] = &[
    // A production node's base: systemd as PID 1, udev (loads the modules of the
    // devices and of what the runtimes ask for), dbus (systemd's cgroup driver in
    // Docker and Podman talks to systemd over it).
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "iproute2",
    "iptables",
    "procps",
    "busybox-static",
    "e2fsprogs",
    // Debian's kernels enable AppArmor: Docker refuses to start a container
    // without its parser, and containerd applies its profile when it is there.
    "apparmor",
    // The runtimes.
    "containerd",
    "runc",
    "containernetworking-plugins",
    "docker.io",
    "podman",
    // Scrapes cgscope as a node's monitoring would; promtool lints /metrics.
    "prometheus",
    // The export tests' other peers: openssl (a TLS server with client
    // certificates), libpython3.11 (rotel-agent, the OTLP collector, links it).
    "openssl",
    "libpython3.11",
    // The export test validates a snapshot against docs/snapshot.schema.json.
    "python3-jsonschema",
    // Reads the probes' maps (a deleted pod leaves no entries).
    "bpftool",
];

/// Bump when a file this module writes into the root file system changes.
const RECIPE: u32 = 1;

/// The node's kernel: the one bookworm ships (6.1).
const KERNEL: &str = "6.1";

/// Boot and run time allowed; the node tests themselves bound each phase.
pub const TIMEOUT: Duration = Duration::from_secs(1500);

#[derive(clap::Args)]
pub struct NodeArgs {
    /// Give up on the node after this many seconds.
    #[arg(long, default_value_t = TIMEOUT.as_secs())]
    timeout: u64,
}

/// `cargo xtask node`: the node's summary; fails if a test did.
pub fn run(args: &NodeArgs) -> anyhow::Result<()> {
    report::conclude(&[report(Duration::from_secs(args.timeout))?], false)
}

/// The test binaries that run on the node: those of `agent/tests/node/`, whose
/// tests are `#[ignore]`d elsewhere (they need this node) and run here with
/// `--include-ignored`, and those with a test that starts a real runtime's daemon
/// (skipped elsewhere: runtimes run only here).
fn is_node_test(binary: &TestBinary) -> bool {
    binary.is_test && ["node", "cri", "metadata"].contains(&binary.label.as_str())
}

/// Boots the node and runs the node tests there: one report.
pub fn report(timeout: Duration) -> anyhow::Result<EnvReport> {
    setup::run()?;
    let cache = cmd::workspace_root().join(".cache/vm");
    fs::create_dir_all(&cache)?;
    let kernel = kernels::KERNELS
        .iter()
        .find(|k| k.name == KERNEL)
        .context("the node's kernel is in the VM matrix")?;
    let vmlinuz = kernels::fetch_kernel(kernel, &cache)?;
    let kernel_root = cache.join(kernel.name).join("root");

    let started = Instant::now();
    let image = root_image(&kernel_root)?;
    eprintln!(
        "node: root file system {} ({:.0?})",
        image.display(),
        started.elapsed()
    );

    let binaries = vm::build_test_binaries(&["cgscope"])?;
    let tests: Vec<&TestBinary> = binaries.iter().filter(|b| is_node_test(b)).collect();
    if tests.is_empty() {
        bail!("no node test binary was built");
    }
    let run_dir = cache.join("node");
    if run_dir.exists() {
        fs::remove_dir_all(&run_dir)?;
    }
    fs::create_dir_all(&run_dir)?;
    let payload = payload(&binaries, &tests, &run_dir)?;
    let overlay = run_dir.join("root.qcow2");
    cmd::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&image)
            .arg(&overlay),
    )?;

    let log = run_dir.join("serial.log");
    eprintln!("node: booting (serial log: {})", log.display());
    // Two vCPUs, as a node has more than one CPU (the contention tests pin to
    // one). The root disk is NVMe, which the cloud kernel has built in (no
    // initramfs); the payload disk is virtio, whose module udev loads. A soft
    // lockup panics the guest, which then ends qemu (`-no-reboot`): a wedged node
    // fails in minutes with the lockup in its log, not silently at the timeout.
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-m", "3072", "-smp", "2", "-kernel"])
        .arg(&vmlinuz)
        .args([
            "-append",
            "console=ttyS0 root=/dev/nvme0n1 rw panic=-1 softlockup_panic=1 quiet loglevel=3 \
             systemd.show_status=false",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=root,format=qcow2",
            overlay.display()
        ))
        .args(["-device", "nvme,drive=root,serial=root"])
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw,readonly=on",
            payload.display()
        ));
    let mut env = EnvReport::new(&format!("node {}", kernel.name));
    // One host thread runs both vCPUs in turn (`thread=single`). With a thread per
    // vCPU (multi-threaded TCG, the default), the node hung between two tests in a
    // CI run and in both runs on a fresh machine (QEMU 7.2.22): once with a soft
    // lockup of the thread attaching the probes, once silent as probes were
    // detached, both moments when the kernel patches its code (tracepoint static
    // keys) and waits for the other CPU. With one thread it ran through (13
    // passed, 9 minutes).
    match vm::qemu(qemu, "tcg,thread=single", &log, timeout) {
        Ok(()) => vm::read_log(&fs::read_to_string(&log)?, &tests, &mut env),
        Err(e) => env.problems.push(format!("{e:#}")),
    }
    if !env.problems.is_empty() {
        env.problems.push(format!("serial log: {}", log.display()));
    }
    let _ = fs::remove_file(&overlay);
    Ok(env)
}

/// FNV-1a: a hash that stays the same across Rust versions (a cache key).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cached root file system image for the kernel unpacked at `kernel_root`;
/// built (a few minutes, about 1 GB from Debian's archive) when missing.
fn root_image(kernel_root: &Path) -> anyhow::Result<PathBuf> {
    let modules = kernel_root.join("lib/modules");
    let version = fs::read_dir(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .flatten()
        .find_map(|e| e.file_name().into_string().ok())
        .context("the kernel package has no modules")?;
    let key = fnv1a(&format!(
        "{SUITE} {MIRROR} {} {version} {RECIPE}",
        PACKAGES.join(",")
    ));
    let dir = PathBuf::from(format!("/var/cache/cgscope/node-{key:016x}"));
    let image = dir.join("root.img");
    if image.exists() {
        return Ok(image);
    }
    eprintln!(
        "node: building the root file system into {} (once)",
        dir.display()
    );
    let building = dir.with_extension("building");
    if building.exists() {
        fs::remove_dir_all(&building)?;
    }
    let root = building.join("root");
    fs::create_dir_all(&building)?;
    cmd::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include"])
            .arg(PACKAGES.join(","))
            .arg(SUITE)
            .arg(&root)
            .arg(MIRROR),
    )?;
    // `/lib` is a symlink to `/usr/lib` there; the package ships no modules.dep.
    let dst = root.join("usr/lib/modules");
    fs::create_dir_all(&dst)?;
    cmd::run(
        Command::new("cp")
            .arg("-a")
            .arg(modules.join(&version))
            .arg(&dst),
    )?;
    cmd::run(
        Command::new("chroot")
            .arg(&root)
            .args(["depmod", "-a", &version]),
    )?;
    configure(&root)?;
    // The downloaded packages (about 160 MB) are not part of a node.
    for deb in fs::read_dir(root.join("var/cache/apt/archives"))?.flatten() {
        if deb.path().extension().is_some_and(|e| e == "deb") {
            fs::remove_file(deb.path())?;
        }
    }
    // Built to a temporary name, then renamed: an interrupted build is redone.
    let partial = building.join("root.img");
    cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-L", "cgscope-node", "-d"])
            .arg(&root)
            .arg(&partial)
            .arg("6G"),
    )?;
    fs::remove_dir_all(&root)?;
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&building, &dir)?;
    Ok(image)
}

/// A file of the root file system: its path and text.
type NodeFile = (&'static str, &'static str);

/// What makes the debootstrapped tree a node that runs the tests at boot.
const FILES: &[NodeFile] = &[
    ("etc/hostname", "cgscope-node\n"),
    ("etc/hosts", "127.0.0.1 localhost\n127.0.1.1 cgscope-node\n"),
    (
        "etc/fstab",
        "/dev/nvme0n1 / ext4 rw 0 1\n\
         /dev/vda /opt/cgscope ext4 ro,nofail,x-systemd.device-timeout=120s 0 0\n",
    ),
    // The tests, once the system is up; their results on the serial console.
    (
        "etc/systemd/system/cgscope-node-tests.service",
        "[Unit]\n\
         Description=cgscope node tests\n\
         After=multi-user.target\n\
         RequiresMountsFor=/opt/cgscope\n\
         [Service]\n\
         Type=simple\n\
         ExecStart=/bin/bash /opt/cgscope/run\n\
         StandardOutput=tty\n\
         StandardError=tty\n\
         TTYPath=/dev/ttyS0\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
    ),
    // Docker: no network to set up (no iptables rules, no default bridge); the
    // tests give containers `--network none` or their own namespace.
    (
        "etc/docker/daemon.json",
        "{\"iptables\": false, \"ip6tables\": false, \"bridge\": \"none\"}\n",
    ),
];

/// Units that a test node does not need and that slow a TCG boot or print on the
/// serial console the tests use.
const MASKED: &[&str] = &[
    "serial-getty@ttyS0.service",
    "getty@tty1.service",
    "systemd-timesyncd.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "man-db.timer",
    "dpkg-db-backup.timer",
    "e2scrub_reap.service",
    "podman-auto-update.timer",
    // Started by the tests when they need them, with their own settings.
    "prometheus.service",
    "prometheus-node-exporter.service",
];

fn configure(root: &Path) -> anyhow::Result<()> {
    for (path, text) in FILES {
        let dst = root.join(path);
        fs::create_dir_all(dst.parent().context("a file has a parent")?)?;
        fs::write(&dst, text).with_context(|| format!("writing {}", dst.display()))?;
    }
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants)?;
    let unit = wants.join("cgscope-node-tests.service");
    if !unit.exists() {
        std::os::unix::fs::symlink("/etc/systemd/system/cgscope-node-tests.service", unit)?;
    }
    for masked in MASKED {
        let link = root.join("etc/systemd/system").join(masked);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", link)?;
    }
    fs::create_dir_all(root.join("opt/cgscope"))?;
    Ok(())
}

/// Where the node finds rotel-agent (the export tests read `CGSCOPE_ROTEL_AGENT`).
const ROTEL_AGENT: &str = "/usr/bin/rotel-agent";

/// rotel-agent from the `rotel` wheel that `cargo xtask setup` installs.
fn rotel_agent() -> anyhow::Result<PathBuf> {
    let out = cmd::output(Command::new("python3").args([
        "-c",
        "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
    ]))?;
    Ok(PathBuf::from(out.trim()))
}

/// The disk with this build's binaries: the test binaries and `cgscope` at their
/// build paths under `root/` (their compiled-in paths must resolve), the
/// repository's files the tests read, and the script the unit runs.
fn payload(
    binaries: &[TestBinary],
    tests: &[&TestBinary],
    run_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let dir = run_dir.join("payload");
    let root = dir.join("root");
    fs::create_dir_all(&root)?;
    for binary in binaries.iter().filter(|b| is_node_test(b) || !b.is_test) {
        let dst = vm::install(&root, &binary.path)?;
        cmd::run(Command::new("strip").arg("--strip-debug").arg(&dst))?;
    }
    for dir in ["agent/tests/fixtures", "docs", "deploy", "playbooks"] {
        vm::copy_tree(&root, &cmd::workspace_root().join(dir))?;
    }
    // The OTLP collector the export tests send to, from the `rotel` wheel.
    let rotel = root.join(ROTEL_AGENT.trim_start_matches('/'));
    fs::create_dir_all(rotel.parent().context("a parent")?)?;
    fs::copy(rotel_agent()?, &rotel).context("copy rotel-agent")?;
    fs::write(dir.join("run"), node_script(tests))?;
    let image = run_dir.join("payload.img");
    cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-d"])
            .arg(&dir)
            .arg(&image)
            .arg("1G"),
    )?;
    Ok(image)
}

/// What the unit runs: waits for the system, puts the payload's files at their
/// paths, runs the tests, powers off.
fn node_script(tests: &[&TestBinary]) -> String {
    format!(
        r#"#!/bin/bash
state=$(systemctl is-system-running --wait)
echo "node: system $state after $(cut -d' ' -f1 /proc/uptime) s"
systemctl --no-pager --failed --plain --no-legend | sed 's/^/node: failed unit: /'
echo "node: $(uname -r); $(containerd --version); $(runc --version | head -1); \
$(dockerd --version); $(podman --version); $(prometheus --version 2>&1 | head -1)"
cp -a /opt/cgscope/root/. /
export CGSCOPE_ROTEL_AGENT={rotel}
{run_tests}# At once: stopping the runtimes and their pods cleanly takes minutes under TCG,
# and the root disk is a throwaway overlay.
sync
systemctl poweroff --force --force
"#,
        run_tests = vm::run_tests(tests, "--include-ignored"),
        rotel = ROTEL_AGENT,
    )
}
