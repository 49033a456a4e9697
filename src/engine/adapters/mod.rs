//! The runner's ports implemented over HTTP: [`graph::GraphSource`] (the source directory through Graph) and
//! [`exchange::ExchangeContacts`] (mail contacts through Exchange `InvokeCommand`), both over a
//! [`transport::JsonTransport`] (the m365 room's `ApiClient` in production: allowlist, tokens, retries, counters).
//! [`m365::M365Connector`] is the production connector. [`shapes`] holds the pure translations of wire shapes; [`direct`] and [`simulated`] connect the engine to an
//! in-process m365-sim (demo, tests, benchmarks).

pub mod direct;
pub mod exchange;
pub mod graph;
pub mod m365;
pub mod shapes;
pub mod simulated;
pub mod transport;
