//! `io.stat`, `io.max`, and block device names.

use std::collections::HashMap;

use super::format::{limit, nested, number, FormatError};

/// A block device number, `MAJ:MIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Device {
    pub major: u32,
    pub minor: u32,
}

impl std::str::FromStr for Device {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, FormatError> {
        let (major, minor) = s
            .split_once(':')
            .ok_or_else(|| format!("not MAJ:MIN: {s:?}"))?;
        let parse = |v: &str| v.parse().map_err(|_| format!("not MAJ:MIN: {s:?}"));
        Ok(Self {
            major: parse(major)?,
            minor: parse(minor)?,
        })
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One line of `io.stat` (cumulative):
/// `8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoStat {
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
    pub dbytes: u64,
    pub dios: u64,
}

/// Parses `io.stat` into `out` (cleared first): one entry per device.
pub fn parse_io_stat(text: &str, out: &mut Vec<(Device, IoStat)>) -> Result<(), FormatError> {
    out.clear();
    for (key, fields) in nested(text) {
        let mut stat = IoStat::default();
        for (name, value) in fields {
            let slot = match name {
                "rbytes" => &mut stat.rbytes,
                "wbytes" => &mut stat.wbytes,
                "rios" => &mut stat.rios,
                "wios" => &mut stat.wios,
                "dbytes" => &mut stat.dbytes,
                "dios" => &mut stat.dios,
                _ => continue,
            };
            *slot = number(value).map_err(|e| format!("{key} {name}: {e}"))?;
        }
        out.push((key.parse()?, stat));
    }
    Ok(())
}

/// One line of `io.max`: `8:16 rbps=2097152 wbps=max riops=max wiops=120`
/// (`None` = no limit).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoMax {
    pub rbps: Option<u64>,
    pub wbps: Option<u64>,
    pub riops: Option<u64>,
    pub wiops: Option<u64>,
}

/// Parses `io.max` into `out` (cleared first).
pub fn parse_io_max(text: &str, out: &mut Vec<(Device, IoMax)>) -> Result<(), FormatError> {
    out.clear();
    for (key, fields) in nested(text) {
        let mut max = IoMax::default();
        for (name, value) in fields {
            let slot = match name {
                "rbps" => &mut max.rbps,
                "wbps" => &mut max.wbps,
                "riops" => &mut max.riops,
                "wiops" => &mut max.wiops,
                _ => continue,
            };
            *slot = limit(value).map_err(|e| format!("{key} {name}: {e}"))?;
        }
        out.push((key.parse()?, max));
    }
    Ok(())
}

/// Block device names (`sda`, `nvme0n1`) by number, from
/// `/sys/dev/block/MAJ:MIN/uevent` (`DEVNAME=`), looked up once per device.
#[derive(Debug, Default)]
pub struct DeviceNames {
    names: HashMap<Device, Option<String>>,
}

impl DeviceNames {
    pub fn name(&mut self, device: Device) -> Option<&str> {
        self.names
            .entry(device)
            .or_insert_with(|| {
                let uevent =
                    std::fs::read_to_string(format!("/sys/dev/block/{device}/uevent")).ok()?;
                uevent
                    .lines()
                    .find_map(|l| l.strip_prefix("DEVNAME="))
                    .map(str::to_owned)
            })
            .as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_lines() {
        let mut out = Vec::new();
        parse_io_stat(
            "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n\
             253:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0 newkey=7\n",
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].0,
            Device {
                major: 8,
                minor: 16
            }
        );
        assert_eq!((out[0].1.wbytes, out[0].1.wios), (314_773_504, 353));
        assert_eq!(out[1].1.rios, 1);
        parse_io_stat("", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(parse_io_stat("8:16 rbytes=x\n", &mut out).is_err());
        assert!(parse_io_stat("sda rbytes=1\n", &mut out).is_err());
    }

    #[test]
    fn io_max_lines() {
        let mut out = Vec::new();
        parse_io_max("8:16 rbps=2097152 wbps=max riops=max wiops=120\n", &mut out).unwrap();
        assert_eq!(
            out[0].1,
            IoMax {
                rbps: Some(2_097_152),
                wbps: None,
                riops: None,
                wiops: Some(120)
            }
        );
    }

    #[test]
    fn device_names_from_sysfs() {
        let mut names = DeviceNames::default();
        // 1:3 is /dev/null, a char device: no block name.
        assert_eq!(names.name(Device { major: 1, minor: 3 }), None);
        let Some(entry) = std::fs::read_dir("/sys/dev/block")
            .ok()
            .and_then(|mut d| d.next())
        else {
            eprintln!("skipped: no block devices in /sys/dev/block");
            return;
        };
        let device: Device = entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .parse()
            .unwrap();
        assert!(names.name(device).is_some_and(|n| !n.is_empty()));
    }
}
