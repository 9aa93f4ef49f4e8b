//! The README's configuration reference is current, and it lists exactly
//! the variables the code reads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use parley_common::config::{ConfigError, Env, REQUIRED, UNSET, VarDoc};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `"PARLEY_…"` string literals in the non-test part of every `.rs` file under `dir`.
fn literals(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for piece in code.split("\"PARLEY_").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if !name.is_empty() && piece[name.len()..].starts_with('"') {
                        found.insert(format!("PARLEY_{name}"));
                    }
                }
            }
        }
    }
    found
}

fn names(vars: &[VarDoc]) -> BTreeSet<String> {
    vars.iter().map(|v| v.name.to_owned()).collect()
}

#[test]
fn readme_reference_is_current() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let sections = parley_docgen::sections().unwrap();
    let rendered = parley_docgen::render(&readme, &sections).unwrap();
    assert!(
        readme == rendered,
        "README.md's generated reference is stale: run `cargo run -p parley-docgen`"
    );
}

#[test]
fn every_variable_the_code_names_is_documented_and_nothing_else() {
    let binaries = parley_docgen::binaries();
    let documented: BTreeSet<String> = binaries.iter().flat_map(|(_, v)| names(v)).collect();
    let mut named = BTreeSet::new();
    for dir in [
        "services/runtime/src",
        "services/contracts/src",
        "services/common/src",
        "operator/src",
    ] {
        named.extend(literals(&root().join(dir)));
    }
    for (binary, vars) in &binaries {
        // The operator and sub-commands (`user mongodb-user`, whose
        // variables live in common) have no service directory of their own.
        if *binary == "operator" || binary.contains(' ') {
            continue;
        }
        let own = literals(&root().join("services").join(binary).join("src"));
        let listed = names(vars);
        let undocumented: Vec<_> = own.difference(&listed).collect();
        assert!(
            undocumented.is_empty(),
            "{binary} reads {undocumented:?} but its config::ENV does not list them"
        );
        named.extend(own);
    }
    let missing: Vec<_> = named.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "named in code, not documented: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&named).collect();
    assert!(
        stale.is_empty(),
        "documented, named nowhere in code: {stale:?}"
    );
}

/// Loads a binary's configuration; its `Debug` text on success, so two
/// loads can be compared.
type Loader = fn(&Env) -> Result<String, ConfigError>;
type Pairs = Vec<(String, String)>;

fn keys() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = parley_common::token::generate_ed25519_pem().unwrap();
    let private_path = dir.path().join("private.pem");
    let public_path = dir.path().join("public.pem");
    std::fs::write(&private_path, private).unwrap();
    std::fs::write(&public_path, public).unwrap();
    (
        dir,
        private_path.display().to_string(),
        public_path.display().to_string(),
    )
}

/// Each binary's loader, the smallest environment it starts with, and its reference.
fn loaders(private: &str, public: &str) -> Vec<(&'static str, Loader, Pairs)> {
    let stores = [
        ("PARLEY_MONGODB_URI", "mongodb://127.0.0.1:27017"),
        ("PARLEY_REDIS_URL", "redis://127.0.0.1:6379"),
        ("PARLEY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ];
    let with = |extra: &[(&str, &str)]| -> Pairs {
        stores
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    vec![
        (
            "user",
            |env| parley_user::config::Config::from_env(env).map(|c| format!("{c:?}")),
            with(&[
                ("PARLEY_JWT_PRIVATE_KEY_FILE", private),
                ("PARLEY_OTP_SECRET", "0123456789abcdef0123456789abcdef"),
            ]),
        ),
        (
            "chat",
            |env| parley_chat::config::Config::from_env(env).map(|c| format!("{c:?}")),
            with(&[
                ("PARLEY_JWT_PUBLIC_KEYS_FILE", public),
                ("PARLEY_USER_SERVICE_URL", "http://user:8080"),
            ]),
        ),
        (
            "mail",
            |env| parley_mail::config::Config::from_env(env).map(|c| format!("{c:?}")),
            with(&[
                ("PARLEY_SMTP_HOST", "smtp.example.com"),
                ("PARLEY_MAIL_FROM", "parley@example.com"),
            ]),
        ),
        (
            "operator",
            |env| parley_operator::settings::Settings::from_env(env).map(|c| format!("{c:?}")),
            Vec::new(),
        ),
        (
            "user mongodb-user",
            |env| {
                parley_common::mongo_user::ProvisionConfig::from_env(env).map(|c| format!("{c:?}"))
            },
            [
                (
                    "PARLEY_MONGODB_ADMIN_URI",
                    "mongodb://root:r@db/?authSource=admin",
                ),
                (
                    "PARLEY_MONGODB_URI",
                    "mongodb://app:a@db/?authSource=parley",
                ),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec(),
        ),
    ]
}

/// Variables Kubernetes or the Rust ecosystem define, read as fallbacks.
const CONVENTIONS: [&str; 3] = ["RUST_LOG", "POD_NAMESPACE", "HOSTNAME"];

#[test]
fn each_loader_reads_exactly_its_documented_variables() {
    let (_dir, private, public) = keys();
    let references = parley_docgen::binaries();
    for (binary, load, minimal) in loaders(&private, &public) {
        let reference = &references.iter().find(|(b, _)| *b == binary).unwrap().1;
        let env = Env::from_pairs(minimal.clone());
        parley_common::telemetry::filter(&env).unwrap();
        let defaults =
            load(&env).unwrap_or_else(|e| panic!("{binary} refused its minimal environment: {e}"));
        let read: BTreeSet<String> = env
            .looked_up()
            .into_iter()
            .filter(|n| !CONVENTIONS.contains(&n.as_str()))
            .collect();
        assert_eq!(read, names(reference), "{binary}: read vs documented");

        // Required ones really are required; documented defaults are accepted
        // as values and are the defaults.
        for var in reference {
            let without: Vec<_> = minimal
                .iter()
                .filter(|(k, _)| k != var.name)
                .cloned()
                .collect();
            let refused = load(&Env::from_pairs(without)).err().map(|e| e.var);
            if var.default == REQUIRED {
                assert_eq!(
                    refused.as_deref(),
                    Some(var.name),
                    "{binary}: {} is required",
                    var.name
                );
            } else {
                assert_eq!(refused, None, "{binary}: {} is optional", var.name);
            }
            if var.default != REQUIRED && var.default != UNSET {
                let mut explicit = minimal.clone();
                explicit.push((var.name.to_owned(), var.default.to_owned()));
                let env = Env::from_pairs(explicit);
                parley_common::telemetry::filter(&env).unwrap();
                let explicit = load(&env).unwrap_or_else(|e| {
                    panic!(
                        "{binary}: documented default of {} is refused: {e}",
                        var.name
                    )
                });
                // and it is the default: set or not, the same configuration
                assert_eq!(
                    explicit, defaults,
                    "{binary}: {}={:?} is documented as the default, but setting it changes the configuration",
                    var.name, var.default
                );
            }
        }
    }
}

#[test]
fn no_configuration_shows_a_secret() {
    let (_dir, private, public) = keys();
    let secrets = [
        ("PARLEY_MONGODB_URI", "mongodb://app:s3cret-mongo@db:27017/"),
        ("PARLEY_REDIS_URL", "redis://:s3cret-redis@cache:6379"),
        ("PARLEY_AMQP_URL", "amqp://parley:s3cret-amqp@mq:5672/%2f"),
        ("PARLEY_SMTP_USERNAME", "mailer"),
        ("PARLEY_SMTP_PASSWORD", "s3cret-smtp"),
        ("PARLEY_OTP_SECRET", "s3cret-otp-0123456789abcdef012345"),
    ];
    for (binary, load, minimal) in loaders(&private, &public) {
        if binary == "operator" || binary.contains(' ') {
            continue;
        }
        let mut env = minimal;
        for (var, value) in secrets {
            env.retain(|(k, _)| k != var);
            env.push((var.to_owned(), value.to_owned()));
        }
        let shown = load(&Env::from_pairs(env))
            .unwrap_or_else(|e| panic!("{binary} refused its environment: {e}"));
        assert!(
            !shown.contains("s3cret"),
            "{binary} shows a secret: {shown}"
        );
        if binary == "user" {
            assert!(shown.contains("otp_secret: [redacted]"), "{shown}");
        }
        if binary == "mail" {
            assert!(shown.contains("password: Some([redacted])"), "{shown}");
        }
    }
}
