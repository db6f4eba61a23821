//! `cargo xtask <command>`: setup, build, run and test sendsight. Plain Rust, one
//! file per command. Every command that needs the toolchain runs `setup` first
//! (idempotent: a second run only checks).

mod bench;
mod build;
mod cmd;
mod fuzz;
mod man;
mod run;
mod schema;
mod setup;
mod test;
mod toolchain;
mod vmtest;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "sendsight's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a command needs (toolchains, LLVM, bpf-linker; test tools only
    /// for test/vmtest/bench); fast when already done. Says what it installs on
    /// stderr, nothing on stdout; never removes a package.
    Setup {
        /// The command to prepare for.
        #[arg(long = "for", value_enum, default_value = "all")]
        purpose: setup::Purpose,
    },
    /// Write the man pages and shell completions, generated from the agent's
    /// command-line definition, into DIR (man1/, completions/).
    /// Write schema/*.schema.json, generated from the types that serialize the
    /// agent's lines (checked in; a test fails when they differ).
    Schema,
    Man {
        #[arg(long, default_value = "target/man", value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// Build the agent (with its embedded eBPF object).
    Build {
        /// Optimized build.
        #[arg(long)]
        release: bool,
    },
    /// Build and run the agent on this host: `cargo xtask run -- --duration 30s`.
    Run {
        /// Arguments for `sendsight run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests and the end-to-end suite (needs root), then the
    /// kernel matrix (`vmtest --kernel all`) unless --no-vm or SENDSIGHT_NO_VM=1.
    Test {
        /// Skip the kernel matrix under qemu (also: SENDSIGHT_NO_VM=1).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure overhead, throughput, loss and memory (BENCHMARKS.md); needs root.
    Bench {
        /// Shorter load phases (2 s instead of 5 s).
        #[arg(long)]
        quick: bool,
    },
    /// The kernel matrix: boot Debian's 5.10, 6.1 and 6.12 kernels under qemu (TCG), run
    /// `sendsight check` and the end-to-end tests inside, print the table.
    Vmtest {
        /// 5.10, 6.1, 6.12 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// End-to-end test binaries (tests/tests/*.rs names) to run in each guest
        /// (default: all of them).
        #[arg(long, value_delimiter = ',', default_values_t = vmtest::default_tests())]
        tests: Vec<String>,
        /// Limit per kernel, in seconds (boot to power-off); over it the kernel fails.
        #[arg(long, default_value_t = vmtest::DEFAULT_TIMEOUT_S)]
        timeout: u64,
        /// Instead of the tests: the syscall tax inside each guest (`sendsight-bench
        /// --tax-only`: nothing, floor, the agent, the agent on the raw sys_exit,
        /// alternating rounds), printed and written to target/vmtest/tax-<kernel>.md.
        #[arg(long)]
        bench_tax: bool,
    },
}

fn main() -> anyhow::Result<()> {
    use setup::Purpose;
    let cli = Cli::parse();
    match cli.command {
        Command::Setup { purpose } => setup::setup(purpose),
        Command::Schema => schema::schema(),
        Command::Man { out } => {
            setup::setup(Purpose::Run)?;
            man::man(&out)
        }
        Command::Build { release } => {
            setup::setup(Purpose::Run)?;
            build::build(release)
        }
        Command::Run { args } => {
            setup::setup(Purpose::Run)?;
            run::run(&args)
        }
        Command::Test { no_vm, args } => {
            let no_vm = no_vm || std::env::var_os("SENDSIGHT_NO_VM").is_some_and(|v| v == "1");
            setup::setup(if no_vm {
                Purpose::HostTest
            } else {
                Purpose::Test
            })?;
            test::test(&args, !no_vm)
        }
        Command::Bench { quick } => {
            setup::setup(Purpose::Bench)?;
            bench::bench(quick)
        }
        Command::Vmtest {
            kernel,
            tests,
            timeout,
            bench_tax,
        } => {
            setup::setup(Purpose::Vmtest)?;
            vmtest::vmtest(&vmtest::Options {
                series: vmtest::series(&kernel)?,
                tests: if bench_tax { Vec::new() } else { tests },
                timeout: std::time::Duration::from_secs(timeout),
                bench_tax,
            })
        }
    }
}
