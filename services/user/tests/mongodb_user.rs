//! `parley-user mongodb-user` against a MongoDB that requires authentication:
//! the services' own user is made with `readWrite` on parley's database and
//! nothing more, re-running converges (also from several pods at once, and
//! with a new password), and the user service runs on that user alone.

mod support;

use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use parley_testkit::MongoServer;
use support::{BIN, Stack, login};

const ROOT: (&str, &str) = ("root", "root-password-0123");
const APP: &str = "parley-app";

struct Server {
    mongo: MongoServer,
    database: String,
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        let mut mongo = MongoServer::start().await?;
        mongo.require_auth(ROOT.0, ROOT.1).await?;
        Ok(Self {
            mongo,
            database: format!("t_{}", parley_testkit::short_id()),
        })
    }

    fn admin_uri(&self) -> String {
        self.mongo.uri_as(ROOT.0, ROOT.1, "admin")
    }

    fn app_uri(&self, password: &str) -> String {
        self.mongo.uri_as(APP, password, &self.database)
    }

    /// Runs `parley-user mongodb-user`; its exit code and output.
    async fn provision(&self, password: &str) -> anyhow::Result<(Option<i32>, String)> {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(BIN)
                .arg("mongodb-user")
                .env_clear()
                .env("PARLEY_MONGODB_ADMIN_URI", self.admin_uri())
                .env("PARLEY_MONGODB_URI", self.app_uri(password))
                .env("PARLEY_MONGODB_DATABASE", &self.database)
                .env("PARLEY_MONGODB_PROVISION_TIMEOUT_SECS", "20")
                .kill_on_drop(true)
                .output(),
        )
        .await??;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.code(), text))
    }

    async fn app_client(&self, password: &str) -> anyhow::Result<mongodb::Client> {
        Ok(mongodb::Client::with_uri_str(self.app_uri(password)).await?)
    }
}

fn unauthorized(result: Result<impl std::fmt::Debug, mongodb::error::Error>) -> bool {
    match result {
        Err(e) => match &*e.kind {
            ErrorKind::Command(c) => c.code == 13,
            ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => w.code == 13,
            ErrorKind::Authentication { .. } => true,
            _ => false,
        },
        Ok(_) => false,
    }
}

#[tokio::test]
async fn the_services_user_may_use_its_database_and_nothing_else() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (code, out) = server.provision("app-password-1").await?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("provisioned"), "{out}");
    assert!(
        !out.contains("app-password-1") && !out.contains(ROOT.1),
        "{out}"
    );

    let app = server.app_client("app-password-1").await?;
    let own = app.database(&server.database);
    own.collection::<Document>("users")
        .insert_one(doc! { "email": "ann@example.com" })
        .await?;
    own.collection::<Document>("users")
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "email": 1 })
                .build(),
        )
        .await?;
    assert_eq!(
        own.collection::<Document>("users")
            .count_documents(doc! {})
            .await?,
        1
    );

    // Another database, the user list and user management are out of reach.
    let other = app.database("somebody_else");
    assert!(unauthorized(
        other
            .collection::<Document>("things")
            .insert_one(doc! { "x": 1 })
            .await
    ));
    assert!(unauthorized(
        app.database("admin")
            .collection::<Document>("system.users")
            .find_one(doc! {})
            .await
    ));
    assert!(unauthorized(
        own.run_command(doc! {
            "createUser": "mallory",
            "pwd": "mallory-password",
            "roles": [{ "role": "root", "db": "admin" }],
        })
        .await
    ));
    Ok(())
}

#[tokio::test]
async fn running_again_converges_and_takes_a_new_password() -> anyhow::Result<()> {
    let server = Server::start().await?;
    // Several pods start at once on a fresh database.
    let runs = futures::future::join_all((0..3).map(|_| server.provision("first-password"))).await;
    for run in runs {
        let (code, out) = run?;
        assert_eq!(code, Some(0), "{out}");
    }
    server
        .app_client("first-password")
        .await?
        .database(&server.database)
        .run_command(doc! { "listCollections": 1 })
        .await?;

    // The generated password changed (a new Secret): the next pod start sets it.
    let (code, out) = server.provision("second-password").await?;
    assert_eq!(code, Some(0), "{out}");
    let old = server.app_client("first-password").await?;
    assert!(unauthorized(
        old.database(&server.database)
            .run_command(doc! { "listCollections": 1 })
            .await
    ));
    server
        .app_client("second-password")
        .await?
        .database(&server.database)
        .run_command(doc! { "listCollections": 1 })
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_wrong_admin_password_fails_within_the_timeout() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let out = tokio::process::Command::new(BIN)
        .arg("mongodb-user")
        .env_clear()
        .env(
            "PARLEY_MONGODB_ADMIN_URI",
            server.mongo.uri_as(ROOT.0, "wrong", "admin"),
        )
        .env("PARLEY_MONGODB_URI", server.app_uri("x"))
        .env("PARLEY_MONGODB_DATABASE", &server.database)
        .env("PARLEY_MONGODB_PROVISION_TIMEOUT_SECS", "2")
        .kill_on_drop(true)
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("could not provision"), "{text}");
    assert!(!text.contains("wrong@"), "{text}");
    Ok(())
}

#[tokio::test]
async fn the_user_service_runs_on_the_least_privileged_user() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (code, out) = server.provision("app-password-2").await?;
    assert_eq!(code, Some(0), "{out}");
    let stack = Stack::new()
        .await?
        .with("PARLEY_MONGODB_URI", server.app_uri("app-password-2"))
        .with("PARLEY_MONGODB_DATABASE", server.database.clone());
    let mut mailbox = stack.mailbox().await?;
    let service = stack.service().await?;
    let (user, token) = login(&service, &mut mailbox, "least@example.com").await?;
    assert_eq!(user["email"], "least@example.com");
    let (status, me) = support::call(
        &service,
        reqwest::Method::GET,
        "/api/v1/me",
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{me}");
    Ok(())
}
