//! The SMTP transport: pooled connections built from [`SmtpConfig`].

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, Tokio1Executor};

use crate::config::{SmtpConfig, TlsMode};

/// A pooled async SMTP transport.
pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Builds the pooled transport (no network I/O).
pub fn transport(config: &SmtpConfig) -> Result<Transport, lettre::transport::smtp::Error> {
    let tls = match config.tls {
        TlsMode::None => Tls::None,
        TlsMode::StartTls => Tls::Required(TlsParameters::new(config.host.clone())?),
        TlsMode::Tls => Tls::Wrapper(TlsParameters::new(config.host.clone())?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
        .port(config.port)
        .tls(tls)
        .timeout(Some(std::time::Duration::from_secs(10)));
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
    }
    Ok(builder.build())
}

/// Readiness: the SMTP server answers a fresh connection.
pub async fn ping(transport: &Transport) -> Result<(), String> {
    match transport.test_connection().await {
        Ok(true) => Ok(()),
        Ok(false) => Err("server refused the connection".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}
