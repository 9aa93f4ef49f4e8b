//! The HTTP edge the services share: bearer-token authentication.

pub mod auth;
