//! The exporters' state: every live series with its cumulative value and start time,
//! and what the last window added. The snapshot carries window deltas; summing them
//! here keeps cumulative counters continuous whatever happens to the collector (a
//! failed export loses nothing: the next one carries the totals).
//!
//! A series lives while its cgroup and its data do: a series absent from a window is
//! forgotten (a removed cgroup's last window is still exported once), and if it comes
//! back it starts again with a new start time, as OTLP requires.

use std::collections::BTreeMap;

use cgscope_common::histogram::{BUCKETS, OTLP_OFFSET, SCALE};

use super::{
    catalogue::{Instrument, Metric},
    filter::{Filter, Verdict},
    points::{self, AgentSample, Attributes, Point, PointValue, Points},
};
use crate::{
    snapshot::ExponentialHistogram,
    snapshot::{Bounds, Snapshot},
};

/// What a resource is: one per exported cgroup, plus the host and the agent itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKey {
    /// The agent (`cgscope.*`) and the host (`system.*`): the node.
    Node,
    /// A cgroup, by id.
    Cgroup(u64),
}

/// A histogram's counts in the kernel's full bucket layout (bucket `i` is OTLP index
/// `OTLP_OFFSET + i` at [`SCALE`]), so windows add without re-bucketing.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramCounts {
    pub count: u64,
    pub sum_seconds: f64,
    pub zero_count: u64,
    pub zero_threshold_seconds: f64,
    pub buckets: Box<[u64; BUCKETS]>,
}

impl HistogramCounts {
    fn new(zero_threshold_seconds: f64) -> Self {
        Self {
            count: 0,
            sum_seconds: 0.0,
            zero_count: 0,
            zero_threshold_seconds,
            buckets: Box::new([0; BUCKETS]),
        }
    }

    fn add(&mut self, h: &ExponentialHistogram) {
        debug_assert_eq!(h.scale, SCALE);
        self.count = self.count.saturating_add(h.count);
        self.sum_seconds += h.sum_seconds;
        self.zero_count = self.zero_count.saturating_add(h.zero_count);
        let first = (h.offset - OTLP_OFFSET).max(0) as usize;
        for (slot, n) in self.buckets.iter_mut().skip(first).zip(&h.bucket_counts) {
            *slot = slot.saturating_add(*n);
        }
    }

    /// OTLP index of the first non-empty bucket and the counts up to the last one.
    pub fn dense(&self) -> (i32, &[u64]) {
        match (
            self.buckets.iter().position(|&n| n > 0),
            self.buckets.iter().rposition(|&n| n > 0),
        ) {
            (Some(first), Some(last)) => (OTLP_OFFSET + first as i32, &self.buckets[first..=last]),
            _ => (OTLP_OFFSET, &[]),
        }
    }
}

/// A value, cumulative or of one window.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(u64),
    Double(f64),
    Histogram(HistogramCounts),
}

impl Value {
    /// A number's value (a histogram's sum).
    pub fn as_f64(&self) -> f64 {
        match self {
            Self::Int(n) => *n as f64,
            Self::Double(x) => *x,
            Self::Histogram(h) => h.sum_seconds,
        }
    }

    fn from_point(v: &PointValue<'_>) -> Self {
        match v {
            PointValue::Int(n) | PointValue::TotalInt(n) => Self::Int(*n),
            PointValue::Double(x) | PointValue::TotalDouble(x) => Self::Double(*x),
            PointValue::Histogram(h) => {
                let mut counts = HistogramCounts::new(h.zero_threshold_seconds);
                counts.add(h);
                Self::Histogram(counts)
            }
        }
    }

    /// Nothing recorded: the window of a counter or histogram that added nothing.
    fn clear(&mut self) {
        match self {
            Self::Int(n) => *n = 0,
            Self::Double(x) => *x = 0.0,
            Self::Histogram(h) => {
                h.buckets.fill(0);
                h.count = 0;
                h.sum_seconds = 0.0;
                h.zero_count = 0;
            }
        }
    }

    /// Becomes `v` (reusing a histogram's buckets).
    fn set(&mut self, v: &PointValue<'_>) {
        match (self, v) {
            (slot @ Self::Histogram(_), PointValue::Histogram(h)) => {
                slot.clear();
                if let Self::Histogram(mine) = slot {
                    mine.add(h);
                }
            }
            (slot, v) => *slot = Self::from_point(v),
        }
    }

    /// Adds a window (counters, histograms) or replaces the value (gauges, totals).
    fn update(&mut self, instrument: Instrument, v: &PointValue<'_>) {
        match (self, v) {
            (Self::Int(a), PointValue::Int(b)) if instrument == Instrument::Counter => {
                *a = a.saturating_add(*b)
            }
            (Self::Double(a), PointValue::Double(b)) if instrument == Instrument::Counter => {
                *a += b
            }
            (Self::Histogram(a), PointValue::Histogram(b)) => a.add(b),
            (slot, v) => *slot = Self::from_point(v),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Series {
    pub metric: &'static Metric,
    pub attributes: Attributes,
    /// When this series began accumulating (the start of its first window).
    pub start_unix_nano: u64,
    /// Cumulative for counters and histograms, the last value for gauges.
    pub total: Value,
    /// What the last window recorded (for gauges, the value).
    pub window: Value,
}

#[derive(Debug, Clone)]
pub struct Resource {
    /// Identity attributes of the cgroup (the agent's are added at export).
    pub attributes: Attributes,
    /// When the resource was first seen (its cgroup's first window).
    pub first_seen_unix_nano: u64,
    pub series: BTreeMap<(&'static str, Attributes), Series>,
}

/// Live series of every exported resource.
#[derive(Debug, Default)]
pub struct Store {
    pub resources: BTreeMap<ResourceKey, Resource>,
    /// Start and end of the last window.
    pub window_start_unix_nano: u64,
    pub window_end_unix_nano: u64,
    /// Points folded into overflow series since start (the series cap was reached).
    pub overflowed: u64,
    /// Cgroup windows refused since start because a value was impossible in its
    /// window, by what ([`CgroupSample::impossible`]).
    pub refused: BTreeMap<&'static str, u64>,
}

impl Store {
    /// Adds one window: cgroups the filter passes, and the host's `system.*` series.
    /// Cgroups and series that the window did not carry are forgotten.
    pub fn update(&mut self, snapshot: &Snapshot, agent: &AgentSample, filter: &Filter) {
        let end = (snapshot.timestamp_seconds * 1e9) as u64;
        let start = end.saturating_sub((snapshot.window_seconds * 1e9) as u64);
        self.window_start_unix_nano = start;
        self.window_end_unix_nano = end;
        let mut window = Window {
            previous: std::mem::take(&mut self.resources),
            next: BTreeMap::new(),
            series_per_metric: BTreeMap::new(),
            max_series: filter.max_series,
            start,
            overflow: Vec::new(),
        };

        let cpus = snapshot.host.window.cpu.as_ref().map(|c| c.cpus);
        let bounds = Bounds::now(cpus, snapshot.window_seconds);
        let mut node = Points(Vec::new());
        points::host(&snapshot.host.window, &mut node);
        points::agent(agent, &snapshot.probes, &snapshot.cost, &mut node);
        window.carry(ResourceKey::Node, Vec::new(), start, node.0);

        for c in &snapshot.cgroups {
            let key = ResourceKey::Cgroup(c.id);
            let first_seen = window
                .previous
                .get(&key)
                .map_or(start, |r| r.first_seen_unix_nano);
            let age_seconds = end.saturating_sub(first_seen) as f64 * 1e-9;
            match filter.verdict(c, age_seconds) {
                Verdict::Export => {
                    let attributes = super::resource::cgroup_attributes(c);
                    if let Some(what) = bounds.and_then(|b| c.impossible(&b)) {
                        // Refused: its series keep their totals, this window adds 0.
                        *self.refused.entry(what).or_default() += 1;
                        window.carry(key, attributes, first_seen, Vec::new());
                        window.hold(key);
                        continue;
                    }
                    let mut points = Points(Vec::new());
                    let end_seconds = snapshot.timestamp_seconds;
                    points::cgroup(c, end_seconds, snapshot.window_seconds, &mut points);
                    window.carry(key, attributes, first_seen, points.0);
                    if c.unreadable.is_some() {
                        // Its files' series wait, totals kept, for the next reading,
                        // which covers this window too.
                        window.hold(key);
                    }
                }
                // Too young: remember when it was first seen, export nothing yet.
                Verdict::Wait => window.carry(key, Vec::new(), first_seen, Vec::new()),
                Verdict::Skip => {}
            }
        }

        // Points beyond the cap: one overflow series per metric on the node resource,
        // as the OTel SDKs do (`otel.metric.overflow=true`).
        self.overflowed += window.overflow.len() as u64;
        let overflow = std::mem::take(&mut window.overflow);
        for p in overflow {
            let attributes = vec![("otel.metric.overflow", "true".to_owned())];
            window.add(ResourceKey::Node, Point { attributes, ..p });
        }
        self.resources = window.next;
    }

    /// Every series with the resource it belongs to.
    pub fn series(&self) -> impl Iterator<Item = (ResourceKey, &Resource, &Series)> {
        self.resources
            .iter()
            .flat_map(|(k, r)| r.series.values().map(move |s| (*k, r, s)))
    }
}

/// One window being added: the series of the previous window are moved, not copied,
/// into the next.
struct Window<'a> {
    previous: BTreeMap<ResourceKey, Resource>,
    next: BTreeMap<ResourceKey, Resource>,
    series_per_metric: BTreeMap<&'static str, usize>,
    max_series: usize,
    start: u64,
    overflow: Vec<Point<'a>>,
}

impl<'a> Window<'a> {
    fn carry(
        &mut self,
        key: ResourceKey,
        attributes: Attributes,
        first_seen: u64,
        points: Vec<Point<'a>>,
    ) {
        self.next.insert(
            key,
            Resource {
                attributes,
                first_seen_unix_nano: first_seen,
                series: BTreeMap::new(),
            },
        );
        for p in points {
            if self.never_counted(key, &p) {
                continue;
            }
            let seen = self.series_per_metric.entry(p.metric.name).or_default();
            if *seen >= self.max_series {
                self.overflow.push(p);
                continue;
            }
            *seen += 1;
            self.add(key, p);
        }
    }

    /// A cgroup's counter or histogram that has counted nothing since the agent
    /// started, or sparse gauge that has been zero since: it gets no series until it
    /// does (an idle container's never-woken run-queue histogram, never-throttled
    /// counter or never-used swap costs no series downstream). A series that exists
    /// continues through empty windows.
    fn never_counted(&self, key: ResourceKey, p: &Point<'_>) -> bool {
        let counter = p.metric.instrument == Instrument::Counter || p.metric.sparse;
        let empty = match &p.value {
            PointValue::Histogram(h) => h.count == 0,
            PointValue::Int(n) | PointValue::TotalInt(n) => counter && *n == 0,
            PointValue::Double(x) | PointValue::TotalDouble(x) => counter && *x == 0.0,
        };
        empty
            && matches!(key, ResourceKey::Cgroup(_))
            && !self.previous.get(&key).is_some_and(|r| {
                r.series
                    .contains_key(&(p.metric.name, p.attributes.clone()))
            })
    }

    /// Keeps the series of `key` that this window did not carry, with their totals
    /// and an empty window (a cgroup that could not be read, or was refused).
    fn hold(&mut self, key: ResourceKey) {
        let (Some(before), Some(resource)) = (self.previous.get_mut(&key), self.next.get_mut(&key))
        else {
            return;
        };
        for (id, mut series) in std::mem::take(&mut before.series) {
            if resource.series.contains_key(&id) {
                continue;
            }
            if series.metric.instrument == Instrument::Counter
                || matches!(series.total, Value::Histogram(_))
            {
                series.window.clear();
            }
            resource.series.insert(id, series);
        }
    }

    /// Adds a point to its series in `next`: continues the previous window's series,
    /// or starts one at this window's start.
    fn add(&mut self, key: ResourceKey, p: Point<'_>) {
        let id = (p.metric.name, p.attributes);
        let Some(resource) = self.next.get_mut(&key) else {
            return;
        };
        if let Some(s) = resource.series.get_mut(&id) {
            // A second point of the same series in one window (overflow): add up.
            s.total.update(p.metric.instrument, &p.value);
            s.window.update(p.metric.instrument, &p.value);
            return;
        }
        let before = self
            .previous
            .get_mut(&key)
            .and_then(|r| r.series.remove(&id));
        let series = match before {
            Some(mut s) => {
                match (&p.value, &s.total) {
                    // A total read from a counter: the window is the difference.
                    (PointValue::TotalInt(now), Value::Int(before)) => {
                        s.window = Value::Int(now.saturating_sub(*before))
                    }
                    (PointValue::TotalDouble(now), Value::Double(before)) => {
                        s.window = Value::Double((now - before).max(0.0))
                    }
                    _ => s.window.set(&p.value),
                }
                s.total.update(p.metric.instrument, &p.value);
                s
            }
            None => {
                let window = Value::from_point(&p.value);
                Series {
                    metric: p.metric,
                    attributes: id.1.clone(),
                    start_unix_nano: self.start,
                    total: window.clone(),
                    window,
                }
            }
        };
        resource.series.insert(id, series);
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
pub(crate) mod tests;
