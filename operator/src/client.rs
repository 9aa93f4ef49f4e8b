//! The operator's Kubernetes clients. Every request carries timeouts, so an
//! unreachable or hung API server makes a call fail instead of hanging a
//! reconcile (or a lease renewal) forever.

use std::time::Duration;

use kube::{Client, Config};

/// Connecting to the API server gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A request fails when no byte of its answer arrives for this long.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Sending a request gives up after this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One client for requests, one for watches.
#[derive(Clone)]
pub struct Clients {
    /// Gets, applies, status writes, Events and the Lease: read timeout on.
    pub requests: Client,
    /// Watches, which may rightly stay silent for minutes: no read timeout;
    /// kube-runtime's watcher ends a watch that stays idle past its
    /// server-side timeout and resumes it.
    pub watches: Client,
}

/// The configuration of the request client: `config` with every timeout set.
pub fn for_requests(mut config: Config) -> Config {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.write_timeout = Some(WRITE_TIMEOUT);
    // count the read timeout from the request, not from when a pooled connection went idle
    config.reset_reader_on_write = true;
    config
}

/// The configuration of the watch client: connect and write timeouts only.
pub fn for_watches(mut config: Config) -> Config {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = None;
    config.write_timeout = Some(WRITE_TIMEOUT);
    config
}

impl Clients {
    /// Both clients from one configuration (KUBECONFIG or in-cluster).
    pub fn new(config: Config) -> Result<Self, kube::Error> {
        Ok(Self {
            requests: Client::try_from(for_requests(config.clone()))?,
            watches: Client::try_from(for_watches(config))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_time_out_and_watches_only_on_connect() {
        let base = Config::new("https://127.0.0.1:6443".parse().unwrap());
        let requests = for_requests(base.clone());
        assert_eq!(requests.connect_timeout, Some(CONNECT_TIMEOUT));
        assert_eq!(requests.read_timeout, Some(READ_TIMEOUT));
        assert!(requests.reset_reader_on_write);
        let watches = for_watches(base);
        assert_eq!(watches.connect_timeout, Some(CONNECT_TIMEOUT));
        assert_eq!(watches.read_timeout, None);
    }
}
