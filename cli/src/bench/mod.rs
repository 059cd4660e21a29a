//! `bridgechat bench`: a load generator on mio (skeleton).

use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {}

pub fn run(args: BenchArgs) -> Result<(), String> {
    let _ = args;
    Err("bench is not implemented yet".into())
}
