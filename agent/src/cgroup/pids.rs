//! `pids.current`, `pids.max`, `pids.events`.

use super::{
    format::{flat, number, FormatError},
    memory::flat_keyed,
};

/// `pids.events`: `max N`, how often a fork failed on `pids.max` (cumulative).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PidsEvents {
    pub max: Option<u64>,
}

flat_keyed!(PidsEvents { max });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cgroup::format::limit, fixture};

    #[test]
    fn pids_files() {
        let events: PidsEvents = fixture("unified-6.12-container/pids.events")
            .parse()
            .unwrap();
        assert_eq!(events.max, Some(0));
        assert_eq!(
            limit(&fixture("unified-6.12-container/pids.max")),
            Ok(Some(100))
        );
        assert_eq!(
            number(fixture("unified-6.12-container/pids.current").trim()),
            Ok(1)
        );
    }
}
