//! `gavel demo`: the exchange, a simulated buyer fleet and a lead stream in one process.

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Seconds of lead traffic.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

pub fn run(_args: &DemoArgs) -> i32 {
    0
}
