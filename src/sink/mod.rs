//! Sinks: Parquet encoding of the tables and the dead-letter topic. The lake they are written to is
//! [`crate::lake`].

pub mod dlq;
pub mod parquet;
