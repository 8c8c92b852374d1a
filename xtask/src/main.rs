//! Developer tasks: `cargo xtask setup | build | run | test | fuzz | vm | node | bench | lab`.

mod bench;
mod bench_agents;
mod bench_probes;
mod bench_vm;
mod cmd;
#[cfg(test)]
mod containerfile;
mod fuzz;
mod kernels;
mod lab;
mod node;
mod report;
mod setup;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: pinned nightly + rust-src, bpf-linker, Debian packages.
    Setup,
    /// Install only what building needs (nightly + rust-src, bpf-linker) and build
    /// the release binary (`target/release/cgscope`): the image's build stage.
    Build,
    /// Set up if needed, build, and run the agent with its defaults (`cgscope run`).
    Run {
        /// Extra arguments for `cgscope run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// fmt check, clippy, unit and integration tests here, then the VM kernels.
    Test {
        /// Skip the VM kernels.
        #[arg(long)]
        no_vm: bool,
    },
    /// Run each libFuzzer target (every parser of untrusted input) for N seconds;
    /// fails on any crash, panic or hang.
    Fuzz(fuzz::FuzzArgs),
    /// Run the integration tests inside qemu on other kernels (pure cgroup v2).
    Vm(vm::VmArgs),
    /// Boot a real node (Debian bookworm, systemd, containerd, Docker, Podman) in
    /// qemu and run the node tests there.
    Node(node::NodeArgs),
    /// Benchmarks; prints a table with ratios against a reference.
    Bench(bench::BenchArgs),
    /// Build a playbook's scenario (real cgroups and workloads) and hold it until
    /// Ctrl-C; without a name, list them.
    Lab { scenario: Option<String> },
}

/// An error ends the run with its cause chain on one line and no backtrace: CI keeps
/// only the tail of the output, and a backtrace of `main` would fill it.
fn main() {
    if let Err(e) = run(Cli::parse().task) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::build_toolchain(&mut Vec::new())?;
            let bin = cmd::build_release()?;
            println!("{}", bin.display());
            Ok(())
        }
        Task::Run { args } => {
            setup::run()?;
            let bin = cmd::build_release()?;
            let mut all = vec!["run".to_owned()];
            all.extend(args);
            cmd::exec(&bin, &all)
        }
        Task::Test { no_vm } => test::run(!no_vm),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Vm(args) => vm::run(&args),
        Task::Node(args) => node::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Lab { scenario } => lab::run(scenario.as_deref()),
    }
}
