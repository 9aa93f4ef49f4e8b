//! Where RabbitMQ is: `PARLEY_AMQP_*`.

use crate::config::{ConfigError, Env, REQUIRED, UNSET, VarDoc};
use crate::tls::CaBundle;

/// Where RabbitMQ is.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// `amqp://` or `amqps://` URL including the vhost (`PARLEY_AMQP_URL`).
    pub url: String,
    /// CAs trusted for an `amqps://` URL besides the system's
    /// (`PARLEY_AMQP_CA_FILE`).
    pub ca: Option<CaBundle>,
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &crate::config::redact_url(&self.url))
            .field("ca", &self.ca)
            .finish()
    }
}

impl AmqpConfig {
    /// The variables [`AmqpConfig::from_env`] reads.
    pub const ENV: &'static [VarDoc] = &[
        VarDoc::new(
            "PARLEY_AMQP_URL",
            REQUIRED,
            "`amqp://` or `amqps://` (TLS) URL including the vhost",
        ),
        VarDoc::new(
            "PARLEY_AMQP_CA_FILE",
            UNSET,
            "PEM file of CAs trusted for an `amqps://` URL, besides the system's",
        ),
    ];

    /// Reads `PARLEY_AMQP_URL` (required).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let var = "PARLEY_AMQP_URL";
        let url = env.required_url(var, &["amqp", "amqps"])?;
        url.as_str()
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| ConfigError::new(var, format!("is not a valid AMQP URI ({e})")))?;
        let ca = CaBundle::from_env(env, "PARLEY_AMQP_CA_FILE")?;
        if ca.is_some() && url.scheme() != "amqps" {
            return Err(ConfigError::new(
                "PARLEY_AMQP_CA_FILE",
                "is set, so PARLEY_AMQP_URL must be an amqps:// (TLS) URL",
            ));
        }
        Ok(Self {
            url: url.to_string(),
            ca,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_other_schemes() {
        let env = Env::from_pairs([("PARLEY_AMQP_URL", "http://127.0.0.1")]);
        assert_eq!(
            AmqpConfig::from_env(&env).unwrap_err().var,
            "PARLEY_AMQP_URL"
        );
        let env = Env::from_pairs([("PARLEY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")]);
        assert!(AmqpConfig::from_env(&env).is_ok());
    }
}
