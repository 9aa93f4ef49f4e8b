//! parley-user: passwordless login, tokens and profiles.
//!
//! `parley-user mongodb-user` instead makes sure the services' own MongoDB
//! user exists with only `readWrite` on parley's database, then exits (the
//! init container of every pod that uses an operator-managed MongoDB; see
//! `parley_common::mongo_user`).

use parley_common::mongo_user::{ProvisionConfig, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("mongodb-user") {
        return parley_common::entry::main(
            "parley-user mongodb-user",
            ProvisionConfig::from_env,
            run,
        )
        .await;
    }
    parley_common::entry::main(
        "parley-user",
        parley_user::config::Config::from_env,
        parley_user::run,
    )
    .await
}
