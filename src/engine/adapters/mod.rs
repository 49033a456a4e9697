//! The runner's ports implemented over the real Microsoft clients (`crate::m365`): Graph for the source
//! directory, Exchange `InvokeCommand` for mail contacts. [`shapes`] holds the pure translations of wire shapes.

pub mod shapes;
