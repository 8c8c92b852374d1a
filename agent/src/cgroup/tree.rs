//! Walking the cgroup v2 tree.

use std::{
    ffi::CStr,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::Path,
    ptr::NonNull,
};

use nix::{fcntl::OFlag, sys::stat::Mode};

/// A directory listing through libc's `readdir`, which hands out each entry in
/// place (nix's iterator copies every 280-byte entry; a cgroup has ~20 files).
struct Listing(NonNull<libc::DIR>);

impl Listing {
    /// `None` if the directory is gone.
    fn open(dir: &Path) -> Option<Self> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(dir, flags, Mode::empty()).ok()?;
        // SAFETY: `fd` is an open directory owned by nothing else; on success the
        // DIR owns it (closedir closes it), on failure it is closed here.
        let dirp = unsafe { libc::fdopendir(fd) };
        match NonNull::new(dirp) {
            Some(dirp) => Some(Self(dirp)),
            None => {
                // SAFETY: as above: still ours when fdopendir failed.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                None
            }
        }
    }

    /// The next entry's (name, type, inode); `None` at the end (or on an error: the
    /// directory was removed while being listed).
    fn next(&mut self) -> Option<(&CStr, u8, u64)> {
        // SAFETY: the DIR is open; the entry readdir returns stays valid until the
        // next call on the same DIR, which the `&mut self` borrow rules out.
        unsafe {
            let entry = libc::readdir64(self.0.as_ptr()).as_ref()?;
            let name = CStr::from_ptr(entry.d_name.as_ptr());
            Some((name, entry.d_type, entry.d_ino))
        }
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        // SAFETY: opened by `open`, closed once.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

/// One cgroup found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// Absolute directory; its tail from `relative` on is the path below the root.
    dir: String,
    relative: usize,
    /// The cgroup id: inode number of the directory, the value
    /// `bpf_get_current_cgroup_id()` returns for its tasks.
    pub id: u64,
    /// Index of the parent cgroup in the walk's list; `None` for the root.
    pub parent: Option<usize>,
}

impl CgroupDir {
    /// Path relative to the v2 root, `/` for the root itself.
    pub fn path(&self) -> &str {
        match &self.dir[self.relative..] {
            "" => "/",
            path => path,
        }
    }

    /// Absolute directory.
    pub fn dir(&self) -> &Path {
        Path::new(&self.dir)
    }
}

/// Lists `root` and every cgroup below it, parents before children, into `out`
/// (cleared first). One allocation per cgroup: its directory name, from which its
/// relative path is a slice. Cgroups removed during the walk are skipped, as are
/// names that are not UTF-8 (no runtime makes them); only an unreadable or
/// non-UTF-8 root is an error.
pub fn walk(root: &Path, out: &mut Vec<CgroupDir>) -> std::io::Result<()> {
    out.clear();
    let id = std::fs::metadata(root)?.ino();
    let dir = root.to_str().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "root is not UTF-8")
    })?;
    let dir = dir.trim_end_matches('/').to_owned();
    out.push(CgroupDir {
        relative: dir.len(),
        dir,
        id,
        parent: None,
    });
    let mut next = 0;
    while next < out.len() {
        let parent = next;
        next += 1;
        let Some(mut listing) = Listing::open(out[parent].dir()) else {
            continue; // removed since it was listed
        };
        while let Some((name, kind, ino)) = listing.next() {
            // kernfs reports each node's type and inode in readdir: no stat needed.
            if kind != libc::DT_DIR {
                continue;
            }
            let Ok(name) = name.to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let above = &out[parent];
            let mut dir = String::with_capacity(above.dir.len() + 1 + name.len());
            dir.push_str(&above.dir);
            dir.push('/');
            dir.push_str(name);
            out.push(CgroupDir {
                dir,
                relative: out[0].relative,
                id: ino,
                parent: Some(parent),
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
        let paths: Vec<_> = out.iter().map(CgroupDir::path).collect();
        assert_eq!(paths, ["/", "/a", "/a/b"]);
        assert_eq!(out[2].dir(), dir.join("a/b"));
        assert_eq!(
            out.iter().map(|c| c.parent).collect::<Vec<_>>(),
            [None, Some(0), Some(1)]
        );
        let ino = std::fs::metadata(dir.join("a/b")).unwrap().ino();
        assert_eq!(out[2].id, ino);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(walk(&dir, &mut out).is_err());
    }
}
