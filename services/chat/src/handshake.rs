//! What a Socket.IO handshake must show besides a valid token: where the
//! token may come from, and which web origins may open sockets.
//!
//! Tokens in URLs end up in proxy and access logs and browser history, so
//! the `?token=` query parameter is refused unless
//! `PARLEY_SOCKET_QUERY_TOKEN` enables it for old clients. Browsers send
//! `Origin` on every WebSocket and cross-origin request; when
//! `PARLEY_SOCKET_ALLOWED_ORIGINS` is set, a handshake from another origin
//! is refused (a page on another site cannot drive a user's socket). A
//! handshake without `Origin` comes from a non-browser client and is let
//! through: it has to present a token all the same.

use parley_common::config::{ConfigError, Env, UNSET, VarDoc};
use serde_json::Value;

/// The variables of the handshake policy.
pub const ENV: &[VarDoc] = &[
    VarDoc::new(
        "PARLEY_SOCKET_QUERY_TOKEN",
        "false",
        "also accept the Socket.IO token in the `?token=` query parameter (old clients; tokens in URLs reach logs)",
    ),
    VarDoc::new(
        "PARLEY_SOCKET_ALLOWED_ORIGINS",
        UNSET,
        "comma-separated web origins (`https://app.example.com`) allowed to open sockets; any origin when unset",
    ),
    VarDoc::new(
        "PARLEY_SOCKET_CONNECT_TIMEOUT_SECS",
        "10",
        "a connection that has not completed its Socket.IO handshake by then is closed (1 to 60)",
    ),
];

/// The handshake policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakePolicy {
    /// Accept `?token=` as well as `auth.token`.
    pub query_token: bool,
    /// Normalised origins allowed; `None`: any.
    pub allowed_origins: Option<Vec<String>>,
    /// How long an open connection may take to complete the handshake.
    pub connect_timeout: std::time::Duration,
}

impl Default for HandshakePolicy {
    fn default() -> Self {
        Self {
            query_token: false,
            allowed_origins: None,
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Pure: `scheme://host[:port]` in lower case, or `None` when `raw` is not
/// an http(s) origin.
pub fn normalise_origin(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    Some(url.origin().ascii_serialization().to_ascii_lowercase())
}

impl HandshakePolicy {
    /// Reads the policy; the first problem names its variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let query_token = env.parsed_or("PARLEY_SOCKET_QUERY_TOKEN", "true or false", false)?;
        let var = "PARLEY_SOCKET_ALLOWED_ORIGINS";
        let allowed_origins = match env.raw(var) {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        let normalised = normalise_origin(s).ok_or_else(|| {
                            ConfigError::new(
                                var,
                                format!("{s:?} is not an origin such as https://app.example.com"),
                            )
                        })?;
                        let bare = s.trim_end_matches('/');
                        if url::Url::parse(bare)
                            .is_ok_and(|u| u.path() != "/" && !u.path().is_empty())
                        {
                            return Err(ConfigError::new(
                                var,
                                format!("{s:?} has a path; an origin is scheme://host[:port]"),
                            ));
                        }
                        Ok(normalised)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let timeout_var = "PARLEY_SOCKET_CONNECT_TIMEOUT_SECS";
        let connect_timeout = env.seconds_or(timeout_var, Self::default().connect_timeout)?;
        if !(1..=60).contains(&connect_timeout.as_secs()) {
            return Err(ConfigError::new(timeout_var, "must be 1 to 60 seconds"));
        }
        Ok(Self {
            query_token,
            allowed_origins,
            connect_timeout,
        })
    }

    /// Pure: the token from the auth payload (`{token}`), or from the query
    /// string when the policy allows it.
    pub fn token(&self, auth: Option<&Value>, query: Option<&str>) -> Option<String> {
        if let Some(token) = auth.and_then(|a| a.get("token")).and_then(Value::as_str) {
            let token = token.strip_prefix("Bearer ").unwrap_or(token);
            return Some(token.to_owned());
        }
        if !self.query_token {
            return None;
        }
        url::form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    }

    /// Pure: whether a handshake with this `Origin` header may go on.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(allowed) = &self.allowed_origins else {
            return true;
        };
        match origin {
            None => true,
            Some(origin) => normalise_origin(origin).is_some_and(|o| allowed.contains(&o)),
        }
    }

    /// The refusal message for a missing token, naming the accepted places.
    pub fn missing_token(&self) -> &'static str {
        if self.query_token {
            "authentication required: pass auth.token or a token query parameter"
        } else {
            "authentication required: pass auth.token"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_tokens_only_when_enabled() {
        let off = HandshakePolicy::default();
        let on = HandshakePolicy {
            query_token: true,
            ..HandshakePolicy::default()
        };
        let q = Some("EIO=4&token=t%2B1&transport=polling");
        assert_eq!(off.token(None, q), None);
        assert_eq!(on.token(None, q).as_deref(), Some("t+1"));
        let auth = json!({"token": "Bearer abc"});
        assert_eq!(off.token(Some(&auth), q).as_deref(), Some("abc"));
        assert_eq!(on.token(None, Some("userId=1")), None);
        assert_eq!(on.token(Some(&json!({"userId": "x"})), None), None);
    }

    #[test]
    fn origins_are_checked_only_against_a_configured_list() {
        let any = HandshakePolicy::default();
        assert!(any.origin_allowed(Some("https://evil.example")));
        let env = Env::from_pairs([(
            "PARLEY_SOCKET_ALLOWED_ORIGINS",
            "https://App.example.com/, http://localhost:3000",
        )]);
        let listed = HandshakePolicy::from_env(&env).unwrap();
        assert!(listed.origin_allowed(Some("https://app.example.com")));
        assert!(listed.origin_allowed(Some("http://localhost:3000")));
        assert!(!listed.origin_allowed(Some("http://localhost:3001")));
        assert!(!listed.origin_allowed(Some("http://app.example.com")));
        assert!(!listed.origin_allowed(Some("https://app.example.com.evil.example")));
        assert!(!listed.origin_allowed(Some("null")));
        assert!(listed.origin_allowed(None));
    }

    #[test]
    fn bad_settings_name_their_variable() {
        for (var, value) in [
            ("PARLEY_SOCKET_ALLOWED_ORIGINS", "app.example.com"),
            ("PARLEY_SOCKET_ALLOWED_ORIGINS", "https://a.example/app"),
            ("PARLEY_SOCKET_QUERY_TOKEN", "yes"),
            ("PARLEY_SOCKET_CONNECT_TIMEOUT_SECS", "0"),
            ("PARLEY_SOCKET_CONNECT_TIMEOUT_SECS", "600"),
        ] {
            let err = HandshakePolicy::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{value}");
        }
        let defaults = HandshakePolicy::from_env(&Env::from_pairs::<&str, &str>([])).unwrap();
        assert_eq!(defaults, HandshakePolicy::default());
    }
}
