//! The cgroup v2 filesystem: where it is mounted, the tree of cgroups, and one parser
//! per file family. A file that vanished means "this cgroup is gone", never an error
//! for the whole scan.

pub mod cpu;
pub mod format;
pub mod identity;
pub mod io;
pub mod memory;
pub mod mount;
pub mod pids;
pub mod pressure;
pub mod stats;
pub mod trace;
pub mod tree;

use std::{os::fd::FromRawFd, path::Path};

/// Errors reading one cgroup file.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed {path}: {reason}")]
    Malformed { path: String, reason: String },
}

impl CgroupError {
    /// The reason as `cgscope.scan.errors` counts it: the errno's name, or
    /// `malformed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { source, .. } => io_reason(source),
            Self::Malformed { .. } => "malformed",
        }
    }
}

/// An I/O error's errno by name (`EMFILE`), as the scan counts it; `other` for
/// errors that carry none.
pub fn io_reason(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) => "EMFILE",
        Some(libc::ENFILE) => "ENFILE",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::EINTR) => "EINTR",
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::EIO) => "EIO",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ENODEV) => "ENODEV",
        Some(_) => "other",
        None if e.kind() == std::io::ErrorKind::InvalidData => "malformed",
        None => "other",
    }
}

/// Reads `dir/name` into `buf` (cleared first, capacity reused).
/// `Ok(false)`: the file does not exist, or the cgroup was removed while reading.
pub fn read_file(dir: &Path, name: &str, buf: &mut String) -> Result<bool, CgroupError> {
    let path = dir.join(name);
    trace::note(|| trace::Call::Read(path.clone()));
    let result = std::fs::File::open(&path).and_then(|f| read_all(f, buf));
    gone_or(result, || path.display().to_string())
}

/// Reads `file` to its end into `buf` (cleared first). Through a plain `Read`
/// wrapper: std's `File::read_to_string` first asks for the size and position
/// (statx, lseek), two syscalls wasted on cgroupfs and procfs, which report a size
/// of 0; the generic path reads straight into the buffer's spare capacity.
pub fn read_all(file: std::fs::File, buf: &mut String) -> std::io::Result<()> {
    use std::io::Read;
    struct Plain(std::fs::File);
    impl Read for Plain {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(b)
        }
    }
    buf.clear();
    Plain(file).read_to_string(buf).map(drop)
}

/// An open cgroup directory: its files are opened relative to it (`openat`), so
/// neither a path is built nor the full path walked for each file.
pub struct CgroupDirFd {
    fd: std::os::fd::OwnedFd,
}

impl CgroupDirFd {
    /// Opens the cgroup's directory; [`is_gone`] tells a removed cgroup from one
    /// that cannot be opened now (out of descriptors, say).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        use nix::{fcntl::OFlag, sys::stat::Mode};
        trace::note(|| trace::Call::OpenDir(dir.to_path_buf()));
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let raw = nix::fcntl::open(dir, flags, Mode::empty())?;
        // SAFETY: `raw` was just opened and is owned by nothing else.
        Ok(Self {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Reads the file `name` of this cgroup into `buf`, as [`read_file`] does.
    pub fn read(&self, dir: &Path, name: &str, buf: &mut String) -> Result<bool, CgroupError> {
        use std::os::fd::{AsRawFd, FromRawFd};

        use nix::{fcntl::OFlag, sys::stat::Mode};
        trace::note(|| trace::Call::ReadAt(name.to_owned()));
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let result = nix::fcntl::openat(Some(self.fd.as_raw_fd()), name, flags, Mode::empty())
            .map_err(std::io::Error::from)
            // SAFETY: `raw` was just opened and is owned by the File from here on.
            .map(|raw| unsafe { std::fs::File::from_raw_fd(raw) })
            .and_then(|f| read_all(f, buf));
        gone_or(result, || dir.join(name).display().to_string())
    }
}

fn gone_or<T>(
    result: std::io::Result<T>,
    path: impl FnOnce() -> String,
) -> Result<bool, CgroupError> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_gone(&e) => Ok(false),
        Err(source) => Err(CgroupError::Io {
            path: path(),
            source,
        }),
    }
}

/// ENOENT when the file or cgroup does not exist; ENODEV when the cgroup was removed
/// after the file was opened.
pub fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}
