//! Why a chat request or event was refused, in the domain's own words.
//!
//! The domain, store and service layers return [`ChatError`]; the two
//! edges translate it once: `http.rs` into a status and a JSON body, and
//! `realtime` into a Socket.IO error with a stable [`ChatError::code`].

/// A refusal of the chat rules, limits or dependencies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The input is malformed; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The caller's token does not name a user.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The thing asked for does not exist, or the caller may not know it does.
    #[error("{0}")]
    NotFound(&'static str),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The state changed under the request; trying again can succeed.
    #[error("{0}")]
    Conflict(&'static str),
    /// The input is larger than allowed (an image, or the storage quota).
    #[error("{0}")]
    TooLarge(String),
    /// The input's type is not one the service takes.
    #[error("{0}")]
    UnsupportedType(&'static str),
    /// A per-user or per-socket limit holds for `retry_after_secs` more seconds.
    #[error("{message}")]
    RateLimited {
        /// What was limited, safe to show.
        message: String,
        /// Seconds until trying again can succeed.
        retry_after_secs: u64,
    },
    /// The service is at capacity (its bounded queues or pools are full);
    /// the request was refused, not queued.
    #[error("{message}")]
    Busy {
        /// What is full, safe to show.
        message: &'static str,
        /// Seconds until trying again can succeed.
        retry_after_secs: u64,
    },
    /// A dependency did not answer.
    #[error("{dependency} is unavailable: {detail}")]
    Unavailable {
        /// Which one.
        dependency: &'static str,
        /// What went wrong (logged, never shown).
        detail: String,
    },
    /// A failure of the service itself (logged, never detailed to clients).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ChatError {
    /// A malformed input.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// A dependency that did not answer.
    pub fn unavailable(dependency: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            dependency,
            detail: detail.to_string(),
        }
    }

    /// A failure of the service itself.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    /// The stable machine-readable code clients see on Socket.IO (and can
    /// rely on across releases); see the README's error table.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::NotFound(_) => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedType(_) => "unsupported_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::Busy { .. } => "busy",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The message a client may see: never a dependency's or the
    /// service's own failure detail.
    pub fn public_message(&self) -> String {
        match self {
            Self::Unavailable { dependency, .. } => {
                format!("{dependency} is unavailable, try again shortly")
            }
            Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    /// Seconds after which trying again can succeed, for the refusals that
    /// have one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited {
                retry_after_secs, ..
            }
            | Self::Busy {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::Unavailable { .. } => Some(1),
            _ => None,
        }
    }

    /// True for the service's own failures and its dependencies' (the
    /// request may succeed later without the client changing anything).
    pub fn is_server_side(&self) -> bool {
        matches!(
            self,
            Self::Busy { .. } | Self::Unavailable { .. } | Self::Internal(_)
        )
    }
}

impl From<mongodb::error::Error> for ChatError {
    fn from(error: mongodb::error::Error) -> Self {
        if parley_common::mongo::is_unavailable(&error) {
            Self::unavailable("mongodb", error)
        } else {
            Self::internal(error)
        }
    }
}

impl From<parley_common::auth::NotAUser> for ChatError {
    fn from(_: parley_common::auth::NotAUser) -> Self {
        Self::Unauthenticated("token subject is not a user id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_details_stay_private() {
        let cases = [
            (ChatError::invalid("chatId is not a valid id"), "invalid"),
            (ChatError::Unauthenticated("x"), "unauthenticated"),
            (ChatError::NotFound("no such chat"), "not_found"),
            (ChatError::Forbidden("no"), "forbidden"),
            (ChatError::Conflict("again"), "conflict"),
            (ChatError::TooLarge("big".into()), "too_large"),
            (ChatError::UnsupportedType("png"), "unsupported_type"),
            (
                ChatError::RateLimited {
                    message: "slow".into(),
                    retry_after_secs: 3,
                },
                "rate_limited",
            ),
            (
                ChatError::Busy {
                    message: "full",
                    retry_after_secs: 1,
                },
                "busy",
            ),
            (ChatError::unavailable("redis", "refused"), "unavailable"),
            (ChatError::internal("bug"), "internal"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
        }
        let down = ChatError::unavailable("mongodb", "connection refused at 10.1.2.3");
        assert_eq!(
            down.public_message(),
            "mongodb is unavailable, try again shortly"
        );
        assert_eq!(down.retry_after_secs(), Some(1));
        assert!(down.is_server_side());
        assert_eq!(
            ChatError::internal("secret stack").public_message(),
            "internal error"
        );
        assert_eq!(
            ChatError::invalid("text must not be empty").public_message(),
            "text must not be empty"
        );
        assert!(!ChatError::Forbidden("no").is_server_side());
    }
}
