//! Own certificate authorities for the stores' TLS connections, against a
//! real TLS server: a throwaway CA signs the server's certificate, and the
//! connector trusts that CA through `PARLEY_REDIS_CA_FILE` (and only then).

use std::path::{Path, PathBuf};

use parley_common::config::Env;
use parley_common::redis::{Redis, RedisConfig};
use parley_testkit::RedisServer;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A CA and a server certificate it signed for 127.0.0.1, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let server_key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
            .signed_by(&server_key, &ca)?;
        std::fs::write(dir.path().join("ca.crt"), ca.pem())?;
        std::fs::write(dir.path().join("server.crt"), server.pem())?;
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem())?;
        // a second, unrelated CA: trusting it must not help
        let other = CertifiedIssuer::self_signed(
            {
                let mut p = CertificateParams::new(Vec::<String>::new())?;
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p
            },
            KeyPair::generate()?,
        )?;
        std::fs::write(dir.path().join("other-ca.crt"), other.pem())?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn config(url: &str, ca: Option<&Path>) -> anyhow::Result<RedisConfig> {
    let mut pairs = vec![("PARLEY_REDIS_URL".to_owned(), url.to_owned())];
    if let Some(ca) = ca {
        pairs.push((
            "PARLEY_REDIS_CA_FILE".to_owned(),
            ca.to_string_lossy().into_owned(),
        ));
    }
    Ok(RedisConfig::from_env(&Env::from_pairs(pairs))?)
}

async fn round_trip(config: &RedisConfig) -> Result<String, String> {
    let redis = Redis::connect(config).map_err(|e| e.to_string())?;
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("SET")
        .arg("tls-check")
        .arg("through the own CA")
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("GET")
        .arg("tls-check")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn redis_over_tls_trusts_the_ca_of_its_ca_file_and_no_other() -> anyhow::Result<()> {
    // as every service's entry does before any connection
    parley_common::tls::install_crypto_provider();
    let pki = Pki::new()?;
    let server = RedisServer::start_tls(&pki.path("server.crt"), &pki.path("server.key")).await?;
    let url = server.url();
    assert!(url.starts_with("rediss://"), "{url}");
    // with the CA that signed the server's certificate: a round trip
    let trusted = config(&url, Some(&pki.path("ca.crt")))?;
    assert_eq!(
        round_trip(&trusted).await.map_err(anyhow::Error::msg)?,
        "through the own CA"
    );
    // with another CA, or with the system's: the handshake is refused
    for (what, ca) in [
        ("an unrelated CA", Some(pki.path("other-ca.crt"))),
        ("the system's CAs", None),
    ] {
        let refused = round_trip(&config(&url, ca.as_deref())?).await;
        assert!(refused.is_err(), "{what} accepted the server: {refused:?}");
    }
    Ok(())
}

#[test]
fn a_ca_file_needs_a_tls_url_and_a_certificate() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let plain = config("redis://127.0.0.1:6379", Some(&pki.path("ca.crt")))
        .expect_err("a CA for a plain URL");
    assert!(
        plain.to_string().starts_with("PARLEY_REDIS_CA_FILE:"),
        "{plain}"
    );
    assert!(plain.to_string().contains("rediss://"), "{plain}");
    let not_pem = config("rediss://127.0.0.1:6379", Some(&pki.path("server.key")))
        .expect_err("a key is no certificate");
    assert!(
        not_pem.to_string().starts_with("PARLEY_REDIS_CA_FILE:"),
        "{not_pem}"
    );
    // AMQP: a CA file for a plain amqp:// URL
    let env = Env::from_pairs([
        (
            "PARLEY_AMQP_URL".to_owned(),
            "amqp://127.0.0.1:5672/%2f".to_owned(),
        ),
        (
            "PARLEY_AMQP_CA_FILE".to_owned(),
            pki.path("ca.crt").to_string_lossy().into_owned(),
        ),
    ]);
    let err = parley_common::amqp::AmqpConfig::from_env(&env).expect_err("plain amqp");
    assert!(
        err.to_string().starts_with("PARLEY_AMQP_CA_FILE") && err.to_string().contains("amqps://"),
        "{err}"
    );
    // MongoDB: the CA file turns TLS on, whatever the URI says
    let env = Env::from_pairs([
        ("PARLEY_MONGODB_URI", "mongodb://127.0.0.1:27017/"),
        (
            "PARLEY_MONGODB_CA_FILE",
            &pki.path("ca.crt").to_string_lossy(),
        ),
    ]);
    let mongo = parley_common::mongo::MongoConfig::from_env(&env)?;
    assert_eq!(
        mongo.ca.map(|c| c.path),
        Some(pki.path("ca.crt")),
        "the MongoDB CA file is read"
    );
    Ok(())
}

/// A bare TLS listener on loopback with the server certificate the [`Pki`]'s
/// CA signed: it reports each handshake's outcome, then hangs up. Stands in
/// for a TLS RabbitMQ or MongoDB, which are not at hand in TLS: the
/// connectors' handshake is real, only the protocol after it is missing.
struct TlsListener {
    port: u16,
    outcomes: tokio::sync::mpsc::UnboundedReceiver<Result<(), String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    async fn start(pki: &Pki) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(pki.path("server.crt"))?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(pki.path("server.key"))?;
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, outcomes) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let outcome = acceptor
                        .accept(stream)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string());
                    let _ = tx.send(outcome);
                });
            }
        });
        Ok(Self {
            port,
            outcomes,
            task,
        })
    }

    /// The outcome of the first handshake a client attempts.
    async fn first_handshake(&mut self) -> anyhow::Result<Result<(), String>> {
        tokio::time::timeout(std::time::Duration::from_secs(15), self.outcomes.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the listener stopped"))
    }
}

async fn amqp_handshake(pki: &Pki, ca: Option<&Path>) -> anyhow::Result<Result<(), String>> {
    let mut listener = TlsListener::start(pki).await?;
    let mut pairs = vec![(
        "PARLEY_AMQP_URL".to_owned(),
        format!("amqps://127.0.0.1:{}/%2f", listener.port),
    )];
    if let Some(ca) = ca {
        pairs.push((
            "PARLEY_AMQP_CA_FILE".to_owned(),
            ca.to_string_lossy().into_owned(),
        ));
    }
    let config = parley_common::amqp::AmqpConfig::from_env(&Env::from_pairs(pairs))?;
    let amqp = parley_common::amqp::Amqp::start(config, "tls-ca-test");
    let outcome = listener.first_handshake().await;
    amqp.close().await;
    outcome
}

#[tokio::test]
async fn amqps_handshake_trusts_the_ca_of_its_ca_file() -> anyhow::Result<()> {
    parley_common::tls::install_crypto_provider();
    let pki = Pki::new()?;
    let trusted = amqp_handshake(&pki, Some(&pki.path("ca.crt"))).await?;
    assert_eq!(trusted, Ok(()), "the handshake with PARLEY_AMQP_CA_FILE");
    for (what, ca) in [
        ("an unrelated CA", Some(pki.path("other-ca.crt"))),
        ("the system's CAs", None),
    ] {
        let refused = amqp_handshake(&pki, ca.as_deref()).await?;
        assert!(refused.is_err(), "{what} accepted the server");
    }
    Ok(())
}

async fn mongo_handshake(pki: &Pki, ca: Option<&Path>) -> anyhow::Result<Result<(), String>> {
    let mut listener = TlsListener::start(pki).await?;
    // without a CA file, TLS comes from the URI and the system's CAs
    let tls = if ca.is_some() { "" } else { "&tls=true" };
    let mut pairs = vec![(
        "PARLEY_MONGODB_URI".to_owned(),
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=20000{tls}",
            listener.port
        ),
    )];
    if let Some(ca) = ca {
        pairs.push((
            "PARLEY_MONGODB_CA_FILE".to_owned(),
            ca.to_string_lossy().into_owned(),
        ));
    }
    let config = parley_common::mongo::MongoConfig::from_env(&Env::from_pairs(pairs))?;
    let mongo = parley_common::mongo::Mongo::connect(&config, "tls-ca-test").await?;
    let ping = tokio::spawn(async move { mongo.ping().await });
    let outcome = listener.first_handshake().await;
    ping.abort();
    outcome
}

#[tokio::test]
async fn mongodb_ca_file_turns_tls_on_and_trusts_its_ca() -> anyhow::Result<()> {
    parley_common::tls::install_crypto_provider();
    let pki = Pki::new()?;
    // no tls=true in the URI: the CA file alone turns TLS on
    let trusted = mongo_handshake(&pki, Some(&pki.path("ca.crt"))).await?;
    assert_eq!(trusted, Ok(()), "the handshake with PARLEY_MONGODB_CA_FILE");
    for (what, ca) in [
        ("an unrelated CA", Some(pki.path("other-ca.crt"))),
        ("the system's CAs", None),
    ] {
        let refused = mongo_handshake(&pki, ca.as_deref()).await?;
        assert!(refused.is_err(), "{what} accepted the server");
    }
    Ok(())
}

#[test]
fn a_mongodb_ca_file_contradicting_the_uri_names_the_variable() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let ca = pki.path("ca.crt").to_string_lossy().into_owned();
    for uri in [
        "mongodb://127.0.0.1:27017/?tls=false",
        "mongodb://127.0.0.1:27017/?tlsCAFile=/etc/ssl/other.pem",
    ] {
        let env = Env::from_pairs([
            ("PARLEY_MONGODB_URI", uri),
            ("PARLEY_MONGODB_CA_FILE", ca.as_str()),
        ]);
        let err = parley_common::mongo::MongoConfig::from_env(&env).expect_err(uri);
        assert!(
            err.to_string().starts_with("PARLEY_MONGODB_CA_FILE"),
            "{err}"
        );
    }
    let env = Env::from_pairs([
        ("PARLEY_MONGODB_URI", "mongodb://127.0.0.1:27017/"),
        ("PARLEY_MONGODB_CA_FILE", "/nonexistent/ca.pem"),
    ]);
    let err = parley_common::mongo::MongoConfig::from_env(&env).expect_err("missing file");
    assert!(
        err.to_string().starts_with("PARLEY_MONGODB_CA_FILE")
            && err.to_string().contains("/nonexistent/ca.pem"),
        "{err}"
    );
    Ok(())
}
