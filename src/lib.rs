//! Gavel: a ping-post lead exchange.
//!
//! The crate is a sans-IO core (`http`, `auction`, `lead`, `eligibility`, `caps`, `journal`
//! codec) wrapped by a thin I/O shell (`net`). `sim` holds the mock buyer fleet and the load
//! generator used by `gavel demo`, the tests and the operator tools. See `docs/ARCHITECTURE.md`.

pub mod adapter;
pub mod admin;
pub mod auction;
pub mod buyer_check;
pub mod caps;
pub mod cli;
pub mod compliance;
pub mod config;
pub mod demo;
pub mod eligibility;
pub mod http;
pub mod journal;
pub mod lead;
pub mod money;
pub mod net;
pub mod out;
pub mod sim;
pub mod stats;
#[cfg(test)]
mod test_rng;
pub mod text;
