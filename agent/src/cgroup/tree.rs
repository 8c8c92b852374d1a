//! Walking the cgroup v2 tree.

use std::{
    os::unix::fs::{DirEntryExt, MetadataExt},
    path::{Path, PathBuf},
};

/// One cgroup found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// Path relative to the v2 root, `/` for the root itself.
    pub path: String,
    /// The cgroup id: inode number of the directory, the value
    /// `bpf_get_current_cgroup_id()` returns for its tasks.
    pub id: u64,
    /// Absolute directory.
    pub dir: PathBuf,
}

/// Lists `root` and every cgroup below it, depth first, into `out` (cleared first).
/// Cgroups removed during the walk are skipped; only an unreadable root is an error.
pub fn walk(root: &Path, out: &mut Vec<CgroupDir>) -> std::io::Result<()> {
    out.clear();
    let id = std::fs::metadata(root)?.ino();
    out.push(CgroupDir {
        path: "/".into(),
        id,
        dir: root.to_path_buf(),
    });
    let mut next = 0;
    while next < out.len() {
        let parent = next;
        next += 1;
        let Ok(entries) = std::fs::read_dir(&out[parent].dir) else {
            continue; // removed since it was listed
        };
        for entry in entries.flatten() {
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let parent_path = &out[parent].path;
            let mut path = String::with_capacity(parent_path.len() + 1 + name.len());
            if parent_path != "/" {
                path.push_str(parent_path);
            }
            path.push('/');
            path.push_str(&name);
            // kernfs reports the node's inode in readdir: no stat needed.
            out.push(CgroupDir {
                path,
                id: entry.ino(),
                dir: entry.path(),
            });
        }
    }
    Ok(())
}

/// Whether `path` is `prefix` or lies below it (component-wise: `/a` covers `/a/b`,
/// not `/ab`).
pub fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_components() {
        assert!(under("/a/b", "/a"));
        assert!(under("/a", "/a/"));
        assert!(under("/x", "/"));
        assert!(!under("/ab", "/a"));
    }

    #[test]
    fn walks_a_directory_tree() {
        let dir = std::env::temp_dir().join(format!("cgscope-walk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/cpu.stat"), "usage_usec 1\n").unwrap();
        let mut out = Vec::new();
        walk(&dir, &mut out).unwrap();
        let paths: Vec<_> = out.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/", "/a", "/a/b"]);
        let ino = std::fs::metadata(dir.join("a/b")).unwrap().ino();
        assert_eq!(out[2].id, ino);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(walk(&dir, &mut out).is_err());
    }
}
