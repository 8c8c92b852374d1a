//! The floor a scan cannot go below: the scan's own filesystem calls, recorded by
//! `cgscope::cgroup::trace` on this host, replayed with bare libc calls (no
//! allocation, no parsing, one buffer). Shared by the scan and scale benches.

use std::{ffi::CString, time::Duration};

use cgscope::cgroup::trace::Call;

/// A recorded scan as C strings, ready to replay.
pub struct Floor {
    calls: Vec<Replay>,
    buf: Vec<u8>,
}

enum Replay {
    List(CString),
    OpenDir(CString),
    ReadAt(CString),
    Read(CString),
    Stat(CString),
}

impl Floor {
    pub fn new(calls: &[Call]) -> Self {
        let c = |bytes: Vec<u8>| CString::new(bytes).expect("a path without NUL");
        let path = |p: &std::path::PathBuf| c(p.clone().into_os_string().into_encoded_bytes());
        let calls = calls
            .iter()
            .map(|call| match call {
                Call::List(p) => Replay::List(path(p)),
                Call::OpenDir(p) => Replay::OpenDir(path(p)),
                Call::ReadAt(name) => Replay::ReadAt(c(name.clone().into_bytes())),
                Call::Read(p) => Replay::Read(path(p)),
                Call::Stat(p) => Replay::Stat(path(p)),
            })
            .collect();
        Self {
            calls,
            buf: vec![0; 4096],
        }
    }

    /// Files opened and read (or tried) by one replay.
    pub fn files(&self) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c, Replay::ReadAt(_) | Replay::Read(_)))
            .count()
    }

    /// Makes every call once, as the scan made it.
    pub fn replay(&mut self) {
        let mut dir = -1;
        let flags = libc::O_RDONLY | libc::O_CLOEXEC;
        // SAFETY: plain libc calls on C strings and a buffer we own; every descriptor
        // and listing opened here is closed here.
        unsafe {
            let read = |fd: libc::c_int, buf: &mut [u8]| {
                if fd >= 0 {
                    while libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
                    libc::close(fd);
                }
            };
            for call in &self.calls {
                match call {
                    Replay::List(p) => {
                        let listing = libc::opendir(p.as_ptr());
                        if !listing.is_null() {
                            while !libc::readdir64(listing).is_null() {}
                            libc::closedir(listing);
                        }
                    }
                    Replay::OpenDir(p) => {
                        if dir >= 0 {
                            libc::close(dir);
                        }
                        dir = libc::open(p.as_ptr(), flags | libc::O_DIRECTORY);
                    }
                    Replay::ReadAt(name) => {
                        read(libc::openat(dir, name.as_ptr(), flags), &mut self.buf)
                    }
                    Replay::Read(p) => read(libc::open(p.as_ptr(), flags), &mut self.buf),
                    Replay::Stat(p) => {
                        let mut st = std::mem::zeroed::<libc::stat64>();
                        libc::stat64(p.as_ptr(), &mut st);
                    }
                }
            }
            if dir >= 0 {
                libc::close(dir);
            }
        }
    }
}

/// This thread's (user, system) CPU time.
pub fn thread_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}
