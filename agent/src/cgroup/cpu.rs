//! `cpu.stat`, `cpu.max`, `cpu.max.burst`, `cpu.weight`.

use super::format::{fields, flat, limit, number, FormatError};

/// `cpu.stat`, flat keyed:
///
/// ```text
/// usage_usec 336531718
/// user_usec 265805551
/// system_usec 70726166
/// nr_periods 30          (these five with the cpu controller enabled)
/// nr_throttled 30
/// throttled_usec 2336079
/// nr_bursts 0
/// burst_usec 0
/// ```
///
/// The usage fields exist in every v2 cgroup; the throttling fields only where the
/// `cpu` controller is enabled, so they are `None` otherwise. Unknown keys are ignored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
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
    type Err = FormatError;

    fn from_str(text: &str) -> Result<Self, FormatError> {
        let mut stat = Self::default();
        let mut have_usage = false;
        for (key, value) in flat(text) {
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
            *field = number(value).map_err(|e| format!("{key}: {e}"))?;
        }
        if !have_usage {
            return Err("no usage_usec".into());
        }
        Ok(stat)
    }
}

/// `cpu.max`: `$MAX $PERIOD`, `$MAX` being a quota in µs or `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    pub quota_usec: Option<u64>,
    pub period_usec: u64,
}

impl CpuMax {
    /// The limit in CPUs (quota / period); `None` without a quota.
    pub fn cores(&self) -> Option<f64> {
        let quota = self.quota_usec?;
        (self.period_usec > 0).then(|| quota as f64 / self.period_usec as f64)
    }
}

impl std::str::FromStr for CpuMax {
    type Err = FormatError;

    fn from_str(text: &str) -> Result<Self, FormatError> {
        let mut fields = fields(text);
        let (Some(quota), Some(period)) = (fields.next(), fields.next()) else {
            return Err(format!("expected \"$MAX $PERIOD\", got {text:?}"));
        };
        Ok(Self {
            quota_usec: limit(quota)?,
            period_usec: number(period)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn hybrid_root_has_usage_but_no_throttling() {
        let stat: CpuStat = fixture("cpu.stat/hybrid-root").parse().unwrap();
        assert_eq!(stat.usage_usec, 336_763_457);
        assert_eq!(stat.user_usec, 265_857_537);
        assert_eq!(stat.system_usec, 70_905_920);
        assert_eq!(stat.nr_periods, None);
        assert_eq!(stat.throttled_usec, None);
    }

    #[test]
    fn throttled_pure_v2_cgroup() {
        // captured on Debian 6.12, cpu.max "20000 100000", one busy loop for 3 s
        let stat: CpuStat = fixture("cpu.stat/unified-6.12-throttled").parse().unwrap();
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

    #[test]
    fn cpu_max_quota_and_unlimited() {
        let max: CpuMax = fixture("unified-6.12-container/cpu.max").parse().unwrap();
        assert_eq!(max.cores(), Some(0.5));
        let unlimited: CpuMax = "max 100000\n".parse().unwrap();
        assert_eq!((unlimited.quota_usec, unlimited.cores()), (None, None));
        assert!("50000".parse::<CpuMax>().is_err());
        assert!("max x".parse::<CpuMax>().is_err());
    }
}
