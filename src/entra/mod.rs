//! Native-auth protocol knowledge: which endpoint a request is for, its parameters, what the
//! responses teach about flows and method channels, and the Entra error shape every answer of
//! ours uses.

pub mod answer;
pub mod classify;
pub mod error;
pub mod label;
pub mod learn;
pub mod params;
pub mod send;
pub mod settings;
