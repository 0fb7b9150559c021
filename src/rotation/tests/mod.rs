//! The protocol against in-memory ports: each test states what a user would notice.

mod ages;
mod fake_keys;
mod fakes;
mod history;
mod idempotency;
mod inventory;
mod keys;
mod notify;
mod protocol;
mod reconciler;
mod schedule;
mod staged;
