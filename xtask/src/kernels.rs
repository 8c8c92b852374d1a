//! The kernels of the VM matrix and fetching them: each Debian cloud kernel package
//! is downloaded once (through private apt lists for suites the host does not
//! use) and unpacked whole into `.cache/vm/<name>`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::cmd;

/// A test kernel: the Debian package pinned for repeatable runs (or none: always the
/// newest), the pattern for a newer build of the same series if the archive has
/// dropped the pinned one, and the archive suites it comes from (none: the host's
/// own apt sources). `cargo xtask test` (and so CI) runs the whole suite on each.
pub struct Kernel {
    pub name: &'static str,
    /// Whether the scenario binaries (`vm::SCENARIO_TESTS`) run here too. They drive
    /// whole situations through the agent (playbooks, `top`, hostile names) and take
    /// half a VM's time under TCG; what they exercise of the kernel, the probe tests
    /// check on every kernel. Two kernels run them, so that CI's four VMs end within
    /// its time (47 minutes for the VMs with all four, on this machine in December
    /// 2026).
    pub scenarios: bool,
    package: Option<&'static str>,
    pattern: &'static str,
    suites: &'static [&'static str],
}

pub const KERNELS: [Kernel; 4] = [
    // Debian 11's kernel: the oldest a fleet still runs in numbers (LTS derivatives).
    Kernel {
        name: "5.10",
        scenarios: true,
        package: Some("linux-image-5.10.0-46-cloud-amd64"),
        pattern: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64$",
        suites: &["bullseye", "bullseye-security"],
    },
    Kernel {
        name: "6.1",
        scenarios: true,
        package: Some("linux-image-6.1.0-50-cloud-amd64"),
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$",
        suites: &[],
    },
    Kernel {
        name: "6.12",
        scenarios: false,
        package: Some("linux-image-6.12.100+deb12-cloud-amd64"),
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$",
        suites: &[],
    },
    // The newest kernel Debian ships (unstable): where tracepoints and struct
    // fields change first. Not pinned: it follows the archive.
    Kernel {
        name: "newest",
        scenarios: false,
        package: None,
        pattern: r"^linux-image-[0-9]+\.[0-9]+\.[0-9]+\+deb[0-9]+-cloud-amd64$",
        suites: &["sid"],
    },
];

/// Downloads and unpacks the kernel package once; returns its vmlinuz.
pub fn fetch_kernel(kernel: &Kernel, cache: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache.join(kernel.name);
    if let Some(vmlinuz) = find_vmlinuz(&dir) {
        return Ok(vmlinuz);
    }
    fs::create_dir_all(&dir)?;
    let apt = Apt::new(kernel, cache)?;
    let pinned = kernel.package.filter(|p| apt.download(p, &dir));
    if pinned.is_none() {
        let newest = apt.newest(kernel.pattern)?;
        match kernel.package {
            Some(p) => eprintln!("vm: {p} is no longer in the archive; using {newest}"),
            None => eprintln!("vm: kernel {}: {newest}", kernel.name),
        }
        if !apt.download(&newest, &dir) {
            bail!("apt-get download {newest} failed");
        }
    }
    // Newer kernels come in parts: the image package depends on the binary (vmlinuz)
    // and modules packages of the same build.
    let image = image_deb(&dir)?;
    let build = deb_field(&image, "Package")?
        .trim_start_matches("linux-image-")
        .to_owned();
    for part in deb_field(&image, "Depends")?.split(',') {
        let name = part.split_whitespace().next().unwrap_or_default();
        if name.starts_with("linux-") && name.ends_with(&build) && !apt.download(name, &dir) {
            bail!("apt-get download {name} failed");
        }
    }
    for deb in fs::read_dir(&dir)?.flatten().map(|e| e.path()) {
        if deb.extension().is_some_and(|e| e == "deb") {
            cmd::run(
                Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(&deb)
                    .arg(dir.join("root")),
            )?;
        }
    }
    find_vmlinuz(&dir).context("no vmlinuz in the kernel package")
}

/// The kernel image package downloaded into `dir`.
fn image_deb(dir: &Path) -> anyhow::Result<PathBuf> {
    fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("linux-image-"))
        })
        .context("no linux-image .deb downloaded")
}

/// A control field of a package file (empty if absent).
fn deb_field(deb: &Path, field: &str) -> anyhow::Result<String> {
    Ok(
        cmd::output(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))?
            .trim()
            .to_owned(),
    )
}

/// `boot/vmlinuz-*`, or `usr/lib/modules/*/vmlinuz` in packages built after the
/// /usr merge.
fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    let entries = |d: PathBuf| {
        fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
    };
    let root = dir.join("root");
    entries(root.join("boot"))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .or_else(|| {
            entries(root.join("usr/lib/modules"))
                .map(|d| d.join("vmlinuz"))
                .find(|p| p.is_file())
        })
}

/// apt, for one kernel's suites: the host's own sources, or a private source list and
/// package lists under the cache (the machine's apt configuration is left alone).
struct Apt {
    options: Vec<String>,
}

impl Apt {
    fn new(kernel: &Kernel, cache: &Path) -> anyhow::Result<Self> {
        if kernel.suites.is_empty() {
            return Ok(Self {
                options: Vec::new(),
            });
        }
        let dir = cache.join(format!("apt-{}", kernel.name));
        let lists = dir.join("lists");
        fs::create_dir_all(lists.join("partial"))?;
        let sources: String = kernel
            .suites
            .iter()
            .map(|suite| {
                let archive = if suite.ends_with("-security") {
                    "debian-security"
                } else {
                    "debian"
                };
                format!("deb http://deb.debian.org/{archive} {suite} main\n")
            })
            .collect();
        let list = dir.join("sources.list");
        fs::write(&list, sources)?;
        let options = [
            format!("Dir::Etc::SourceList={}", list.display()),
            "Dir::Etc::SourceParts=/nonexistent".to_owned(),
            format!("Dir::State::Lists={}", lists.display()),
            "Dir::Cache::pkgcache=".to_owned(),
            "Dir::Cache::srcpkgcache=".to_owned(),
        ];
        let apt = Self {
            options: options
                .iter()
                .flat_map(|o| ["-o".to_owned(), o.clone()])
                .collect(),
        };
        cmd::run(Command::new("apt-get").args(&apt.options).arg("update"))?;
        Ok(apt)
    }

    fn download(&self, package: &str, dir: &Path) -> bool {
        cmd::succeeds(
            Command::new("apt-get")
                .args(&self.options)
                .args(["download", package])
                .current_dir(dir),
        )
    }

    /// The newest package whose name matches `pattern`, by the numbers in its name.
    fn newest(&self, pattern: &str) -> anyhow::Result<String> {
        let out = cmd::output(Command::new("apt-cache").args(&self.options).args([
            "search",
            "--names-only",
            pattern,
        ]))?;
        let mut names: Vec<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
        names.sort_by_key(|n| {
            n.split(|c: char| !c.is_ascii_digit())
                .filter_map(|d| d.parse::<u32>().ok())
                .collect::<Vec<_>>()
        });
        names
            .last()
            .map(|s| (*s).to_owned())
            .context("no matching kernel package in the archive")
    }
}
