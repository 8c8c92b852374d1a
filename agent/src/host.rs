//! The whole host, for comparison with a container: CPU time from `/proc/stat`,
//! disk totals from `/proc/diskstats`, and `/proc/pressure/*`.

use crate::{
    cgroup::{
        format::{number, FormatError},
        pressure::Pressure,
        read_file,
    },
    snapshot::{Disk, HostCpu, HostSample, PressureSample},
    window::pressure_window,
};

/// The `cpu` line of `/proc/stat`, in clock ticks (USER_HZ):
/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTicks {
    /// All the ticks, saturating: `/proc/stat` is the kernel's, but no sum of its
    /// values may wrap into a share.
    fn total(&self) -> u64 {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
        .iter()
        .fold(0u64, |sum, t| sum.saturating_add(*t))
    }

    /// Share of the time since `before` this CPU was busy (not idle, not waiting
    /// for IO with nothing to run).
    fn busy_since(&self, before: &Self) -> f64 {
        let total = self.total().saturating_sub(before.total());
        let waiting = |t: &Self| t.idle.saturating_add(t.iowait);
        let idle = waiting(self).saturating_sub(waiting(before));
        if total == 0 {
            0.0
        } else {
            total.saturating_sub(idle) as f64 / total as f64
        }
    }
}

/// The `cpu` line of `/proc/stat`: all CPUs together.
pub fn parse_proc_stat(text: &str) -> Result<CpuTicks, FormatError> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no cpu line")?;
    parse_cpu_line(line)
}

/// The `cpuN` lines of `/proc/stat`, by N (CPUs that are offline have no line).
pub fn parse_proc_stat_cpus(text: &str) -> Result<Vec<(usize, CpuTicks)>, FormatError> {
    text.lines()
        .filter_map(|l| {
            let (n, _) = l.strip_prefix("cpu")?.split_once(' ')?;
            Some((n.parse::<usize>().ok()?, l))
        })
        .map(|(n, l)| Ok((n, parse_cpu_line(l)?)))
        .collect()
}

fn parse_cpu_line(line: &str) -> Result<CpuTicks, FormatError> {
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(number)
        .collect::<Result<_, _>>()?;
    if v.len() < 8 {
        return Err(format!(
            "cpu line has {} fields, expected at least 8",
            v.len()
        ));
    }
    Ok(CpuTicks {
        user: v[0],
        nice: v[1],
        system: v[2],
        idle: v[3],
        iowait: v[4],
        irq: v[5],
        softirq: v[6],
        steal: v[7],
    })
}

/// `/proc/diskstats` (Documentation/admin-guide/iostats.rst), read into [`Disk`]:
/// `major minor name reads merged sectors_read ms_reading writes merged
/// sectors_written ms_writing in_flight ms_io weighted_ms ...`; sectors are 512 bytes.
/// Whole disks only (partitions, loop, ram and floppy devices are left out).
pub fn parse_diskstats(
    text: &str,
    is_whole_disk: impl Fn(&str) -> bool,
) -> Result<Vec<Disk>, FormatError> {
    let mut disks = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(&name) = f.get(2) else { continue };
        if ["loop", "ram", "fd"].iter().any(|p| name.starts_with(p)) || !is_whole_disk(name) {
            continue;
        }
        if f.len() < 13 {
            return Err(format!("{name}: {} fields, expected at least 13", f.len()));
        }
        let n = |i: usize| number(f[i]).map_err(|e| format!("{name}: {e}"));
        // A sector count whose bytes do not fit in a u64 is no real count.
        let bytes = |i: usize| {
            n(i)?
                .checked_mul(512)
                .ok_or_else(|| format!("{name}: {} sectors is out of range", f[i]))
        };
        disks.push(Disk {
            name: name.to_owned(),
            read_ops: n(3)?,
            read_bytes: bytes(5)?,
            write_ops: n(7)?,
            write_bytes: bytes(9)?,
            busy_ms: n(12)?,
        });
    }
    Ok(disks)
}

/// A whole disk has a directory in `/sys/block`.
fn sys_block_has(name: &str) -> bool {
    std::path::Path::new("/sys/block").join(name).exists()
}

#[derive(Default)]
struct Readings {
    cpu: Option<CpuTicks>,
    cpus: Vec<(usize, CpuTicks)>,
    pressure: [Option<Pressure>; 4],
    /// `None` if `/proc/diskstats` could not be read.
    disks: Option<Vec<Disk>>,
}

/// Reads the host files each window and keeps the previous reading.
#[derive(Default)]
pub struct HostReader {
    previous: Readings,
    text: String,
}

const PSI: [&str; 4] = ["cpu", "memory", "io", "irq"];

impl HostReader {
    fn read(&mut self, dir: &str, name: &str) -> Option<&str> {
        match read_file(std::path::Path::new(dir), name, &mut self.text) {
            Ok(true) => Some(&self.text),
            Ok(false) => None,
            Err(e) => {
                log::warn!("{e}");
                None
            }
        }
    }

    pub fn sample(&mut self) -> HostSample {
        let (cpu, cpus) = self
            .read("/proc", "stat")
            .and_then(|t| {
                parse_proc_stat(t)
                    .and_then(|all| Ok((all, parse_proc_stat_cpus(t)?)))
                    .map_err(|e| log::warn!("/proc/stat: {e}"))
                    .ok()
            })
            .map_or((None, Vec::new()), |(all, cpus)| (Some(all), cpus));
        let mut pressure: [Option<Pressure>; 4] = Default::default();
        for (slot, name) in pressure.iter_mut().zip(PSI) {
            *slot = self
                .read("/proc/pressure", name)
                .and_then(|t| t.parse().ok());
        }
        let disks = self.read("/proc", "diskstats").and_then(|t| {
            parse_diskstats(t, sys_block_has)
                .map_err(|e| log::warn!("/proc/diskstats: {e}"))
                .ok()
        });
        let now = Readings {
            cpu,
            cpus,
            pressure,
            disks,
        };

        let ticks = clock_ticks();
        let cpu = now.cpu.map(|n| {
            let b = self.previous.cpu.unwrap_or_default();
            let s = |now: u64, then: u64| now.saturating_sub(then) as f64 / ticks;
            HostCpu {
                // The host's online CPUs, not this process's allowance.
                cpus: now.cpus.len(),
                user_seconds: s(n.user, b.user),
                nice_seconds: s(n.nice, b.nice),
                system_seconds: s(n.system, b.system),
                idle_seconds: s(n.idle, b.idle),
                iowait_seconds: s(n.iowait, b.iowait),
                irq_seconds: s(n.irq, b.irq),
                softirq_seconds: s(n.softirq, b.softirq),
                steal_seconds: s(n.steal, b.steal),
                per_cpu_busy: now
                    .cpus
                    .iter()
                    .map(|(i, t)| {
                        let before = self.previous.cpus.iter().find(|(p, _)| p == i);
                        (
                            *i,
                            t.busy_since(before.map_or(&CpuTicks::default(), |b| &b.1)),
                        )
                    })
                    .collect(),
            }
        });
        let p = |i: usize| {
            pressure_window(now.pressure[i].as_ref(), self.previous.pressure[i].as_ref())
        };
        let pressure = PressureSample {
            cpu: p(0),
            memory: p(1),
            io: p(2),
            irq: p(3),
        };
        let disks = now
            .disks
            .iter()
            .flatten()
            .map(|d| {
                let b = self
                    .previous
                    .disks
                    .iter()
                    .flatten()
                    .find(|p| p.name == d.name)
                    .cloned()
                    .unwrap_or_default();
                Disk {
                    name: d.name.clone(),
                    read_ops: d.read_ops.saturating_sub(b.read_ops),
                    write_ops: d.write_ops.saturating_sub(b.write_ops),
                    read_bytes: d.read_bytes.saturating_sub(b.read_bytes),
                    write_bytes: d.write_bytes.saturating_sub(b.write_bytes),
                    busy_ms: d.busy_ms.saturating_sub(b.busy_ms),
                }
            })
            .collect();
        // A file that could not be read keeps its last reading as the next baseline:
        // the next window's deltas then cover both windows, never all since boot.
        let previous = std::mem::take(&mut self.previous);
        let kept = std::array::from_fn(|i| {
            let (now, before) = (now.pressure[i], &previous.pressure[i]);
            now.or(*before)
        });
        self.previous = Readings {
            cpu: now.cpu.or(previous.cpu),
            cpus: if now.cpu.is_some() {
                now.cpus
            } else {
                previous.cpus
            },
            pressure: kept,
            disks: now.disks.or(previous.disks),
        };
        HostSample {
            cpu,
            pressure,
            disks,
        }
    }
}

/// USER_HZ: the unit of `/proc/stat`.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn proc_stat_from_real_hosts() {
        let vm = parse_proc_stat(&fixture("host-6.12/stat")).unwrap();
        assert_eq!((vm.user, vm.system, vm.idle), (328, 244, 967));
        assert!(parse_proc_stat(&fixture("host/stat")).is_ok());
        assert!(parse_proc_stat("cpu 1 2 3\n").is_err());
        assert!(parse_proc_stat("intr 5\n").is_err());
        let cpus = parse_proc_stat_cpus(&fixture("host-6.12/stat")).unwrap();
        assert_eq!(cpus.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1]);
        assert!(parse_proc_stat_cpus("cpu0 1 2\n").is_err());
        let before = CpuTicks::default();
        let now = CpuTicks {
            user: 30,
            idle: 60,
            iowait: 10,
            ..before
        };
        assert_eq!(now.busy_since(&before), 0.3);
        assert_eq!(before.busy_since(&before), 0.0);
    }

    #[test]
    fn diskstats_whole_disks_only() {
        let disks = parse_diskstats(&fixture("host/diskstats"), |n| n == "vda").unwrap();
        assert_eq!(disks.len(), 1);
        assert_eq!(disks[0].name, "vda");
        assert_eq!(
            (disks[0].read_ops, disks[0].read_bytes),
            (208_540, 52_061_962 * 512)
        );
        assert_eq!(disks[0].busy_ms, 74_276);
        assert!(parse_diskstats(" 8 0 sda 1 2\n", |_| true).is_err());
    }

    #[test]
    fn diskstats_sectors_beyond_u64_bytes_are_an_error() {
        // Found by the host_diskstats fuzz target: 2^55 sectors overflowed `* 512`.
        let line = |sectors: u64| format!(" 8 0 sda 1 0 {sectors} 0 2 0 {sectors} 0 0 0 0\n");
        let disks = parse_diskstats(&line(u64::MAX / 512), |_| true).unwrap();
        assert_eq!(disks[0].read_bytes, u64::MAX / 512 * 512);
        let err = parse_diskstats(&line(u64::MAX / 512 + 1), |_| true).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
    }

    #[test]
    fn reads_this_host_twice() {
        let mut host = HostReader::default();
        host.sample();
        let second = host.sample();
        let cpu = second.cpu.expect("/proc/stat");
        assert!(cpu.cpus > 0 && cpu.idle_seconds >= 0.0);
        assert!(!cpu.per_cpu_busy.is_empty());
        assert!(cpu
            .per_cpu_busy
            .iter()
            .all(|(_, b)| (0.0..=1.0).contains(b)));
    }
}
