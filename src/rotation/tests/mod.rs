//! The protocol against in-memory ports: each test states what a user would notice.

mod fakes;
mod history;
mod idempotency;
mod inventory;
mod notify;
mod protocol;
mod reconciler;
mod schedule;
mod staged;
