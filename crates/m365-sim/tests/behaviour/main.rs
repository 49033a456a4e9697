//! m365-sim's own behaviour tests: each test names the documented Microsoft behaviour it reproduces
//! (docs/microsoft-facts.md sections in brackets).

mod binary;
mod common;
mod control;
mod delta;
mod directory;
mod exchange;
mod exchange_variance;
mod faults;
mod folder_source;
mod groups;
mod guests;
mod hidden;
mod identity;
mod mailbox;
mod subscriptions;
mod throttling;
