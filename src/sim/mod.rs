//! Simulated counterparties for demos, integration tests and capacity planning.
//!
//! - [`buyer`]: a fleet of mock buyer endpoints speaking the buyer protocol (PROTOCOL.md §2) on
//!   loopback, with configurable latency, bid, no-bid and reject behaviour, and counters and body
//!   logs that tests inspect.
//! - [`load`]: an open-loop lead generator for the seller API (PROTOCOL.md §1) that measures
//!   latency from each lead's intended send time, so a slow exchange cannot hide its stalls
//!   (coordinated omission).
//! - [`relay`]: the fan-out floor: the exchange's sockets, HTTP framing and event loop with none
//!   of its engine, accounted in the exchange's terms, to show what the machine alone costs a
//!   lead.
//!
//! Both parse HTTP/1.1 themselves ([`wire`]) so that they exercise the exchange's codec from the
//! outside instead of sharing its assumptions.

pub mod buyer;
pub mod dist;
pub mod load;
pub mod relay;
pub mod wire;

pub use buyer::{BuyerSpec, Fleet, FleetOptions, Kind, Reply, Responder};
pub use dist::{BidDist, Dist, Rng};
pub use load::{LeadTemplate, LoadReport, LoadSpec, Percentiles};

#[cfg(test)]
mod tests;
