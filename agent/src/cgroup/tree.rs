//! Walking the cgroup v2 tree.

use std::{
    ffi::{CStr, OsStr},
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
    ptr::NonNull,
};

use super::is_gone;

use nix::{fcntl::OFlag, sys::stat::Mode};

/// A directory listing through libc's `readdir`, which hands out each entry in
/// place (nix's iterator copies every 280-byte entry; a cgroup has ~20 files).
struct Listing(NonNull<libc::DIR>);

impl Listing {
    fn open(dir: &Path) -> std::io::Result<Self> {
        super::trace::note(|| super::trace::Call::List(dir.to_path_buf()));
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(dir, flags, Mode::empty())?;
        // SAFETY: `fd` is an open directory owned by nothing else; on success the
        // DIR owns it (closedir closes it), on failure it is closed here.
        let dirp = unsafe { libc::fdopendir(fd) };
        match NonNull::new(dirp) {
            Some(dirp) => Ok(Self(dirp)),
            None => {
                let e = std::io::Error::last_os_error();
                // SAFETY: as above: still ours when fdopendir failed.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                Err(e)
            }
        }
    }

    /// The next entry's (name, type, inode); `Ok(None)` at the end, an error if the
    /// listing broke off (readdir sets errno only then).
    fn next(&mut self) -> std::io::Result<Option<(&CStr, u8, u64)>> {
        // SAFETY: errno is thread-local; cleared so that a NULL return can tell the
        // end (errno untouched) from a failure.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: the DIR is open; the entry readdir returns stays valid until the
        // next call on the same DIR, which the `&mut self` borrow rules out.
        let entry = unsafe { libc::readdir64(self.0.as_ptr()).as_ref() };
        match entry {
            Some(entry) => {
                // SAFETY: d_name is NUL-terminated by the kernel.
                let name = unsafe { CStr::from_ptr(entry.d_name.as_ptr()) };
                Ok(Some((name, entry.d_type, entry.d_ino)))
            }
            None => match std::io::Error::last_os_error() {
                e if e.raw_os_error() == Some(0) => Ok(None),
                e => Err(e),
            },
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
    /// Absolute directory, as the kernel names it (any bytes).
    dir: PathBuf,
    /// Where in `dir` the path below the root starts.
    relative: usize,
    /// Path relative to the v2 root, `/` for the root; see [`display_path`].
    path: Box<str>,
    /// The cgroup id: inode number of the directory, the value
    /// `bpf_get_current_cgroup_id()` returns for its tasks.
    pub id: u64,
    /// Index of the parent cgroup in the walk's list; `None` for the root.
    pub parent: Option<usize>,
}

impl CgroupDir {
    /// Path relative to the v2 root, `/` for the root itself, in the form of
    /// [`display_path`].
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Absolute directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bytes of the path below the root in hex where they are not UTF-8 (`None`
    /// otherwise): the lossless form of a path that [`display_path`] escaped.
    pub fn raw_path_hex(&self) -> Option<String> {
        let bytes = self.dir.as_os_str().as_bytes().get(self.relative..)?;
        std::str::from_utf8(bytes).is_err().then(|| {
            bytes
                .iter()
                .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
                    s.push_str(&format!("{b:02x}"));
                    s
                })
        })
    }
}

/// A cgroup path as cgscope names it: the path itself where it is UTF-8 (every
/// runtime's is), otherwise each byte that is not part of a UTF-8 character written
/// as `\xNN` (so `/a\xff` for the bytes `/a` 0xFF). The exact bytes are in
/// [`CgroupDir::raw_path_hex`].
pub fn display_path(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// What a walk could not list: directories whose listing failed for another reason
/// than their removal (their children are missing from the walk, not gone).
#[derive(Debug, Default)]
pub struct WalkErrors {
    /// How many listings failed, and the first failure.
    pub count: usize,
    pub first: Option<(PathBuf, std::io::Error)>,
}

impl WalkErrors {
    fn push(&mut self, dir: &Path, e: std::io::Error) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((dir.to_owned(), e));
        }
    }
}

/// Lists `root` and every cgroup below it, parents before children, into `out`
/// (cleared first). Cgroups removed during the walk are skipped; a directory that
/// cannot be listed for another reason (out of descriptors, memory) is counted in
/// the returned [`WalkErrors`], and its descendants are missing from `out`. Names
/// that are not UTF-8 are kept ([`display_path`]). Only an unreadable root is an
/// error.
pub fn walk(root: &Path, out: &mut Vec<CgroupDir>) -> std::io::Result<WalkErrors> {
    out.clear();
    let id = std::fs::metadata(root)?.ino();
    let root_bytes = root.as_os_str().as_bytes();
    let root_len = root_bytes.len() - root_bytes.iter().rev().take_while(|&&b| b == b'/').count();
    out.push(CgroupDir {
        dir: PathBuf::from(OsStr::from_bytes(&root_bytes[..root_len])),
        relative: root_len,
        path: "/".into(),
        id,
        parent: None,
    });
    let mut errors = WalkErrors::default();
    let mut next = 0;
    while next < out.len() {
        let parent = next;
        next += 1;
        let mut listing = match Listing::open(out[parent].dir()) {
            Ok(listing) => listing,
            Err(e) if is_gone(&e) => continue, // removed since it was listed
            Err(e) => {
                errors.push(out[parent].dir(), e);
                continue;
            }
        };
        loop {
            let (name, kind, ino) = match listing.next() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) if is_gone(&e) => break,
                Err(e) => {
                    errors.push(out[parent].dir(), e);
                    break;
                }
            };
            // kernfs reports each node's type and inode in readdir: no stat needed.
            let name = name.to_bytes();
            if kind != libc::DT_DIR || name == b"." || name == b".." {
                continue;
            }
            let above = &out[parent];
            let dir = above.dir.join(OsStr::from_bytes(name));
            let path = match (std::str::from_utf8(name), &*above.path) {
                (Ok(name), "/") => format!("/{name}"),
                (Ok(name), above) => format!("{above}/{name}"),
                (Err(_), "/") => format!("/{}", display_path(name)),
                (Err(_), above) => format!("{above}/{}", display_path(name)),
            };
            out.push(CgroupDir {
                dir,
                relative: root_len,
                path: path.into_boxed_str(),
                id: ino,
                parent: Some(parent),
            });
        }
    }
    Ok(errors)
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
        let errors = walk(&dir, &mut out).unwrap();
        assert_eq!(errors.count, 0);
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

    #[test]
    fn names_that_are_not_utf8_are_kept_with_their_descendants() {
        let dir = std::env::temp_dir().join(format!("cgscope-raw-{}", std::process::id()));
        let odd = dir.join(OsStr::from_bytes(b"pod\xff\x1b[2J"));
        std::fs::create_dir_all(odd.join("child")).unwrap();
        let mut out = Vec::new();
        walk(&dir, &mut out).unwrap();
        let paths: Vec<_> = out.iter().map(CgroupDir::path).collect();
        assert_eq!(paths, ["/", "/pod\\xff\x1b[2J", "/pod\\xff\x1b[2J/child"]);
        assert_eq!(out[1].dir(), odd, "opened by its real name");
        assert_eq!(out[0].raw_path_hex(), None);
        assert_eq!(out[1].raw_path_hex().as_deref(), Some("2f706f64ff1b5b324a"));
        assert_eq!(display_path(b"ok/\\x2d"), "ok/\\x2d", "UTF-8 is left alone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
