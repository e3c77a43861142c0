//! Which buyers may receive a lead: their filters, hours of operation, campaigns and consent
//! verticals, combined with pause state and caps from [`crate::caps`] into a per-campaign index.
//!
//! Pure and sans-IO: the time is always passed in.

pub mod filters;
pub mod hours;
pub mod index;

pub use filters::{FilterError, Filters};
pub use hours::{Schedule, ScheduleError};
pub use index::{BuyerRules, CampaignRules, Matcher, RulesError, Skip};
