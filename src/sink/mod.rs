//! Sinks: Parquet encoding of the tables, the dead-letter topic and the alerts topic. The lake they are written to is
//! [`crate::lake`].

pub mod alerts;
pub mod dlq;
pub mod parquet;
