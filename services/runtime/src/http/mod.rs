//! The HTTP edge every binary shares: the JSON error answer, request
//! metrics and the server with its operational routes.

pub mod api_error;
pub mod metrics;
pub mod server;
