//! Integration tests, one binary: each file is a module, so the whole stack links once instead of
//! once per file (DataFusion makes every link slow and every test binary large).
//!
//! Tests that need a real broker start Tansu (`HAOCHAPING_TANSU_BIN`, installed by `.ci/run`);
//! [`support`] holds what they share.

mod support;

mod alerts;
mod analytics;
mod broker_ingest;
mod cases;
mod cli;
mod closed_loop;
mod consumer_group;
mod crash;
mod deploy;
mod dlq;
mod fuzz_decode;
mod metrics;
mod mock_cluster;
mod object_store;
mod offline;
mod outage;
mod queries;
mod readers;
mod schema;
mod two_writers;
