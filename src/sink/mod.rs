//! Sinks: the lake (Parquet through `object_store`) and the dead-letter topic.

pub mod dlq;
pub mod lake;
pub mod parquet;
