//! `cpu.stat`.

use serde::Serialize;

/// `cpu.stat`, a flat-keyed file (Documentation/admin-guide/cgroup-v2.rst):
///
/// ```text
/// usage_usec 336531718
/// user_usec 265805551
/// system_usec 70726166
/// nr_periods 0           (these five with the cpu controller enabled)
/// nr_throttled 0
/// throttled_usec 0
/// nr_bursts 0
/// burst_usec 0
/// ```
///
/// The usage fields exist in every v2 cgroup; the throttling fields only where the
/// `cpu` controller is enabled, so they are `None` otherwise. Unknown keys are ignored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CpuStat {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
    pub nr_bursts: Option<u64>,
    pub burst_usec: Option<u64>,
}

impl std::str::FromStr for CpuStat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut stat = Self::default();
        let mut have_usage = false;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(' ') else {
                continue;
            };
            let field = match key {
                "usage_usec" => {
                    have_usage = true;
                    &mut stat.usage_usec
                }
                "user_usec" => &mut stat.user_usec,
                "system_usec" => &mut stat.system_usec,
                "nr_periods" => stat.nr_periods.insert(0),
                "nr_throttled" => stat.nr_throttled.insert(0),
                "throttled_usec" => stat.throttled_usec.insert(0),
                "nr_bursts" => stat.nr_bursts.insert(0),
                "burst_usec" => stat.burst_usec.insert(0),
                _ => continue,
            };
            *field = value
                .trim()
                .parse()
                .map_err(|_| format!("{key}: not a number: {value:?}"))?;
        }
        if !have_usage {
            return Err("no usage_usec".into());
        }
        Ok(stat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/cpu.stat/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn hybrid_root_has_usage_but_no_throttling() {
        let stat: CpuStat = fixture("hybrid-root").parse().unwrap();
        assert_eq!(stat.usage_usec, 336_763_457);
        assert_eq!(stat.user_usec, 265_857_537);
        assert_eq!(stat.system_usec, 70_905_920);
        assert_eq!(stat.nr_periods, None);
        assert_eq!(stat.throttled_usec, None);
    }

    #[test]
    fn throttled_pure_v2_cgroup() {
        // captured on Debian 6.12, cpu.max "20000 100000", one busy loop for 3 s
        let stat: CpuStat = fixture("unified-6.12-throttled").parse().unwrap();
        assert_eq!(stat.usage_usec, 621_947);
        assert_eq!(stat.user_usec + stat.system_usec, 621_947);
        assert_eq!(stat.nr_periods, Some(30));
        assert_eq!(stat.nr_throttled, Some(30));
        assert_eq!(stat.throttled_usec, Some(2_336_079));
        assert_eq!((stat.nr_bursts, stat.burst_usec), (Some(0), Some(0)));
    }

    #[test]
    fn malformed_values_are_errors_not_zero() {
        assert!("usage_usec x\n".parse::<CpuStat>().is_err());
        assert!("user_usec 1\n".parse::<CpuStat>().is_err());
        assert!("".parse::<CpuStat>().is_err());
        let stat: CpuStat = "usage_usec 5\nfuture_key 9\ngarbage\n".parse().unwrap();
        assert_eq!(stat.usage_usec, 5);
    }
}
