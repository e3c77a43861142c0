//! The bid journal.
