//! cgscope: per-container kernel performance agent. The binary (`main.rs`) only
//! parses the command line and wires these modules together.

pub mod api;
pub mod btf;
pub mod cgroup;
pub mod check;
pub mod config;
pub mod histogram;
pub mod host;
pub mod metadata;
pub mod net;
pub mod probes;
pub mod sample;
pub mod sampler;
pub mod table;
pub mod window;
