//! The services' own MongoDB user: least privilege instead of root.
//!
//! An operator-managed MongoDB has one root user. The services never get
//! its password: each of their pods first runs `parley-user mongodb-user`
//! (an init container) with the root URL in `PARLEY_MONGODB_ADMIN_URI` and
//! the services' own URL in `PARLEY_MONGODB_URI`. It makes sure the user of
//! that URL exists in parley's database with the password of that URL and
//! only `readWrite` on that database, then exits; the service container
//! then connects with the services' URL alone. Running it again (every pod
//! start, several pods at once, a changed password) converges on the same
//! user.

use std::time::Duration;

use mongodb::Client;
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, ConnectionString};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env, REQUIRED, VarDoc};
use crate::mongo::MongoConfig;

/// The one role the services' user holds, on parley's database only.
pub const APP_ROLE: &str = "readWrite";

/// MongoDB's error code for `createUser` of a user that exists.
const USER_EXISTS: i32 = 51003;

/// The user the services connect as.
#[derive(Clone, PartialEq, Eq)]
pub struct AppUser {
    /// Database the user is defined in and may read and write.
    pub database: String,
    /// User name, from the services' connection string.
    pub username: String,
    /// Password, from the services' connection string.
    pub password: String,
}

impl std::fmt::Debug for AppUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppUser")
            .field("database", &self.database)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a connection string cannot name the services' user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppUserError {
    /// The string does not parse.
    #[error("is not a valid MongoDB connection string ({0})")]
    Invalid(String),
    /// No user name and password in it.
    #[error("names no user and password")]
    NoCredential,
    /// The user would be looked up in another database than it may use.
    #[error("authenticates against {auth_source:?}, but the user is made in database {database:?}")]
    AuthSource {
        /// The string's `authSource`.
        auth_source: String,
        /// parley's database.
        database: String,
    },
}

impl AppUser {
    /// The user of the services' connection string `uri`, for `database`.
    /// Its `authSource` (when given) must be `database`, where the user is made.
    pub fn from_uri(uri: &str, database: &str) -> Result<Self, AppUserError> {
        let parsed =
            ConnectionString::parse(uri).map_err(|e| AppUserError::Invalid(e.kind.to_string()))?;
        let credential = parsed.credential.ok_or(AppUserError::NoCredential)?;
        let (Some(username), Some(password)) = (credential.username, credential.password) else {
            return Err(AppUserError::NoCredential);
        };
        if let Some(auth_source) = credential.source.filter(|s| s != database) {
            return Err(AppUserError::AuthSource {
                auth_source,
                database: database.to_owned(),
            });
        }
        Ok(Self {
            database: database.to_owned(),
            username,
            password,
        })
    }

    /// The roles the user holds: [`APP_ROLE`] on its database, nothing else.
    pub fn roles(&self) -> Vec<Document> {
        vec![doc! { "role": APP_ROLE, "db": &self.database }]
    }

    /// The command that makes the user, when it does not exist yet.
    pub fn create_command(&self) -> Document {
        doc! {
            "createUser": &self.username,
            "pwd": &self.password,
            "roles": self.roles(),
        }
    }

    /// The command that gives an existing user this password and exactly these roles.
    pub fn update_command(&self) -> Document {
        doc! {
            "updateUser": &self.username,
            "pwd": &self.password,
            "roles": self.roles(),
        }
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The user was made.
    Created,
    /// The user existed; its password and roles were set.
    Updated,
}

/// Makes `user` exist with its password and only its roles, using `admin`
/// (a client with the right to manage users). Safe to run from several pods
/// at once: a create that loses the race becomes an update.
pub async fn ensure(admin: &Client, user: &AppUser) -> Result<Outcome, mongodb::error::Error> {
    let db = admin.database(&user.database);
    let info = db
        .run_command(doc! { "usersInfo": { "user": &user.username, "db": &user.database } })
        .await?;
    let exists = info.get_array("users").is_ok_and(|users| !users.is_empty());
    if !exists {
        match db.run_command(user.create_command()).await {
            Ok(_) => return Ok(Outcome::Created),
            Err(e) if matches!(&*e.kind, ErrorKind::Command(c) if c.code == USER_EXISTS) => {}
            Err(e) => return Err(e),
        }
    }
    db.run_command(user.update_command()).await?;
    Ok(Outcome::Updated)
}

/// Settings of `parley-user mongodb-user`.
#[derive(Clone)]
pub struct ProvisionConfig {
    /// Root (user-admin) connection string, `PARLEY_MONGODB_ADMIN_URI`.
    pub admin_uri: String,
    /// The services' user, from `PARLEY_MONGODB_URI` and `PARLEY_MONGODB_DATABASE`.
    pub user: AppUser,
    /// How long to keep trying while MongoDB is not there yet
    /// (`PARLEY_MONGODB_PROVISION_TIMEOUT_SECS`).
    pub timeout: Duration,
    /// The CAs trusted for MongoDB's certificate on the admin connection too
    /// (`PARLEY_MONGODB_CA_FILE`).
    pub ca: Option<crate::tls::CaBundle>,
}

impl std::fmt::Debug for ProvisionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionConfig")
            .field("user", &self.user)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ProvisionConfig {
    /// The variables [`ProvisionConfig::from_env`] reads, besides [`MongoConfig::ENV`].
    pub const ENV: &'static [VarDoc] = &[
        VarDoc::new(
            "PARLEY_MONGODB_ADMIN_URI",
            REQUIRED,
            "`mongodb user` only: connection string of a user that may manage users (the managed MongoDB's root)",
        ),
        VarDoc::new(
            "PARLEY_MONGODB_PROVISION_TIMEOUT_SECS",
            "120",
            "`mongodb user` only: how long to wait for MongoDB before giving up",
        ),
    ];

    /// Every variable `parley-user mongodb-user` reads, for the configuration reference.
    pub fn reference() -> Vec<VarDoc> {
        [crate::telemetry::ENV, MongoConfig::ENV, Self::ENV].concat()
    }

    /// Reads the admin URL, the services' URL and database, and the timeout.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let var = "PARLEY_MONGODB_ADMIN_URI";
        let admin_uri = env.required(var)?;
        ConnectionString::parse(&admin_uri).map_err(|e| {
            ConfigError::new(
                var,
                format!("is not a valid MongoDB connection string ({})", e.kind),
            )
        })?;
        let mongo = MongoConfig::from_env(env)?;
        let user = AppUser::from_uri(&mongo.uri, &mongo.database)
            .map_err(|e| ConfigError::new("PARLEY_MONGODB_URI", e.to_string()))?;
        let timeout = env.seconds_or(
            "PARLEY_MONGODB_PROVISION_TIMEOUT_SECS",
            Duration::from_secs(120),
        )?;
        Ok(Self {
            admin_uri,
            user,
            timeout,
            ca: mongo.ca,
        })
    }
}

/// Why provisioning gave up.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The admin connection string could not be used.
    #[error("invalid MongoDB admin options: {0}")]
    Options(#[source] mongodb::error::Error),
    /// MongoDB kept failing until the deadline; the last error.
    #[error("could not provision the MongoDB user within {timeout:?}: {last}")]
    GaveUp {
        /// The configured deadline.
        timeout: Duration,
        /// The last error MongoDB gave.
        #[source]
        last: mongodb::error::Error,
    },
    /// Stopped by a signal before it was done.
    #[error("stopped before the MongoDB user was provisioned")]
    Cancelled,
}

/// Connects with the admin URL and runs [`ensure`] until it succeeds, the
/// timeout passes, or `cancel` fires. Retries back off from 250 ms to 5 s.
pub async fn run(config: ProvisionConfig, cancel: CancellationToken) -> Result<(), ProvisionError> {
    let mut options = ClientOptions::parse(&config.admin_uri)
        .await
        .map_err(ProvisionError::Options)?;
    options.app_name = Some("parley-mongodb-user".to_owned());
    crate::mongo::trust(&mut options, config.ca.as_ref());
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(3));
    options
        .connect_timeout
        .get_or_insert(Duration::from_secs(2));
    let admin = Client::with_options(options).map_err(ProvisionError::Options)?;
    let deadline = tokio::time::Instant::now() + config.timeout;
    let mut waits = crate::retry::backoff();
    loop {
        let error = match ensure(&admin, &config.user).await {
            Ok(outcome) => {
                tracing::info!(
                    database = %config.user.database,
                    user = %config.user.username,
                    role = APP_ROLE,
                    ?outcome,
                    "services' MongoDB user provisioned"
                );
                return Ok(());
            }
            Err(error) => error,
        };
        let pause = waits.next().unwrap_or(crate::retry::MAX_DELAY);
        if tokio::time::Instant::now() + pause > deadline {
            return Err(ProvisionError::GaveUp {
                timeout: config.timeout,
                last: error,
            });
        }
        tracing::warn!(error = %error, retry_in_ms = pause.as_millis() as u64, "MongoDB not ready for user provisioning");
        tokio::select! {
            () = cancel.cancelled() => return Err(ProvisionError::Cancelled),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_comes_from_the_services_url() {
        let user = AppUser::from_uri(
            "mongodb://parley-app:s3cret@db:27017/?authSource=chat",
            "chat",
        )
        .unwrap();
        assert_eq!(user.username, "parley-app");
        assert_eq!(user.password, "s3cret");
        assert_eq!(
            user.roles(),
            vec![doc! { "role": "readWrite", "db": "chat" }]
        );
        assert!(!format!("{user:?}").contains("s3cret"));
        assert_eq!(
            user.create_command().get_str("createUser").unwrap(),
            "parley-app"
        );
        assert_eq!(
            user.update_command().get_str("updateUser").unwrap(),
            "parley-app"
        );
    }

    #[test]
    fn urls_that_cannot_name_the_user_are_refused() {
        assert_eq!(
            AppUser::from_uri("mongodb://db:27017/", "parley"),
            Err(AppUserError::NoCredential)
        );
        assert!(matches!(
            AppUser::from_uri("mongodb://a:b@db:27017/?authSource=admin", "parley"),
            Err(AppUserError::AuthSource { .. })
        ));
        assert!(matches!(
            AppUser::from_uri("http://nope", "parley"),
            Err(AppUserError::Invalid(_))
        ));
    }

    #[test]
    fn config_names_the_variable() {
        let env = Env::from_pairs([("PARLEY_MONGODB_URI", "mongodb://a:b@db/?authSource=parley")]);
        let err = ProvisionConfig::from_env(&env).unwrap_err();
        assert!(
            err.to_string().contains("PARLEY_MONGODB_ADMIN_URI"),
            "{err}"
        );
        let env = Env::from_pairs([
            (
                "PARLEY_MONGODB_ADMIN_URI",
                "mongodb://root:r@db/?authSource=admin",
            ),
            ("PARLEY_MONGODB_URI", "mongodb://db/"),
        ]);
        let err = ProvisionConfig::from_env(&env).unwrap_err();
        assert!(err.to_string().contains("PARLEY_MONGODB_URI"), "{err}");
        let env = Env::from_pairs([
            (
                "PARLEY_MONGODB_ADMIN_URI",
                "mongodb://root:r@db/?authSource=admin",
            ),
            ("PARLEY_MONGODB_URI", "mongodb://a:b@db/?authSource=parley"),
        ]);
        let config = ProvisionConfig::from_env(&env).unwrap();
        assert_eq!(config.user.database, "parley");
        assert_eq!(config.timeout, Duration::from_secs(120));
        assert!(!format!("{config:?}").contains("root:r"));
    }
}
