//! `bridgechat`: the rendezvous server, the chat client, a demo and a load generator.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;

#[derive(Debug, Parser)]
#[command(name = "bridgechat", version, about = "A rendezvous server and peer-to-peer chat over TCP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load-generate against a server: register, bridge, chat; print rates and latencies.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bridgechat: {error}");
            ExitCode::FAILURE
        }
    }
}
