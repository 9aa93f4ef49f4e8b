//! Certificate authorities the services trust for one store's TLS
//! connection, in place of the system's: `PARLEY_MONGODB_CA_FILE`,
//! `PARLEY_REDIS_CA_FILE` and `PARLEY_AMQP_CA_FILE` name PEM files (the
//! operator mounts an external store's `caSecret` there).

use std::path::PathBuf;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::{ConfigError, Env};

/// A PEM bundle of CA certificates, read and checked at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its PEM text, holding at least one certificate.
    pub pem: String,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .finish()
    }
}

impl CaBundle {
    /// The bundle the file named by `var` holds; `None` when `var` is unset.
    /// An unreadable file, or one without a PEM certificate, is an error
    /// naming `var` and the path.
    pub fn from_env(env: &Env, var: &str) -> Result<Option<Self>, ConfigError> {
        let Some(path) = env.raw(var) else {
            return Ok(None);
        };
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::new(var, format!("cannot read {path}: {e}")))?;
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::new(var, format!("{path} is not PEM: {e}")))?;
        if certificates.is_empty() {
            return Err(ConfigError::new(
                var,
                format!("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
            ));
        }
        Ok(Some(Self {
            path: PathBuf::from(path),
            pem,
        }))
    }
}

/// Makes ring rustls's process-wide crypto provider, once: the services
/// link both of rustls's providers through their drivers, and rustls picks
/// none by itself then.
pub fn install_crypto_provider() {
    // an error means one is installed already, which is all we need
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(var: &str, contents: Option<&str>) -> (Env, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        if let Some(contents) = contents {
            std::fs::write(&path, contents).unwrap();
        }
        let env = Env::from_pairs([(var, path.to_string_lossy().into_owned())]);
        (env, dir)
    }

    #[test]
    fn unset_is_none_and_bad_files_name_the_variable() {
        let var = "PARLEY_REDIS_CA_FILE";
        assert_eq!(
            CaBundle::from_env(&Env::from_pairs::<&str, &str>([]), var),
            Ok(None)
        );
        let (env, _dir) = env_with(var, None);
        let missing = CaBundle::from_env(&env, var).unwrap_err();
        assert_eq!(missing.var, var);
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        let (env, _dir) = env_with(var, Some("not a certificate\n"));
        let empty = CaBundle::from_env(&env, var).unwrap_err();
        assert_eq!(empty.var, var);
        assert!(empty.to_string().contains("no PEM certificate"), "{empty}");
    }
}
