//! Own certificate authorities for the stores' TLS connections, against a
//! real TLS server: a throwaway CA signs the server's certificate, and the
//! connector trusts that CA through `PARLEY_REDIS_CA_FILE` (and only then).

use std::path::{Path, PathBuf};

use parley_common::cache::{Redis, RedisConfig};
use parley_common::config::Env;
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
