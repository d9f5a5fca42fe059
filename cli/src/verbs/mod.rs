//! The CLI verbs: each a thin client of one part of the admin API (through
//! `crate::client::Admin`) that prints through `crate::output`.

pub mod cron;
pub mod dlq;
pub mod fnconfig;
pub mod image;
pub mod invocations;
pub mod logs;
pub mod manage;
pub mod queue;
pub mod registry;
pub mod run;
