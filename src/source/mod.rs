//! Sources: where events come from.

pub mod kafka;
