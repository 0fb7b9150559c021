//! End-to-end tests: real OpenBao, the Auth0 emulator, the service, and the real grpcurl.

mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod auth0_credentials;
mod batch;
mod catalogue;
mod cli;
mod concurrency;
mod cost;
mod durability;
mod emulator;
mod emulator_credentials;
mod errors;
mod exhaustion;
mod grpcurl;
mod health;
mod history;
mod identity;
mod inventory;
mod key_kills;
mod key_rotation;
mod leak;
mod logs;
mod metrics;
mod operator;
mod operator_fleet;
mod own_credentials;
mod pki;
mod rate_groups;
mod refusals;
mod rollback;
mod rotate;
mod schedule;
mod schedule_staged;
mod security;
mod self_rotation;
mod staged;
mod traces;
mod validation;
mod vault_auth;
mod vault_keys;
mod webhook;
mod zero_downtime;
