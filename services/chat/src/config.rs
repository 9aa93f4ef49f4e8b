//! The user service's configuration, from environment variables.

use parley_common::amqp::AmqpConfig;
use parley_common::cache::RedisConfig;
use parley_common::config::{ConfigError, Env, ServerConfig};
use parley_common::mongo::MongoConfig;

/// Everything the chat service reads at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listener and shutdown grace.
    pub server: ServerConfig,
    /// Chats and messages live here.
    pub mongo: MongoConfig,
    /// Presence, rate limits and cross-replica traffic live here.
    pub redis: RedisConfig,
    /// Events go here.
    pub amqp: AmqpConfig,
}

impl Config {
    /// Reads and validates every variable; the first problem names its variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env)?,
            mongo: MongoConfig::from_env(env)?,
            redis: RedisConfig::from_env(env)?,
            amqp: AmqpConfig::from_env(env)?,
        })
    }
}
