//! Network counters of one network namespace, read through a process in it
//! (`/proc/<pid>/net/{dev,snmp,netstat}` show the namespace of `<pid>`). A pod's
//! containers share one namespace: it is read once, keyed by the namespace inode.

use std::{collections::HashMap, os::unix::fs::MetadataExt};

use crate::snapshot::{Interface, NetworkSample, Tcp, Udp};

/// `net/dev` holds one line of counters per interface (read into [`Interface`]):
///
/// ```text
/// Inter-|   Receive                                                |  Transmit
///  face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop ...
///   eth0: 775087247   23201    0    0    0     0          0         0  1156605   14323    0    0 ...
/// ```
/// Parses `net/dev` into `out` (cleared first).
pub fn parse_dev(text: &str, out: &mut Vec<Interface>) -> Result<(), String> {
    out.clear();
    for line in text.lines().skip(2) {
        let Some((name, values)) = line.split_once(':') else {
            continue;
        };
        let v: Vec<u64> = values
            .split_whitespace()
            .map(|f| {
                f.parse()
                    .map_err(|_| format!("{}: not a number: {f:?}", name.trim()))
            })
            .collect::<Result<_, _>>()?;
        if v.len() < 12 {
            return Err(format!("{}: {} fields, expected 16", name.trim(), v.len()));
        }
        out.push(Interface {
            name: name.trim().to_owned(),
            rx_bytes: v[0],
            rx_packets: v[1],
            rx_errors: v[2],
            rx_dropped: v[3],
            tx_bytes: v[8],
            tx_packets: v[9],
            tx_errors: v[10],
            tx_dropped: v[11],
        });
    }
    Ok(())
}

/// Where a counter of `T` comes from in `net/snmp` or `net/netstat`: section, key,
/// the field it fills, and whether it is a gauge (kept as read, not differenced).
struct Source<T> {
    section: &'static str,
    key: &'static str,
    field: fn(&mut T) -> &mut Option<u64>,
    gauge: bool,
}

/// A counter (`gauge: false`) or gauge of `T` from `section` `key`.
macro_rules! source {
    ($section:literal $key:literal => $field:ident $($gauge:ident)?) => {
        Source {
            section: $section,
            key: $key,
            field: |t| &mut t.$field,
            gauge: source!(@gauge $($gauge)?),
        }
    };
    (@gauge) => { false };
    (@gauge gauge) => { true };
}

const TCP: [Source<Tcp>; 15] = [
    source!("Tcp" "ActiveOpens" => active_opens),
    source!("Tcp" "PassiveOpens" => passive_opens),
    source!("Tcp" "AttemptFails" => attempt_fails),
    source!("Tcp" "EstabResets" => estab_resets),
    source!("Tcp" "CurrEstab" => curr_estab gauge),
    source!("Tcp" "InSegs" => in_segs),
    source!("Tcp" "OutSegs" => out_segs),
    source!("Tcp" "RetransSegs" => retrans_segs),
    source!("Tcp" "InErrs" => in_errs),
    source!("Tcp" "OutRsts" => out_rsts),
    source!("TcpExt" "ListenOverflows" => listen_overflows),
    source!("TcpExt" "ListenDrops" => listen_drops),
    source!("TcpExt" "TCPTimeouts" => timeouts),
    source!("TcpExt" "TCPSynRetrans" => syn_retrans),
    source!("TcpExt" "TCPLostRetransmit" => lost_retransmits),
];

const UDP: [Source<Udp>; 6] = [
    source!("Udp" "InDatagrams" => in_datagrams),
    source!("Udp" "OutDatagrams" => out_datagrams),
    source!("Udp" "NoPorts" => no_ports),
    source!("Udp" "InErrors" => in_errors),
    source!("Udp" "RcvbufErrors" => rcvbuf_errors),
    source!("Udp" "SndbufErrors" => sndbuf_errors),
];

/// Sets the field of `out` that `section` `key` fills, if one does.
fn set<T>(sources: &[Source<T>], out: &mut T, section: &str, key: &str, value: u64) {
    if let Some(s) = sources
        .iter()
        .find(|s| s.key == key && s.section == section)
    {
        *(s.field)(out) = Some(value);
    }
}

/// Counters: `now - before`; gauges: `now`.
fn since<T: Copy>(sources: &[Source<T>], now: &T, before: &T) -> T {
    let (mut out, mut before) = (*now, *before);
    for s in sources.iter().filter(|s| !s.gauge) {
        let was = (s.field)(&mut before).unwrap_or(0);
        let field = (s.field)(&mut out);
        *field = field.map(|n| n.saturating_sub(was));
    }
    out
}

/// Walks `net/snmp` or `net/netstat`: a header line of keys, then a line of values,
/// per section. Values that are not counters (`MaxConn -1`) are skipped.
pub fn each_snmp_value(text: &str, mut f: impl FnMut(&str, &str, u64)) -> Result<(), String> {
    let mut lines = text.lines();
    while let (Some(keys), Some(values)) = (lines.next(), lines.next()) {
        let (Some((section, keys)), Some((vsection, values))) =
            (keys.split_once(':'), values.split_once(':'))
        else {
            return Err(format!("not a key/value line pair: {keys:?}"));
        };
        if section != vsection {
            return Err(format!("section {section} followed by {vsection}"));
        }
        for (key, value) in keys.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse() {
                f(section, key, v);
            }
        }
    }
    Ok(())
}

/// Everything cgscope reads for one network namespace (cumulative).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetnsCounters {
    pub interfaces: Vec<Interface>,
    pub tcp: Tcp,
    pub udp: Udp,
}

impl NetnsCounters {
    /// Reads the namespace `pid` is in.
    pub fn read(pid: u32, text: &mut String) -> Result<Self, String> {
        let dir = std::path::PathBuf::from(format!("/proc/{pid}/net"));
        let read = |file: &str, text: &mut String| match crate::cgroup::read_file(&dir, file, text)
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{}/{file}: gone", dir.display())),
            Err(e) => Err(e.to_string()),
        };
        let mut out = Self::default();
        read("dev", text)?;
        parse_dev(text, &mut out.interfaces)?;
        read("snmp", text)?;
        each_snmp_value(text, |s, k, v| {
            set(&TCP, &mut out.tcp, s, k, v);
            set(&UDP, &mut out.udp, s, k, v);
        })?;
        read("netstat", text)?;
        each_snmp_value(text, |s, k, v| set(&TCP, &mut out.tcp, s, k, v))?;
        Ok(out)
    }

    /// What happened since `before` (interfaces matched by name).
    pub fn since(&self, before: Option<&Self>) -> NetworkSample {
        let empty = Self::default();
        let before = before.unwrap_or(&empty);
        let interfaces = self
            .interfaces
            .iter()
            .map(|now| {
                let b = before
                    .interfaces
                    .iter()
                    .find(|i| i.name == now.name)
                    .cloned()
                    .unwrap_or_default();
                Interface {
                    name: now.name.clone(),
                    rx_bytes: now.rx_bytes.saturating_sub(b.rx_bytes),
                    rx_packets: now.rx_packets.saturating_sub(b.rx_packets),
                    rx_errors: now.rx_errors.saturating_sub(b.rx_errors),
                    rx_dropped: now.rx_dropped.saturating_sub(b.rx_dropped),
                    tx_bytes: now.tx_bytes.saturating_sub(b.tx_bytes),
                    tx_packets: now.tx_packets.saturating_sub(b.tx_packets),
                    tx_errors: now.tx_errors.saturating_sub(b.tx_errors),
                    tx_dropped: now.tx_dropped.saturating_sub(b.tx_dropped),
                }
            })
            .collect();
        NetworkSample {
            netns: None,
            interfaces,
            tcp: Some(since(&TCP, &self.tcp, &before.tcp)),
            udp: Some(since(&UDP, &self.udp, &before.udp)),
            ..NetworkSample::default()
        }
    }
}

/// Inode of the network namespace `pid` is in.
pub fn netns_of(pid: u32) -> std::io::Result<u64> {
    let path = format!("/proc/{pid}/ns/net");
    crate::cgroup::trace::note(|| crate::cgroup::trace::Call::Stat(path.clone().into()));
    let link = std::fs::metadata(path)?;
    // A namespace is an nsfs file. Where the caller may not follow the link (another
    // user's process without CAP_SYS_PTRACE) 6.18 refuses, but Debian's 6.12 resolves
    // it to a directory: the same refusal, not a namespace.
    if link.is_dir() {
        return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
    }
    Ok(link.ino())
}

/// Per-namespace counters of the previous window.
pub struct NetnsReader {
    previous: HashMap<u64, NetnsCounters>,
    /// The host's namespace: cgroups in it have no network of their own. PID 1's, or
    /// where that is not readable, the agent's own (it runs with the host network).
    host: Option<u64>,
    text: String,
}

impl Default for NetnsReader {
    fn default() -> Self {
        Self {
            previous: HashMap::new(),
            host: netns_of(1).or_else(|_| netns_of(std::process::id())).ok(),
            text: String::new(),
        }
    }
}

impl NetnsReader {
    /// The namespace of the first process in the cgroup at `dir`, and that process,
    /// unless it is the host's namespace. An error only when the namespace may not
    /// be read (a capability is missing); an empty or vanished cgroup has none.
    pub fn own_netns(&mut self, dir: &std::path::Path) -> Result<Option<(u64, u32)>, String> {
        let first = match crate::cgroup::read_file(dir, "cgroup.procs", &mut self.text) {
            Ok(true) => self.text.lines().next().and_then(|l| l.trim().parse().ok()),
            _ => None,
        };
        let Some(pid) = first else {
            return Ok(None);
        };
        let netns = match netns_of(pid) {
            Ok(netns) => netns,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(format!(
                    "cannot read /proc/{pid}/ns/net (the network of {}): {e}; \
                     cgscope needs CAP_SYS_PTRACE for processes of other users",
                    dir.display()
                ))
            }
            Err(_) => return Ok(None), // exited since listed: nothing to read
        };
        Ok((Some(netns) != self.host).then_some((netns, pid)))
    }

    /// Reads each namespace once and returns its window by namespace inode. `pids`:
    /// (namespace inode, a process in it).
    pub fn read(&mut self, pids: &[(u64, u32)]) -> (HashMap<u64, NetworkSample>, Vec<String>) {
        let mut now: HashMap<u64, NetnsCounters> = HashMap::new();
        let mut out = HashMap::new();
        let mut errors = Vec::new();
        for &(netns, pid) in pids {
            if now.contains_key(&netns) {
                continue;
            }
            match NetnsCounters::read(pid, &mut self.text) {
                Ok(counters) => {
                    let mut sample = counters.since(self.previous.get(&netns));
                    sample.netns = Some(netns);
                    out.insert(netns, sample);
                    now.insert(netns, counters);
                }
                // The process may have exited since it was picked: not worth a warning.
                Err(e) if netns_of(pid).is_err() => log::debug!("{e}"),
                Err(e) => errors.push(e),
            }
        }
        self.previous = now;
        (out, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn dev_snmp_netstat_from_a_real_host() {
        let mut interfaces = Vec::new();
        parse_dev(&fixture("net/dev"), &mut interfaces).unwrap();
        let eth0 = interfaces.iter().find(|i| i.name == "eth0").unwrap();
        assert_eq!(
            (
                eth0.rx_bytes,
                eth0.rx_packets,
                eth0.tx_bytes,
                eth0.tx_packets
            ),
            (775_087_247, 23_201, 1_156_605, 14_323)
        );
        let mut tcp = Tcp::default();
        let mut udp = Udp::default();
        each_snmp_value(&fixture("net/snmp"), |s, k, v| {
            set(&TCP, &mut tcp, s, k, v);
            set(&UDP, &mut udp, s, k, v);
        })
        .unwrap();
        each_snmp_value(&fixture("net/netstat"), |s, k, v| {
            set(&TCP, &mut tcp, s, k, v)
        })
        .unwrap();
        assert_eq!(
            (tcp.active_opens, tcp.out_rsts, tcp.retrans_segs),
            (Some(99), Some(36), Some(0))
        );
        assert_eq!((udp.in_datagrams, udp.out_datagrams), (Some(75), Some(76)));
        assert!(tcp.listen_drops.is_some() && tcp.timeouts.is_some());
    }

    #[test]
    fn malformed_and_deltas() {
        let mut out = Vec::new();
        assert!(parse_dev("h\nh\n eth0: 1 2 x\n", &mut out).is_err());
        assert!(parse_dev("h\nh\n eth0: 1 2 3\n", &mut out).is_err());
        assert!(each_snmp_value("Tcp: A B\nUdp: 1 2\n", |_, _, _| {}).is_err());
        let before = Tcp {
            out_rsts: Some(10),
            curr_estab: Some(4),
            ..Default::default()
        };
        let now = Tcp {
            out_rsts: Some(15),
            curr_estab: Some(2),
            ..Default::default()
        };
        let d = since(&TCP, &now, &before);
        assert_eq!(
            (d.out_rsts, d.curr_estab, d.in_segs),
            (Some(5), Some(2), None)
        );
    }

    /// Every field of the snapshot's `Tcp` and `Udp` has a source: filled from
    /// each, they serialize without a `null`.
    #[test]
    fn every_counter_has_a_source() {
        fn filled<T: Default + serde::Serialize>(sources: &[Source<T>]) -> serde_json::Value {
            let mut out = T::default();
            for s in sources {
                set(sources, &mut out, s.section, s.key, 1);
            }
            serde_json::to_value(out).unwrap()
        }
        for v in [filled(&TCP), filled(&UDP)] {
            let nulls: Vec<_> = v
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, v)| v.is_null())
                .collect();
            assert!(nulls.is_empty(), "fields without a source: {nulls:?}");
        }
    }

    #[test]
    fn reads_this_process_namespace() {
        let mut text = String::new();
        let counters = NetnsCounters::read(std::process::id(), &mut text).unwrap();
        assert!(counters.interfaces.iter().any(|i| i.name == "lo"));
        assert!(netns_of(std::process::id()).unwrap() > 0);
    }
}
