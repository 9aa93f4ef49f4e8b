//! MongoDB connector.
//!
//! The official driver reconnects by itself: its monitors watch the servers
//! and the pool is rebuilt after an outage. We only keep timeouts short, so
//! an outage shows as a quick error (and a 503) rather than a hung request.

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::{ClientOptions, ConnectionString, Tls, TlsOptions};
use mongodb::{Client, Database};

use mongodb::error::{ErrorKind, WriteFailure};

use crate::config::{ConfigError, Env, REQUIRED, UNSET, VarDoc};
use crate::tls::CaBundle;

/// Where MongoDB is and which database parley uses.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoConfig {
    /// Connection string (`PARLEY_MONGODB_URI`), `mongodb://` or `mongodb+srv://`.
    pub uri: String,
    /// Database name (`PARLEY_MONGODB_DATABASE`, default `parley`).
    pub database: String,
    /// The CAs trusted for the server's certificate in place of the
    /// system's; turns TLS on (`PARLEY_MONGODB_CA_FILE`).
    pub ca: Option<CaBundle>,
}

impl std::fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &crate::config::redact_url(&self.uri))
            .field("database", &self.database)
            .field("ca", &self.ca)
            .finish()
    }
}

impl MongoConfig {
    /// The variables [`MongoConfig::from_env`] reads.
    pub const ENV: &'static [VarDoc] = &[
        VarDoc::new(
            "PARLEY_MONGODB_URI",
            REQUIRED,
            "`mongodb://` or `mongodb+srv://` connection string (TLS and auth as URI options)",
        ),
        VarDoc::new("PARLEY_MONGODB_DATABASE", "parley", "database name"),
        VarDoc::new(
            "PARLEY_MONGODB_CA_FILE",
            UNSET,
            "PEM file of the CAs trusted for MongoDB's certificate, in place of the system's; turns TLS on",
        ),
    ];

    /// Reads `PARLEY_MONGODB_URI` (required) and `PARLEY_MONGODB_DATABASE`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let var = "PARLEY_MONGODB_URI";
        let uri = env.required(var)?;
        let parsed = ConnectionString::parse(&uri).map_err(|e| {
            ConfigError::new(
                var,
                format!("is not a valid MongoDB connection string ({})", e.kind),
            )
        })?;
        let database = env.string_or("PARLEY_MONGODB_DATABASE", "parley");
        if database.contains(['/', '\\', '.', ' ', '"', '$']) || database.len() > 63 {
            return Err(ConfigError::new(
                "PARLEY_MONGODB_DATABASE",
                format!("{database:?} is not a valid database name"),
            ));
        }
        let ca = CaBundle::from_env(env, "PARLEY_MONGODB_CA_FILE")?;
        if ca.is_some() {
            check_uri_tls(&parsed.tls)?;
        }
        Ok(Self { uri, database, ca })
    }
}

/// A CA file with a URI that turns TLS off, or names a CA file of its own,
/// is a contradiction: a configuration error naming `PARLEY_MONGODB_CA_FILE`.
fn check_uri_tls(tls: &Option<Tls>) -> Result<(), ConfigError> {
    let var = "PARLEY_MONGODB_CA_FILE";
    match tls {
        Some(Tls::Disabled) => Err(ConfigError::new(
            var,
            "is set, but PARLEY_MONGODB_URI turns TLS off (tls=false)",
        )),
        Some(Tls::Enabled(options)) if options.ca_file_path.is_some() => Err(ConfigError::new(
            var,
            "is set, but PARLEY_MONGODB_URI names a CA file too (tlsCAFile); keep one",
        )),
        _ => Ok(()),
    }
}

/// Turns TLS on in `options` and trusts `ca` for the server's certificate,
/// keeping the URI's other TLS options (a client certificate, for one).
pub(crate) fn trust(options: &mut ClientOptions, ca: Option<&CaBundle>) {
    let Some(ca) = ca else {
        return;
    };
    match &mut options.tls {
        Some(Tls::Enabled(tls)) => tls.ca_file_path = Some(ca.path.clone()),
        _ => {
            options.tls = Some(Tls::Enabled(
                TlsOptions::builder().ca_file_path(ca.path.clone()).build(),
            ));
        }
    }
}

/// Errors building the MongoDB client.
#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    /// The connection string could not be turned into client options.
    #[error("invalid MongoDB options: {0}")]
    Options(#[source] mongodb::error::Error),
}

/// A MongoDB client and parley's database.
#[derive(Clone, Debug)]
pub struct Mongo {
    client: Client,
    db: Database,
}

impl Mongo {
    /// Builds the client. No network I/O: the driver connects in the background.
    pub async fn connect(config: &MongoConfig, app_name: &str) -> Result<Self, MongoError> {
        let mut options = ClientOptions::parse(&config.uri)
            .await
            .map_err(MongoError::Options)?;
        options.app_name = Some(app_name.to_owned());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(3));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(2));
        options.heartbeat_freq.get_or_insert(Duration::from_secs(2));
        trust(&mut options, config.ca.as_ref());
        let client = Client::with_options(options).map_err(MongoError::Options)?;
        let db = client.database(&config.database);
        Ok(Self { client, db })
    }

    /// parley's database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The underlying client (for sessions and transactions).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Readiness: a `ping` round trip.
    pub async fn ping(&self) -> Result<(), String> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(|e| e.kind.to_string())
    }
}

/// True when a driver error says MongoDB could not be reached (it heals
/// when MongoDB returns), false for any other failure.
pub fn is_unavailable(error: &mongodb::error::Error) -> bool {
    matches!(
        *error.kind,
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
    ) || error.contains_label("RetryableWriteError")
        || error.contains_label("NetworkError")
}

/// What [`find_or_insert`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<T> {
    /// The document was already there (or a concurrent insert won).
    Existing(T),
    /// This call inserted it.
    Created(T),
}

impl<T> Found<T> {
    /// The document, however it came.
    pub fn into_inner(self) -> T {
        match self {
            Self::Existing(t) | Self::Created(t) => t,
        }
    }
}

/// The one document of `collection` matching `filter`, inserted as `new()`
/// when missing. A unique index on the filtered fields decides races: when
/// a concurrent insert wins, this answers with its document.
pub async fn find_or_insert<T>(
    collection: &mongodb::Collection<T>,
    filter: mongodb::bson::Document,
    new: impl FnOnce() -> T,
) -> Result<Found<T>, mongodb::error::Error>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync,
{
    if let Some(existing) = collection.find_one(filter.clone()).await? {
        return Ok(Found::Existing(existing));
    }
    let created = new();
    match collection.insert_one(&created).await {
        Ok(_) => Ok(Found::Created(created)),
        Err(error) if is_duplicate_key(&error) => collection
            .find_one(filter)
            .await?
            .map(Found::Existing)
            .ok_or_else(|| {
                mongodb::error::Error::custom(format!(
                    "{}: the document vanished after a duplicate key",
                    collection.name()
                ))
            }),
        Err(error) => Err(error),
    }
}

/// True for a unique-index violation (E11000).
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    matches!(&*error.kind, ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == 11000)
        || matches!(&*error.kind, ErrorKind::Command(e) if e.code == 11000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_is_validated() {
        let env = Env::from_pairs([("PARLEY_MONGODB_URI", "http://nope")]);
        assert_eq!(
            MongoConfig::from_env(&env).unwrap_err().var,
            "PARLEY_MONGODB_URI"
        );
        let env = Env::from_pairs([("PARLEY_MONGODB_URI", "mongodb://a:1,b:2/?replicaSet=rs0")]);
        let cfg = MongoConfig::from_env(&env).unwrap();
        assert_eq!(cfg.database, "parley");
        let env = Env::from_pairs([
            ("PARLEY_MONGODB_URI", "mongodb://127.0.0.1"),
            ("PARLEY_MONGODB_DATABASE", "a.b"),
        ]);
        assert_eq!(
            MongoConfig::from_env(&env).unwrap_err().var,
            "PARLEY_MONGODB_DATABASE"
        );
    }
}
