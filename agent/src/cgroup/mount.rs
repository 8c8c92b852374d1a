//! Where cgroup v2 is mounted, and in which mode the host runs cgroups.

use std::path::{Path, PathBuf};

use crate::snapshot::CgroupMode;

/// The cgroup layout as read from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMounts {
    pub mode: CgroupMode,
    /// The cgroup v2 mount point, if any.
    pub v2_root: Option<PathBuf>,
    /// Which cgroup of the hierarchy that mount shows as its root (mountinfo's
    /// `root` field): `/` unless a cgroup namespace or a bind mount hides the rest.
    pub v2_mount_source: Option<String>,
}

/// v1 controllers a `cgroup` mount can carry (a mount with none of them, like
/// `name=systemd`, is a named hierarchy and does not make the host hybrid).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Reads `/proc/self/mountinfo`.
pub fn detect() -> std::io::Result<CgroupMounts> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Parses mountinfo (proc(5)): `id parent major:minor root mountpoint options
/// [optional...] - fstype source superoptions`.
pub fn parse_mountinfo(text: &str) -> CgroupMounts {
    let mut v2: Vec<(PathBuf, String)> = Vec::new();
    let mut v1_controllers = false;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = left.split(' ');
        let (Some(source), Some(mount_point)) = (fields.nth(3), fields.next()) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let super_opts = right.nth(1).unwrap_or_default();
        match fstype {
            "cgroup2" => v2.push((PathBuf::from(unescape(mount_point)), unescape(source))),
            "cgroup" => {
                v1_controllers |= super_opts.split(',').any(|o| V1_CONTROLLERS.contains(&o))
            }
            _ => {}
        }
    }
    // Prefer the canonical places; a container may see further bind mounts.
    let chosen = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .find_map(|want| v2.iter().find(|(p, _)| p == Path::new(want)))
        .or_else(|| v2.first())
        .cloned();
    let (v2_root, v2_mount_source) = chosen.map_or((None, None), |(p, s)| (Some(p), Some(s)));
    let mode = match (&v2_root, v1_controllers) {
        (None, _) => CgroupMode::Legacy,
        (Some(_), true) => CgroupMode::Hybrid,
        (Some(_), false) => CgroupMode::Unified,
    };
    CgroupMounts {
        mode,
        v2_root,
        v2_mount_source,
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_host_fixture() {
        let text = include_str!("../../tests/fixtures/mountinfo-hybrid");
        let m = parse_mountinfo(text);
        assert_eq!(m.mode, CgroupMode::Hybrid);
        assert_eq!(m.v2_root, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(m.v2_mount_source.as_deref(), Some("/"));
    }

    #[test]
    fn a_cgroup_namespace_shows_a_subtree() {
        // cgroupfs mounted inside a container with a private cgroup namespace
        let text =
            "1410 1400 0:30 /../../kubepods.slice/x.scope /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(
            m.v2_mount_source.as_deref(),
            Some("/../../kubepods.slice/x.scope")
        );
    }

    #[test]
    fn unified_and_legacy() {
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_mountinfo(unified).mode, CgroupMode::Unified);
        let named_only =
            format!("{unified}40 35 0:33 / /run/x rw - cgroup cgroup rw,name=systemd\n");
        assert_eq!(parse_mountinfo(&named_only).mode, CgroupMode::Unified);
        let legacy = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let m = parse_mountinfo(legacy);
        assert_eq!((m.mode, m.v2_root), (CgroupMode::Legacy, None));
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }
}
