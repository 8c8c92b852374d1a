//! The BTF reader (agent/src/btf.rs). The kernel's own BTF is trusted in practice,
//! but the reader must fail with an error, never a panic or a hang, on any blob (a
//! truncated read, a kernel newer than the reader). The names looked up are those of
//! the seed blobs (`s`, `a`, `b`, `c`, tracepoint `t`) and two the probes use.
#![no_main]

use cgscope::btf::Btf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    for (strukt, member) in [
        ("s", "a"),
        ("s", "b"),
        ("s", "c"),
        ("s", "d"),
        ("task_struct", "pid"),
        ("sock_common", "skc_state"),
    ] {
        if let Ok(m) = btf.member(strukt, member) {
            let _ = btf.offset_of(strukt, member, m.size);
        }
    }
    for arg in 0..4 {
        let _ = btf.tracepoint_arg_is_pointer("t", arg);
    }
});
