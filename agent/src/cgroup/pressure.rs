//! Pressure stall information: `cpu.pressure`, `memory.pressure`, `io.pressure`,
//! `irq.pressure` in a cgroup, and `/proc/pressure/*` for the host.

use super::format::{lines, number, percent, split_at_byte, split_bytes, FormatError};

/// One PSI file (Documentation/accounting/psi.rst):
///
/// ```text
/// some avg10=22.18 avg60=4.65 avg300=0.99 total=3077386
/// full avg10=22.18 avg60=4.65 avg300=0.99 total=3077386
/// ```
///
/// `total` is cumulative stall time in µs; `avg10` a percentage over 10 s.
/// `irq.pressure` has only a `full` line; host `cpu` has `full` since 5.13.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pressure {
    pub some: Option<Stall>,
    pub full: Option<Stall>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Stall {
    pub total_usec: u64,
    pub avg10: f64,
}

impl std::str::FromStr for Pressure {
    type Err = FormatError;

    /// One pass over each line's `key=value` fields; only `avg10` and `total` are
    /// kept (avg60/avg300 are derivable from totals over the caller's own window).
    fn from_str(text: &str) -> Result<Self, FormatError> {
        let mut out = Self::default();
        for line in lines(text) {
            let Some((kind, rest)) = split_at_byte(line, b' ') else {
                continue;
            };
            let (mut avg10, mut total) = (None, None);
            for field in split_bytes(rest, b' ') {
                match field.as_bytes() {
                    [b'a', b'v', b'g', b'1', b'0', b'=', ..] => avg10 = Some(&field[6..]),
                    [b't', b'o', b't', b'a', b'l', b'=', ..] => total = Some(&field[6..]),
                    _ => {}
                }
            }
            let total = total.ok_or_else(|| format!("{kind}: no total"))?;
            let stall = Stall {
                total_usec: number(total)?,
                avg10: avg10
                    .map_or(Ok(0.0), percent)
                    .map_err(|e| format!("avg10: {e}"))?,
            };
            match kind {
                "some" => out.some = Some(stall),
                "full" => out.full = Some(stall),
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn cgroup_and_host_files() {
        let cpu: Pressure = fixture("unified-6.12-container/cpu.pressure")
            .parse()
            .unwrap();
        let some = cpu.some.unwrap();
        assert_eq!((some.total_usec, some.avg10), (3_077_386, 22.18));
        assert!(cpu.full.is_some());
        let host: Pressure = fixture("host-6.12/pressure-cpu").parse().unwrap();
        assert!(host.some.is_some());
        let irq: Pressure = "full avg10=0.00 avg60=0.00 avg300=0.00 total=2811\n"
            .parse()
            .unwrap();
        assert!(irq.some.is_none() && irq.full.is_some());
        assert!("some avg10=1.0\n".parse::<Pressure>().is_err());
        assert!("some avg10=x total=1\n".parse::<Pressure>().is_err());
    }
}
