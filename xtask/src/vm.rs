//! `cargo xtask vm`: the integration tests inside qemu on Debian's cloud kernels
//! (5.10, 6.1, 6.12 and the newest in unstable), with pure cgroup v2 and the
//! cpu/io/memory/pids controllers enabled, as on a production node. The kernel
//! packages are downloaded once into `.cache/vm`.
//!
//! The initramfs holds busybox, the test binaries at their build paths (so the
//! paths compiled into them still resolve), their shared libraries and the fixtures.
//! TCG only (KVM hangs on this machine), one vCPU each (see `boot`), as many VMs at
//! once as the host has cores (`--lanes`).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::ValueEnum;

use crate::kernels::{fetch_kernel, Kernel, KERNELS};
use crate::{
    cmd,
    report::{self, EnvReport},
    setup,
};

/// Printed by the VM's init around each test binary: its stdout again, whole (the
/// live copy may be interleaved with kernel messages), then its exit code.
const OUTPUT_MARK: &str = "CGSCOPE-VM-OUTPUT";
const OUTPUT_END_MARK: &str = "CGSCOPE-VM-OUTPUT-END";
const RC_MARK: &str = "CGSCOPE-VM-RC";
const DONE_MARK: &str = "CGSCOPE-VM-DONE";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelChoice {
    #[value(name = "5.10")]
    V5_10,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    Newest,
    All,
}

impl KernelChoice {
    fn includes(self, kernel: &Kernel) -> bool {
        match self {
            Self::All => true,
            Self::V5_10 => kernel.name == "5.10",
            Self::V6_1 => kernel.name == "6.1",
            Self::V6_12 => kernel.name == "6.12",
            Self::Newest => kernel.name == "newest",
        }
    }
}

/// See [`VmArgs::timeout`].
const TIMEOUT_SECONDS: u64 = 1800;

#[derive(clap::Args)]
pub struct VmArgs {
    #[arg(long, value_enum, default_value_t = KernelChoice::All)]
    kernel: KernelChoice,
    /// Give up on a VM after this many seconds (a whole run took 590-1,040 s under
    /// TCG on a 2-core host, two VMs at a time, in November 2026: 5.10 fastest, 7.2
    /// slowest).
    #[arg(long, default_value_t = TIMEOUT_SECONDS)]
    timeout: u64,
    /// Only these test binaries (by name: `blame,runq`); all by default.
    #[arg(long, value_delimiter = ',')]
    tests: Vec<String>,
    /// How many VMs run at once (one vCPU each): by default one per host core.
    #[arg(long, default_value_t = default_lanes())]
    lanes: usize,
}

fn default_lanes() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl VmArgs {
    /// What `cargo xtask test` runs: every test on every kernel.
    pub fn all() -> Self {
        Self {
            kernel: KernelChoice::All,
            timeout: TIMEOUT_SECONDS,
            tests: Vec::new(),
            lanes: default_lanes(),
        }
    }
}

/// `cargo xtask vm`: the summary of each kernel and of the run; fails if a test did.
pub fn run(args: &VmArgs) -> anyhow::Result<()> {
    report::conclude(&reports(args)?, false)
}

/// Boots each chosen kernel and runs the tests there: one report per kernel.
pub fn reports(args: &VmArgs) -> anyhow::Result<Vec<EnvReport>> {
    setup::run()?;
    let cache = cmd::workspace_root().join(".cache/vm");
    fs::create_dir_all(&cache)?;
    let binaries = build_test_binaries(&["cgscope"])?;
    let tests: Vec<&TestBinary> = binaries
        .iter()
        .filter(|b| b.is_test && is_vm_test(&b.path))
        .filter(|b| args.tests.is_empty() || args.tests.contains(&b.label))
        .collect();
    let initrd = build_initramfs(&binaries, &run_tests(&tests, ""), &cache)?;
    let scenarios: Vec<&TestBinary> = tests
        .iter()
        .copied()
        .filter(|t| SCENARIO_TESTS.contains(&t.label.as_str()))
        .filter(|t| !args.tests.contains(&t.label))
        .collect();
    let with_scenarios: Vec<&str> = KERNELS
        .iter()
        .filter(|k| k.scenarios)
        .map(|k| k.name)
        .collect();

    // Fetched one at a time (apt), then booted `lanes` at a time.
    let mut runs = Vec::new();
    for kernel in KERNELS.iter().filter(|k| args.kernel.includes(k)) {
        let vmlinuz = fetch_kernel(kernel, &cache)?;
        let initrd = with_modules(&initrd, &cache.join(kernel.name))?;
        runs.push((kernel, vmlinuz, initrd));
    }
    let timeout = Duration::from_secs(args.timeout);
    let run = |(kernel, vmlinuz, initrd): &(&Kernel, PathBuf, PathBuf)| {
        let log = cache.join(format!("{}.log", kernel.name));
        let mut env = EnvReport::new(&format!("VM {}", kernel.name));
        let skip: &[&TestBinary] = if kernel.scenarios { &[] } else { &scenarios };
        let here: Vec<&TestBinary> = tests
            .iter()
            .copied()
            .filter(|t| !skip.iter().any(|s| s.path == t.path))
            .collect();
        for s in skip {
            env.not_run.push(format!(
                "{} (a scenario binary: runs on {})",
                s.label,
                with_scenarios.join(" and ")
            ));
        }
        let skip_paths: Vec<String> = skip.iter().map(|s| s.path.display().to_string()).collect();
        let append = format!("cgscope.skip={}", skip_paths.join(","));
        match boot(vmlinuz, initrd, &log, timeout, 2048, &append) {
            Ok(()) => match fs::read_to_string(&log) {
                Ok(text) => read_log(&text, &here, &mut env),
                Err(e) => env.problems.push(format!("reading the serial log: {e}")),
            },
            Err(e) => env.problems.push(format!("{e:#}")),
        }
        if !env.problems.is_empty() {
            env.problems.push(format!("serial log: {}", log.display()));
        }
        env
    };
    Ok(in_lanes(&runs, args.lanes.max(1), run))
}

/// `f` of every item, at most `lanes` at a time, each lane taking the next item
/// when its last is done; results in the items' order. The items are taken from
/// the last: newer kernels run slower under TCG, and the longest first keeps the
/// lanes' ends close.
fn in_lanes<T: Sync, R: Send>(items: &[T], lanes: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::Mutex::new(items.len());
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..lanes.min(items.len()) {
            scope.spawn(|| loop {
                let i = {
                    let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(i) = next.checked_sub(1) else { break };
                    *next = i;
                    i
                };
                let result = f(&items[i]);
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            });
        }
    });
    results
        .into_iter()
        .filter_map(|r| r.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// An executable `cargo test --no-run` built.
pub struct TestBinary {
    pub path: PathBuf,
    /// A libtest harness (else a binary the tests run, such as `cgscope`).
    pub is_test: bool,
    /// Its name in reports, the same in every environment: the test target's name,
    /// or `<crate>[lib]` / `<crate>[bin]` for unit tests.
    pub label: String,
    /// Its package's directory: cargo runs tests there.
    pub package_dir: PathBuf,
}

/// Builds the test binaries of `packages` and the binaries they run.
pub fn build_test_binaries(packages: &[&str]) -> anyhow::Result<Vec<TestBinary>> {
    let mut args = vec!["test"];
    for p in packages {
        args.extend(["-p", p]);
    }
    build_binaries(&args)
}

/// Builds with `cargo <args> --no-run` (`test` or `bench` and the targets): every
/// executable it made.
pub fn build_binaries(args: &[&str]) -> anyhow::Result<Vec<TestBinary>> {
    let mut cargo = cmd::cargo_command();
    cargo.args(args).args(["--no-run", "--message-format=json"]);
    let out = cmd::output(&mut cargo)?;
    let mut binaries: Vec<TestBinary> = Vec::new();
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        if binaries.iter().any(|b| b.path == Path::new(exe)) {
            continue;
        }
        let target = &msg["target"];
        let name = target["name"].as_str().unwrap_or("?");
        let kind = target["kind"][0].as_str().unwrap_or("?");
        let label = match kind {
            "test" => name.to_owned(),
            _ => format!("{name}[{kind}]"),
        };
        let package_dir = msg["manifest_path"]
            .as_str()
            .and_then(|m| Path::new(m).parent())
            .map_or_else(cmd::workspace_root, Path::to_path_buf);
        binaries.push(TestBinary {
            path: PathBuf::from(exe),
            is_test: msg["profile"]["test"] == true,
            label,
            package_dir,
        });
    }
    if binaries.is_empty() {
        bail!("cargo test --no-run produced no executables");
    }
    Ok(binaries)
}

/// Shared libraries `binary` needs, from `ldd`.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = cmd::output(Command::new("ldd").arg(binary))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Copies `src` to the same absolute path under `root`.
pub fn install(root: &Path, src: &Path) -> anyhow::Result<PathBuf> {
    let dst = root.join(src.strip_prefix("/").unwrap_or(src));
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(src, &dst).with_context(|| format!("copy {}", src.display()))?;
    Ok(dst)
}

/// Copies the directory tree `src` to the same absolute path under `root`.
pub fn copy_tree(root: &Path, src: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            copy_tree(root, &path)?;
        } else {
            install(root, &path)?;
        }
    }
    Ok(())
}

/// The scenario binaries, which only the kernels with `scenarios` run.
pub const SCENARIO_TESTS: [&str; 3] = ["playbook", "names", "top"];

/// The test binaries the VM runs: all but `cgscope` itself; the deploy tests, which
/// need the validators (Python's kubernetes-validate and yamllint, systemd-analyze)
/// that the busybox userland lacks (they test files only and run on the host); and
/// those that need a real node's userland or runtimes, which run on the node
/// (`cargo xtask node`): the node tests, and the export tests (their peers:
/// Prometheus, promtool, rotel-agent, openssl).
fn is_vm_test(binary: &Path) -> bool {
    binary
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| {
            n != "cgscope"
                && !n.starts_with("deploy-")
                && !n.starts_with("node-")
                && !n.starts_with("export-")
        })
}

/// The VM's init: mounts, pure cgroup v2 with the controllers on, the modules, then
/// `run` (shell) and power off.
fn init_script(run: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
# The initramfs root is writable: no tmpfs, which would hide binaries built under /tmp.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "+cpu +io +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
ip link set lo up
for m in $(cat /lib/modules/load-order 2>/dev/null); do
  # null_blk: one device whose every request completes 5 ms after dispatch (a timer;
  # long enough that the emulated timer's ~0.1 ms slack is noise).
  case $m in null_blk) insmod /lib/modules/$m.ko nr_devices=1 irqmode=2 completion_nsec=5000000 ;; *) insmod /lib/modules/$m.ko ;; esac
done
echo "kernel $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
{run}poweroff -f
"#
    )
}

/// Shell that runs each test binary one test at a time (with `extra` arguments)
/// and prints what [`read_log`] reads: each binary's stdout again, whole, between
/// markers (the live copy may be interleaved with kernel messages), its exit code,
/// and at the end a mark that all ran.
pub fn run_tests(tests: &[&TestBinary], extra: &str) -> String {
    let tests: Vec<String> = tests.iter().map(|t| t.path.display().to_string()).collect();
    format!(
        r#"set -o pipefail
# Binaries this boot leaves out: cgscope.skip=PATH,PATH on the kernel command line.
skip=" $(tr ' ' '\n' < /proc/cmdline | sed -n 's/^cgscope.skip=//p' | tr ',' ' ') "
for t in {tests}; do
  case "$skip" in *" $t "*) echo "== $t: not run on this kernel"; continue ;; esac
  echo "== $t"
  cd /tmp && $t --test-threads=1 --show-output {extra} | tee /tmp/cgscope-test-output
  rc=$?
  echo "{OUTPUT_MARK} $t"
  cat /tmp/cgscope-test-output
  echo "{OUTPUT_END_MARK}"
  echo "{RC_MARK} $rc $t"
done
echo {DONE_MARK}
"#,
        tests = tests.join(" ")
    )
}

/// The initramfs with `binaries` (at their build paths), their libraries, the tools
/// and fixtures, and an init that runs `run` (shell).
pub fn build_initramfs(
    binaries: &[TestBinary],
    run: &str,
    cache: &Path,
) -> anyhow::Result<PathBuf> {
    let root = cache.join("initramfs");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(root.join("bin"))?;
    fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static")?;
    let mut libraries = BTreeSet::new();
    for binary in binaries {
        let dst = install(&root, &binary.path)?;
        cmd::run(Command::new("strip").arg("--strip-debug").arg(&dst))?;
        libraries.extend(shared_libraries(&binary.path)?);
    }
    for lib in &libraries {
        install(&root, lib)?;
    }
    // Real tools the tests drive, with their libraries, where busybox's applets
    // fall short (see `TOOLS`), at the paths busybox would link its applets to, so
    // that these win.
    for (tool, at) in TOOLS {
        let tool = Path::new(tool);
        if !tool.exists() {
            continue;
        }
        let dst = root.join(at.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().expect("tool path has a parent"))?;
        fs::copy(tool, &dst).with_context(|| format!("copy {}", tool.display()))?;
        cmd::run(Command::new("strip").arg("--strip-debug").arg(&dst))?;
        for lib in shared_libraries(tool)? {
            install(&root, &lib)?;
        }
    }
    for dir in ["agent/tests/fixtures", "docs", "deploy"] {
        copy_tree(&root, &cmd::workspace_root().join(dir))?;
    }
    let init = root.join("init");
    fs::write(&init, init_script(run))?;
    cmd::run(Command::new("chmod").arg("755").arg(&init))?;

    let initrd = cache.join("initrd.cpio.gz");
    pack(&root, &initrd)?;
    Ok(initrd)
}

/// Packs the tree at `root` into a gzip'd newc cpio archive at `out`.
fn pack(root: &Path, out: &Path) -> anyhow::Result<()> {
    cmd::run(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 > '{}'",
                out.display()
            ))
            .current_dir(root),
    )
}

/// Kernel modules the tests use, loaded by init if present.
/// `tcp_diag` (with `inet_diag`): `ss` reads a socket's RTT through sock_diag.
// `loop`: a module on 5.10, built in later.
const MODULES: [&str; 5] = ["null_blk", "veth", "sch_netem", "tcp_diag", "loop"];

/// Host tools copied into the initramfs: (source, path in the VM).
const TOOLS: [(&str, &str); 6] = [
    // The blockio fallback test lists the loaded programs.
    ("/usr/sbin/bpftool", "/usr/sbin/bpftool"),
    // iproute2's ss: the tcp tests' ground truth (the kernel's smoothed RTT).
    ("/usr/bin/ss", "/usr/bin/ss"),
    ("/usr/bin/fio", "/usr/bin/fio"),
    // util-linux: the capabilities test starts cgscope with the DaemonSet's set.
    ("/usr/bin/setpriv", "/usr/bin/setpriv"),
    ("/usr/bin/ip", "/sbin/ip"),
    ("/usr/sbin/tc", "/sbin/tc"),
];

/// Copies `module` (decompressed) and, first, the modules it depends on (modinfo's
/// `depends=`) into `dst_dir`, appending each to `order` once, dependencies first.
fn add_module(
    module: &str,
    kernel_dir: &Path,
    dst_dir: &Path,
    order: &mut Vec<String>,
) -> anyhow::Result<()> {
    if order.iter().any(|m| m == module) {
        return Ok(());
    }
    let found = cmd::output(
        Command::new("find")
            // `usr/lib/modules` in packages built after the /usr merge.
            .args(
                ["root/lib/modules", "root/usr/lib/modules"]
                    .map(|d| kernel_dir.join(d))
                    .into_iter()
                    .filter(|d| d.is_dir()),
            )
            .args([
                "-name",
                &format!("{module}.ko"),
                "-o",
                "-name",
                &format!("{module}.ko.xz"),
            ]),
    )?;
    let Some(src) = found.lines().next().map(PathBuf::from) else {
        eprintln!("vm: module {module} not in this kernel package (built in?)");
        return Ok(());
    };
    let bytes = if src.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(&src)
            .output()
            .context("xz -dc")?;
        if !out.status.success() {
            bail!("xz -dc {} failed", src.display());
        }
        out.stdout
    } else {
        fs::read(&src)?
    };
    let depends = bytes
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"depends="))
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();
    for dep in depends.split(',').filter(|d| !d.is_empty()) {
        add_module(dep, kernel_dir, dst_dir, order)?;
    }
    fs::write(dst_dir.join(format!("{module}.ko")), bytes)?;
    order.push(module.to_owned());
    Ok(())
}

/// The common initramfs followed by a second archive with this kernel's modules
/// (the kernel unpacks concatenated archives in order).
pub fn with_modules(common: &Path, kernel_dir: &Path) -> anyhow::Result<PathBuf> {
    let staging = kernel_dir.join("modules-root");
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    let dst_dir = staging.join("lib/modules");
    fs::create_dir_all(&dst_dir)?;
    let mut order: Vec<String> = Vec::new();
    for module in MODULES {
        add_module(module, kernel_dir, &dst_dir, &mut order)?;
    }
    fs::write(dst_dir.join("load-order"), order.join("\n") + "\n")?;
    let modules = kernel_dir.join("modules.cpio.gz");
    pack(&staging, &modules)?;
    let combined = kernel_dir.join("initrd.cpio.gz");
    let mut bytes = fs::read(common)?;
    bytes.extend(fs::read(&modules)?);
    fs::write(&combined, bytes)?;
    Ok(combined)
}

/// Boots `vmlinuz` with `initrd` and `memory_mib` of RAM until it powers off.
pub fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    log: &Path,
    timeout: Duration,
    memory_mib: u32,
    append: &str,
) -> anyhow::Result<()> {
    eprintln!(
        "vm: booting {} (serial log: {})",
        vmlinuz.display(),
        log.display()
    );
    // One vCPU: with two, the 6.12 guest intermittently oopses on a retired int3 in
    // __schedule / ttwu_do_activate while the kernel live-patches a tracepoint's
    // static key (attaching a probe) and the other vCPU handles an IPI (seen in about
    // 1 of 5 runs under TCG; never on 6.1, never on the host). One vCPU has no
    // cross-CPU text patching.
    let mut args = Command::new("qemu-system-x86_64");
    args.args(["-m", &memory_mib.to_string(), "-smp", "1", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 quiet {append}"));
    qemu(args, "tcg", log, timeout)
}

/// Runs `qemu` (its machine arguments given) under `accel` (TCG, with its options)
/// without a display or reboots, the guest's serial console to `log`, until it exits
/// or `timeout`.
pub fn qemu(mut qemu: Command, accel: &str, log: &Path, timeout: Duration) -> anyhow::Result<()> {
    let mut qemu = qemu
        .args(["-accel", accel, "-nographic", "-no-reboot"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(log)?)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let started = Instant::now();
    loop {
        if let Some(status) = qemu.try_wait()? {
            eprintln!(
                "vm: exited {status} after {:.0?} (serial log: {})",
                started.elapsed(),
                log.display()
            );
            return Ok(());
        }
        if started.elapsed() > timeout {
            let _ = qemu.kill();
            let _ = qemu.wait();
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Adds to `env` the outcome of every test in the serial `log` of a VM that ran
/// `tests`; a guest crash, a binary that did not run or did not finish is a problem.
pub fn read_log(log: &str, tests: &[&TestBinary], env: &mut EnvReport) {
    // The serial console ends lines with CRLF.
    let log = &log.replace("\r\n", "\n");
    if let Some(oops) = log
        .lines()
        .find(|l| l.contains("Oops:") || l.contains("Kernel panic"))
    {
        env.problems
            .push(format!("the guest kernel crashed: {}", oops.trim()));
    }
    if !log.contains(DONE_MARK) {
        env.problems.push("the VM did not finish its tests".into());
    }
    for test in tests {
        let path = test.path.display().to_string();
        let begin = format!("{OUTPUT_MARK} {path}\n");
        let rc_line = log
            .lines()
            .filter_map(|l| l.strip_prefix(RC_MARK))
            .find(|l| l.split_whitespace().nth(1) == Some(path.as_str()));
        let (Some(start), Some(rc)) = (log.find(&begin), rc_line) else {
            env.problems.push(format!("{}: did not run", test.label));
            continue;
        };
        let output = &log[start + begin.len()..];
        let output = output
            .find(&format!("\n{OUTPUT_END_MARK}"))
            .map_or(output, |end| &output[..end]);
        let code = rc.split_whitespace().next().and_then(|c| c.parse().ok());
        env.add_binary(&test.label, output, code);
    }
}
