//! What the attached probes measured, put into a cgroup's sample: their window, or
//! an empty one where they recorded nothing; `null` where a probe is not attached
//! or its maps could not be read.

use crate::{
    cgroup::io::DeviceNames,
    probes::{
        self,
        reader::{ProbeReader, ProbeWindow},
        Probes,
    },
    snapshot::{CgroupSample, LatencySummary, MemorySample, NetworkSample},
    window,
};

/// Puts what the attached probes measured into a cgroup's sample (`None`: they
/// recorded nothing for it).
pub(super) fn probe_results(
    probes: &Probes,
    reader: &ProbeReader,
    devices: &mut DeviceNames,
    sample: &mut CgroupSample,
    window: Option<&ProbeWindow>,
    seconds: f64,
) {
    // A probe whose maps could not be read gives null, not the zeros of no entry.
    let measured = |attached: bool, name: &str| attached && !reader.missing(name);
    if measured(probes.runq.is_ok(), probes::runq::NAME) {
        sample.cpu.runq_latency =
            Some(window.map_or_else(LatencySummary::empty, |w| LatencySummary::from(&w.runq)));
    }
    if measured(probes.blockio.is_ok(), probes::blockio::NAME) {
        let blockio = window.map_or(&[][..], |w| &w.blockio);
        window::blockio(&mut sample.io, blockio, seconds, devices);
    }
    if measured(probes.tcp.is_ok(), probes::tcp::NAME) {
        let network = sample.network.get_or_insert_with(NetworkSample::default);
        window::tcp(network, window.map(|w| &w.tcp));
    }
    if measured(probes.oom.is_ok(), probes::oom::NAME) {
        // Also where the memory controller is not enabled (hybrid host): then the
        // memory object holds only this.
        let memory = sample.memory.get_or_insert_with(MemorySample::default);
        memory.oom_kills = Some(window::oom_kills(window.map_or(&[][..], |w| &w.oom)));
    }
}
