//! Gavel: a ping-post lead exchange.
//!
//! The crate is a sans-IO core (`http`, `auction`, `eligibility`, `caps`, `journal` codec)
//! wrapped by a thin I/O shell (`net`, `server`). See `docs/ARCHITECTURE.md`.

pub mod caps;
pub mod cli;
pub mod config;
pub mod eligibility;
pub mod http;
pub mod journal;
pub mod money;
pub mod sim;
