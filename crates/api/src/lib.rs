//! Courier's REST API: accepts jobs (committed to PostgreSQL, then dispatched to Redis),
//! serves their status, executions and queue depth, health and the OpenAPI document.

pub mod auth;
pub mod error;
pub mod extract;
pub mod intake;
pub mod openapi;
pub mod requests;
pub mod routes;
pub mod scheduler;
pub mod startup;
pub mod state;
pub mod views;

pub use startup::Application;
