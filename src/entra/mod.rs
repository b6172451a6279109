//! Native-auth protocol knowledge: which endpoint a request is for, its parameters, and the
//! Entra error shape every answer of ours uses.

pub mod classify;
pub mod error;
pub mod params;
