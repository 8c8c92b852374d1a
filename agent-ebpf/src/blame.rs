//! Who caused a run-queue wait (see `cgscope_common::blame`): each CPU's timeline of
//! occupants and throttles, and the split of a wait's span over it.
//!
//! Hooks, besides the `runq` ones that call [`occupy`] and [`settle`]:
//! - fexit `throttle_cfs_rq(struct cfs_rq *) -> bool`: a group's `cfs_rq` ran out of
//!   quota on its CPU (true: throttled).
//! - fentry `unthrottle_cfs_rq(struct cfs_rq *)`: it got quota again.
//!
//! Both run with the `cfs_rq`'s run-queue lock held, as `sched_switch` does for its
//! CPU: every write to one CPU's [`Timeline`] is serialised by that lock.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{fentry, fexit, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::{FEntryContext, FExitContext},
};
use cgscope_common::{
    blame::{
        culprit, drop, BlameKey, Throttle, Timeline, DEFAULT_MAX_PAIRS, MAX_ANCESTORS,
        OPEN_THROTTLES, PENDING_AGE_NS, PENDING_MAX_NS, SEGMENTS, THROTTLES,
    },
    histogram::atomic_add_u64,
};

use crate::kernel::{
    bump, cgroup_ancestors, cgroup_id, load, now_ns, offsets, task_cgroup, unroll, ROOT_CGROUP_ID,
};

/// Capacity of `CPU_TIMELINE` by default; the agent sets it to the possible CPUs.
const DEFAULT_CPUS: u32 = 256;

/// Each CPU's recent occupants and throttles, indexed by CPU.
#[map]
static CPU_TIMELINE: Array<Timeline> = Array::with_max_entries(DEFAULT_CPUS, 0);

/// Nanoseconds of wait by (waiter's cgroup, culprit), cumulative. Preallocated and
/// shared by all CPUs (atomic adds): these programs run under the run-queue lock
/// with interrupts off, where allocating a new entry can fail.
#[map]
static BLAME: HashMap<BlameKey, u64> = HashMap::with_max_entries(DEFAULT_MAX_PAIRS, 0);

/// Pieces lost or cut short, by reason (`cgscope_common::blame::drop`).
#[map]
static BLAME_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop::SLOTS, 0);

/// `task_struct.flags` bit of kernel threads.
const PF_KTHREAD: u32 = 0x0020_0000;

/// What a task on a CPU counts as: idle, a kernel thread, or its cgroup. `known`:
/// its cgroup id as the caller read it when the task's wait began (the switch, from
/// the wait's entry), which spares the walk through `css_set`, `cgroup` and
/// `kernfs_node`; a task moved to another cgroup while it waited then counts in the
/// old one until it next waits, as that wait itself does.
#[inline(always)]
pub fn occupant(task: *const u8, pid: u32, known: Option<u64>) -> u64 {
    let off = offsets();
    if pid == 0 {
        return culprit::IDLE;
    }
    if load::<u32>(task, off.task_flags) & PF_KTHREAD != 0 {
        return culprit::KERNEL;
    }
    match known {
        Some(id) => id,
        None => cgroup_id(task_cgroup(task, &off), &off).unwrap_or(ROOT_CGROUP_ID),
    }
}

/// `occupant` runs on `cpu` from `now`. A switch between two tasks of the same
/// occupant (threads of one cgroup, two kernel threads) continues its segment: the
/// timeline then reaches further back, and a wait is split into fewer pieces.
#[inline(always)]
pub fn occupy(cpu: u32, now: u64, occupant: u64) {
    let Some(timeline) = CPU_TIMELINE.get_ptr_mut(cpu) else {
        return;
    };
    // SAFETY: the entry of `cpu`, written only under that CPU's run-queue lock.
    let t = unsafe { &mut *timeline };
    if let Some(current) = t.segments.get(t.head as usize % SEGMENTS) {
        if current.since_ns != 0 && current.occupant == occupant {
            return;
        }
    }
    let head = (t.head as usize + 1) % SEGMENTS;
    if let Some(s) = t.segments.get_mut(head) {
        s.since_ns = now;
        s.occupant = occupant;
    }
    t.head = head as u32;
}

/// Adds `ns` of `victim`'s wait on `culprit` at `now`: to the CPU's pending piece
/// if it is the same pair, young and small, else to `BLAME` (the pending piece
/// first). Not inlined, as `add_to_map`: the walk calls it from each of its
/// unrolled steps, and one subprogram instead of a copy per step halved what the
/// verifier does at load (3.4 s -> 1.7 s of CPU, when the walk had 16 steps).
#[inline(never)]
fn add(t: &mut Timeline, victim: u64, culprit: u64, ns: u64, now: u64) {
    if ns == 0 {
        return;
    }
    let key = BlameKey { victim, culprit };
    if t.pending_ns != 0 && t.pending == key {
        t.pending_ns += ns;
        if t.pending_ns >= PENDING_MAX_NS || now.wrapping_sub(t.pending_since) >= PENDING_AGE_NS {
            flush(t);
        }
        return;
    }
    flush(t);
    if ns >= PENDING_MAX_NS {
        add_to_map(&key, ns);
        return;
    }
    t.pending = key;
    t.pending_ns = ns;
    t.pending_since = now;
}

/// Moves the CPU's pending piece (if any) to `BLAME`.
#[inline(always)]
pub fn flush(t: &mut Timeline) {
    if t.pending_ns != 0 {
        let key = t.pending;
        add_to_map(&key, t.pending_ns);
        t.pending_ns = 0;
    }
}

/// [`flush`] of `cpu`'s timeline: the CPU goes idle, so nothing stays held back.
#[inline(always)]
pub fn flush_cpu(cpu: u32) {
    if let Some(timeline) = CPU_TIMELINE.get_ptr_mut(cpu) {
        // SAFETY: the entry of `cpu`, written only under that CPU's run-queue lock.
        flush(unsafe { &mut *timeline });
    }
}

/// Adds `ns` to `key`'s pair in `BLAME`; if the map is full, to the victim's
/// unattributed pair.
#[inline(never)]
fn add_to_map(key: &BlameKey, ns: u64) {
    if add_to(key, ns) {
        return;
    }
    bump(&BLAME_DROPS, drop::MAP_FULL);
    let fallback = BlameKey {
        victim: key.victim,
        culprit: culprit::UNATTRIBUTED,
    };
    if !add_to(&fallback, ns) {
        bump(&BLAME_DROPS, drop::LOST);
    }
}

/// Adds `ns` to `key`'s entry, creating it; false if the map is full.
#[inline(always)]
fn add_to(key: &BlameKey, ns: u64) -> bool {
    if let Some(v) = BLAME.get_ptr_mut(key) {
        // SAFETY: a map value, 8-byte aligned; other CPUs add to it atomically too.
        unsafe { atomic_add_u64(v, ns) };
        return true;
    }
    match BLAME.insert(key, &ns, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        // Another CPU created it first (EEXIST): add to theirs.
        Err(_) => match BLAME.get_ptr_mut(key) {
            Some(v) => {
                // SAFETY: as above.
                unsafe { atomic_add_u64(v, ns) };
                true
            }
            None => false,
        },
    }
}

/// Overlap of `[from, to)` with the throttles in `spans[..n]`.
#[inline(always)]
fn throttled_within(spans: &[(u64, u64); THROTTLES], n: usize, from: u64, to: u64) -> u64 {
    let mut ns = 0;
    unroll!(i in 0..8 => {
        if i < n {
            let (a, b) = spans[i % THROTTLES];
            let (a, b) = (a.max(from), b.min(to));
            if b > a {
                ns += b - a;
            }
        }
    });
    ns.min(to - from)
}

/// Whether `id` is `victim` or one of `ancestors`.
#[inline(always)]
fn in_chain(id: u64, victim: u64, ancestors: &[u64; MAX_ANCESTORS]) -> bool {
    let mut found = id == victim;
    unroll!(i in 0..8 => {
        found |= ancestors[i % MAX_ANCESTORS] == id;
    });
    found
}

/// The throttles on `timeline` of `victim` (the cgroup of `task`) or one of its
/// ancestors that overlap `[since, now)`, into `spans`; how many.
#[inline(always)]
fn own_throttles(
    timeline: &Timeline,
    task: *const u8,
    victim: u64,
    since: u64,
    now: u64,
    spans: &mut [(u64, u64); THROTTLES],
) -> usize {
    let off = offsets();
    let ancestors: [u64; MAX_ANCESTORS] = cgroup_ancestors(task_cgroup(task, &off), &off);
    let mut n = 0;
    unroll!(i in 0..8 => {
        let t = timeline.throttles[i % THROTTLES];
        if t.cgroup_id != 0
            && t.to_ns > since
            && t.from_ns < now
            && in_chain(t.cgroup_id, victim, &ancestors)
        {
            spans[n % THROTTLES] = (t.from_ns, t.to_ns);
            n += 1;
        }
    });
    n
}

/// Splits the wait `[since, now)` of `task` (cgroup `victim`) on `cpu` over that
/// CPU's occupants, newest first; the pieces during which `victim` or one of its
/// ancestors was throttled there are its own quota.
#[inline(always)]
pub fn settle(victim: u64, task: *const u8, cpu: u32, since: u64, now: u64) {
    if now <= since {
        return;
    }
    let Some(timeline) = CPU_TIMELINE.get_ptr_mut(cpu) else {
        add_to_map(
            &BlameKey {
                victim,
                culprit: culprit::UNATTRIBUTED,
            },
            now - since,
        );
        return;
    };
    // SAFETY: the entry of `cpu`, whose run-queue lock is held (its switch, or a
    // migration away from it).
    let timeline = unsafe { &mut *timeline };
    // This wait's own throttles: of its cgroup or an ancestor, overlapping it
    // (none if every throttle here ended before it began: most waits).
    let mut spans = [(0u64, 0u64); THROTTLES];
    let n = if timeline.throttled_until > since {
        own_throttles(timeline, task, victim, since, now, &mut spans)
    } else {
        0
    };
    let mut own_quota = 0;
    let mut end = now;
    let mut covered = false;
    // Newest first, back to the segment in which the wait began.
    'walk: {
        unroll!(i in 0..8 => {
            let index = (timeline.head as usize + SEGMENTS - i) % SEGMENTS;
            let segment = timeline.segments[index];
            if segment.since_ns == 0 {
                break 'walk;
            }
            let start = segment.since_ns.max(since);
            if end > start {
                let quota = if n > 0 {
                    throttled_within(&spans, n, start, end)
                } else {
                    0
                };
                own_quota += quota;
                add(timeline, victim, segment.occupant, end - start - quota, now);
            }
            if segment.since_ns <= since {
                covered = true;
                break 'walk;
            }
            end = segment.since_ns;
        });
    }
    // Older than the timeline: its throttled part is still known (the throttles
    // are kept apart from the occupants), the rest is unattributed.
    if !covered && end > since {
        bump(&BLAME_DROPS, drop::TIMELINE_SHORT);
        let quota = if n > 0 {
            throttled_within(&spans, n, since, end)
        } else {
            0
        };
        own_quota += quota;
        add(
            timeline,
            victim,
            culprit::UNATTRIBUTED,
            end - since - quota,
            now,
        );
    }
    add(timeline, victim, culprit::OWN_QUOTA, own_quota, now);
}

/// The CPU and cgroup id of a `struct cfs_rq *` (`cfs_rq->rq->cpu`,
/// `cfs_rq->tg->css.cgroup`).
#[inline(always)]
fn cfs_rq_owner(cfs_rq: *const u8) -> Option<(u32, u64)> {
    let off = offsets();
    let rq = load::<*const u8>(cfs_rq, off.cfs_rq_rq);
    let cpu = load::<u32>(rq, off.rq_cpu);
    let tg = load::<*const u8>(cfs_rq, off.cfs_rq_tg);
    let cgroup = load::<*const u8>(tg, off.task_group_css_cgroup);
    Some((cpu, cgroup_id(cgroup, &off)?))
}

#[fexit(function = "throttle_cfs_rq")]
pub fn runq_throttle(ctx: FExitContext) -> i32 {
    let cfs_rq: *const u8 = ctx.arg(0);
    let throttled: u64 = ctx.arg(1);
    if throttled & 0xff == 0 {
        return 0;
    }
    let Some((cpu, group)) = cfs_rq_owner(cfs_rq) else {
        return 0;
    };
    let Some(timeline) = CPU_TIMELINE.get_ptr_mut(cpu) else {
        return 0;
    };
    // SAFETY: the entry of the cfs_rq's CPU, whose run-queue lock is held here.
    let t = unsafe { &mut *timeline };
    let now = now_ns();
    'place: {
        unroll!(i in 0..8 => {
            let open = &mut t.open[i % OPEN_THROTTLES];
            if open.cgroup_id == 0 {
                open.cgroup_id = group;
                open.from_ns = now;
                break 'place;
            }
        });
        bump(&BLAME_DROPS, drop::THROTTLE_UNTRACKED);
    }
    0
}

#[fentry(function = "unthrottle_cfs_rq")]
pub fn runq_unthrottle(ctx: FEntryContext) -> i32 {
    let cfs_rq: *const u8 = ctx.arg(0);
    let Some((cpu, group)) = cfs_rq_owner(cfs_rq) else {
        return 0;
    };
    let Some(timeline) = CPU_TIMELINE.get_ptr_mut(cpu) else {
        return 0;
    };
    // SAFETY: as in `runq_throttle`.
    let t = unsafe { &mut *timeline };
    let mut from_ns = 0;
    'find: {
        unroll!(i in 0..8 => {
            let open = &mut t.open[i % OPEN_THROTTLES];
            if open.cgroup_id == group {
                from_ns = open.from_ns;
                open.cgroup_id = 0;
                break 'find;
            }
        });
    }
    if from_ns == 0 {
        return 0;
    }
    let head = (t.throttle_head as usize + 1) % THROTTLES;
    let to_ns = now_ns();
    if let Some(slot) = t.throttles.get_mut(head) {
        *slot = Throttle {
            from_ns,
            to_ns,
            cgroup_id: group,
        };
    }
    t.throttle_head = head as u32;
    t.throttled_until = to_ns;
    0
}
