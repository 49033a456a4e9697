//! The runner's ports implemented over the m365 room's clients: [`graph::GraphSource`] (the source directory through
//! Graph, over a [`transport::JsonTransport`]) and [`exchange::ExchangeContacts`] (mail contacts through the one
//! Exchange client), [`guests::GuestUsers`] (guest users through Graph and Exchange). [`m365::M365Connector`] is the connector, in production and against the simulator alike
//! ([`simulated`] hands it the simulator's CA and secrets). [`shapes`] holds the pure translations of wire shapes.

pub mod exchange;
pub mod graph;
pub mod guests;
pub mod m365;
pub mod mailbox_folder;
pub mod shapes;
#[cfg(feature = "demo")]
pub mod simulated;
pub mod transport;
