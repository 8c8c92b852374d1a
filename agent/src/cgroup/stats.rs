//! Everything cgscope reads from one cgroup directory, as the kernel keeps it
//! (cumulative counters, current gauges). A file that does not exist (controller not
//! enabled, older kernel) leaves its field `None`; a malformed file does the same and
//! is reported once per scan by the caller.

use std::path::Path;

use super::{
    cpu::{CpuMax, CpuStat},
    format::{fields, flat, limit, number, FormatError},
    io::{parse_io_max, parse_io_stat, Device, IoMax, IoStat},
    memory::{flat_keyed, MemoryEvents, MemoryStat},
    pids::PidsEvents,
    pressure::Pressure,
    CgroupDirFd, CgroupError,
};

/// `cgroup.stat`: live and dying descendant cgroups (gauges).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CgroupStat {
    pub nr_descendants: Option<u64>,
    pub nr_dying_descendants: Option<u64>,
}

flat_keyed!(CgroupStat {
    nr_descendants,
    nr_dying_descendants
});

#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemoryStats {
    pub current: u64,
    pub stat: Option<MemoryStat>,
    pub events: Option<MemoryEvents>,
    /// Limits: `None` is `max` (no limit) or absent.
    pub max: Option<u64>,
    pub high: Option<u64>,
    pub low: Option<u64>,
    pub min: Option<u64>,
    pub peak: Option<u64>,
    pub swap_current: Option<u64>,
    pub swap_max: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PidsStats {
    pub current: u64,
    pub max: Option<u64>,
    pub events: Option<PidsEvents>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct CgroupStats {
    pub cpu: CpuStat,
    pub cpu_max: Option<CpuMax>,
    pub cpu_max_burst_usec: Option<u64>,
    pub cpu_weight: Option<u64>,
    pub memory: Option<MemoryStats>,
    /// `None` when the io controller is not enabled.
    pub io: Option<Vec<(Device, IoStat)>>,
    pub io_max: Vec<(Device, IoMax)>,
    pub pids: Option<PidsStats>,
    pub cpu_pressure: Option<Pressure>,
    pub memory_pressure: Option<Pressure>,
    pub io_pressure: Option<Pressure>,
    pub irq_pressure: Option<Pressure>,
    pub cgroup: Option<CgroupStat>,
}

// Controllers in `cgroup.controllers`, as bits.
const CPU: u8 = 1;
const MEMORY: u8 = 2;
const IO: u8 = 4;
const PIDS: u8 = 8;

/// One cgroup's files as read at the end of a window.
// Lives on the stack for one cgroup and is moved once: a box would cost an
// allocation per cgroup and window.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum StatsRead {
    Stats(CgroupStats),
    /// The kernel says the cgroup no longer exists (confirmed by a second look).
    Gone,
    /// The cgroup exists but could not be read whole this window (out of
    /// descriptors, a malformed file...): no number of this window can be trusted,
    /// and the previous reading stays the baseline.
    Unreadable(CgroupError),
}

/// Reads and parses the files of one cgroup, reusing one text buffer.
pub struct StatsReader<'a> {
    dir: &'a Path,
    fd: std::io::Result<CgroupDirFd>,
    text: &'a mut String,
    /// Problems met; any makes the reading [`StatsRead::Unreadable`].
    pub errors: Vec<CgroupError>,
}

impl<'a> StatsReader<'a> {
    pub fn new(dir: &'a Path, text: &'a mut String) -> Self {
        Self {
            dir,
            fd: CgroupDirFd::open(dir),
            text,
            errors: Vec::new(),
        }
    }

    /// Reads `name`; `None` if absent or unreadable (the latter recorded).
    fn text(&mut self, name: &str) -> Option<&str> {
        match self.fd.as_ref().ok()?.read(self.dir, name, self.text) {
            Ok(true) => Some(self.text.as_str()),
            Ok(false) => None,
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    fn malformed(&mut self, name: &str, reason: FormatError) {
        self.errors.push(CgroupError::Malformed {
            path: self.dir.join(name).display().to_string(),
            reason,
        });
    }

    /// Reads and parses `name` with `parse`; `None` if absent or malformed.
    fn parse<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, FormatError>,
    ) -> Option<T> {
        let result = parse(self.text(name)?);
        result.map_err(|e| self.malformed(name, e)).ok()
    }

    /// A single-value file that may say `max`: `None` for `max`, absent or malformed.
    fn limit(&mut self, name: &str) -> Option<u64> {
        self.parse(name, limit).flatten()
    }

    /// Reads every file of the controllers enabled in this cgroup (from
    /// `cgroup.controllers`, so that no file that cannot exist is opened).
    pub fn read(&mut self) -> StatsRead {
        if let Err(e) = &self.fd {
            if super::is_gone(e) {
                return StatsRead::Gone;
            }
            let source = e.raw_os_error().map_or_else(
                || std::io::Error::new(e.kind(), e.to_string()),
                std::io::Error::from_raw_os_error,
            );
            return StatsRead::Unreadable(CgroupError::Io {
                path: self.dir.display().to_string(),
                source,
            });
        }
        let stats = self.read_all();
        if !self.errors.is_empty() {
            return StatsRead::Unreadable(self.errors.remove(0));
        }
        match stats {
            Some(stats) => StatsRead::Stats(stats),
            // `cpu.stat` exists in every v2 cgroup: absent, the cgroup went away
            // during the read, unless a second look still finds the directory.
            None => match std::fs::symlink_metadata(self.dir) {
                Err(e) if super::is_gone(&e) => StatsRead::Gone,
                Err(source) => StatsRead::Unreadable(CgroupError::Io {
                    path: self.dir.display().to_string(),
                    source,
                }),
                Ok(_) => StatsRead::Unreadable(CgroupError::Malformed {
                    path: self.dir.display().to_string(),
                    reason: "the directory has no cpu.stat".into(),
                }),
            },
        }
    }

    /// [`Self::read`]'s reading; `None` without `cpu.stat`.
    fn read_all(&mut self) -> Option<CgroupStats> {
        let cpu = self.parse("cpu.stat", str::parse::<CpuStat>)?;
        let controllers = self.text("cgroup.controllers").map_or(0, |t| {
            fields(t).fold(0u8, |acc, c| {
                acc | match c {
                    "cpu" => CPU,
                    "memory" => MEMORY,
                    "io" => IO,
                    "pids" => PIDS,
                    _ => 0,
                }
            })
        });
        let has = |bit: u8| controllers & bit != 0;
        let memory = if has(MEMORY) { self.memory() } else { None };
        let pids = if has(PIDS) { self.pids() } else { None };
        let (mut io, mut io_max) = (Vec::new(), Vec::new());
        let io = if has(IO) {
            let _ = self.parse("io.max", |t| parse_io_max(t, &mut io_max));
            self.parse("io.stat", |t| parse_io_stat(t, &mut io))
                .map(|()| io)
        } else {
            None
        };
        let (cpu_max, cpu_max_burst_usec, cpu_weight) = if has(CPU) {
            (
                self.parse("cpu.max", str::parse),
                self.parse("cpu.max.burst", |t| number(t.trim())),
                self.parse("cpu.weight", |t| number(t.trim())),
            )
        } else {
            (None, None, None)
        };
        Some(CgroupStats {
            cpu,
            cpu_max,
            cpu_max_burst_usec,
            cpu_weight,
            memory,
            io,
            io_max,
            pids,
            cpu_pressure: self.parse("cpu.pressure", str::parse),
            memory_pressure: self.parse("memory.pressure", str::parse),
            io_pressure: self.parse("io.pressure", str::parse),
            irq_pressure: self.parse("irq.pressure", str::parse),
            cgroup: self.parse("cgroup.stat", str::parse),
        })
    }

    fn memory(&mut self) -> Option<MemoryStats> {
        let current = self.parse("memory.current", |t| number(t.trim()))?;
        Some(MemoryStats {
            current,
            stat: self.parse("memory.stat", str::parse),
            events: self.parse("memory.events", str::parse),
            max: self.limit("memory.max"),
            high: self.limit("memory.high"),
            low: self.limit("memory.low"),
            min: self.limit("memory.min"),
            peak: self.limit("memory.peak"),
            swap_current: self.limit("memory.swap.current"),
            swap_max: self.limit("memory.swap.max"),
        })
    }

    fn pids(&mut self) -> Option<PidsStats> {
        let current = self.parse("pids.current", |t| number(t.trim()))?;
        Some(PidsStats {
            current,
            max: self.limit("pids.max"),
            events: self.parse("pids.events", str::parse),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path) -> StatsRead {
        let mut text = String::new();
        StatsReader::new(dir, &mut text).read()
    }

    #[test]
    fn a_6_12_container_with_every_controller() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unified-6.12-container");
        let StatsRead::Stats(stats) = read(&dir) else {
            panic!("{:?}", read(&dir))
        };
        assert_eq!(stats.cpu.usage_usec, 3_050_460);
        assert_eq!(stats.cpu_max.and_then(|m| m.cores()), Some(0.5));
        assert_eq!(stats.cpu_weight, Some(100));
        let memory = stats.memory.unwrap();
        assert_eq!(
            (memory.max, memory.high, memory.swap_max),
            (Some(67_108_864), Some(50_331_648), None)
        );
        assert_eq!(stats.pids.unwrap().max, Some(100));
        assert_eq!(stats.io.as_deref(), Some(&[][..]));
        assert!(stats.cpu_pressure.is_some() && stats.irq_pressure.is_none());
        assert_eq!(stats.cgroup.unwrap().nr_descendants, Some(0));
    }

    #[test]
    fn missing_files_are_absent_a_malformed_one_makes_the_cgroup_unreadable() {
        let dir = std::env::temp_dir().join(format!("cgscope-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cpu.stat"),
            "usage_usec 10\nuser_usec 5\nsystem_usec 5\n",
        )
        .unwrap();
        let StatsRead::Stats(stats) = read(&dir) else {
            panic!("{:?}", read(&dir))
        };
        assert_eq!(stats.cpu.usage_usec, 10);
        assert!(stats.memory.is_none() && stats.io.is_none() && stats.pids.is_none());
        assert!(stats.memory_pressure.is_none());

        std::fs::write(dir.join("memory.pressure"), "some garbage\n").unwrap();
        match read(&dir) {
            StatsRead::Unreadable(e) => {
                assert!(e.to_string().contains("memory.pressure"), "{e}");
                assert_eq!(e.reason(), "malformed");
            }
            other => panic!("{other:?}"),
        }
        // A directory without cpu.stat that still exists is not a removed cgroup.
        std::fs::remove_file(dir.join("cpu.stat")).unwrap();
        assert!(matches!(read(&dir), StatsRead::Unreadable(_)));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(read(&dir), StatsRead::Gone),
            "a vanished cgroup reads as gone"
        );
    }

    #[test]
    fn out_of_descriptors_is_unreadable_not_gone() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unified-6.12-container");
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // Every descriptor below the limit in use: the next open fails with EMFILE.
        let mut held = Vec::new();
        setrlimit(Resource::RLIMIT_NOFILE, 64, hard).unwrap();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            held.push(f);
        }
        let result = read(&dir);
        drop(held);
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
        match result {
            StatsRead::Unreadable(e) => assert_eq!(e.reason(), "EMFILE", "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
