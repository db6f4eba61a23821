//! `cargo xtask <command>`: setup, build, run and test sendsight. Plain Rust, one
//! file per command. Every command that needs the toolchain runs `setup` first
//! (idempotent: a second run only checks).

mod build;
mod cmd;
mod run;
mod setup;
mod test;
mod toolchain;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "sendsight's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install everything the build and the tests need (toolchains, LLVM, bpf-linker,
    /// nftables...); fast when already done.
    Setup,
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
    /// Run every test: unit tests and the end-to-end suite (needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::setup(),
        Command::Build { release } => {
            setup::setup()?;
            build::build(release)
        }
        Command::Run { args } => {
            setup::setup()?;
            run::run(&args)
        }
        Command::Test { args } => {
            setup::setup()?;
            test::test(&args)
        }
    }
}
