//! The labeling app: annotators rank model responses in a browser and the preferences land in
//! Postgres (or an embedded SQLite file), ready for the reward model and DPO. See `README.md` for
//! the routes and the JSON contract.

pub mod agreement;
pub mod commands;
pub mod db;
pub mod error;
pub mod export;
pub mod import;
pub mod judgment;
pub mod markdown;
pub mod project_export;
pub mod serve;
pub mod store;
pub mod web;
