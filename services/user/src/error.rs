//! Why a request was refused, in the domain's own words. `http.rs` is
//! the one place that turns these into status codes.

/// A refusal of the domain rules or limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The input is malformed; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No code matches (never issued, expired, used or wrong).
    #[error("invalid or expired code")]
    WrongCode,
    /// The code had its tries and no longer works.
    #[error("too many wrong codes; this code no longer works, request a new one")]
    Burned,
    /// A rate limit or failure budget holds; try again after `retry_after_secs`.
    #[error("{message}")]
    Limited {
        /// What was limited, safe to show.
        message: String,
        /// Seconds until trying again can succeed.
        retry_after_secs: u64,
        /// Which limit, for metrics.
        limit: Limit,
    },
    /// A dependency did not answer.
    #[error("{dependency} is unavailable: {detail}")]
    Unavailable {
        /// Which one.
        dependency: &'static str,
        /// What went wrong (logged, never shown).
        detail: String,
    },
    /// The caller's token names a user that no longer exists.
    #[error("the token's user no longer exists")]
    UnknownCaller,
    /// The caller's sessions were ended (logout) after the token was issued.
    #[error("token revoked: log in again")]
    Revoked,
    /// A failure of the service itself (logged, never detailed to clients).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<mongodb::error::Error> for DomainError {
    fn from(error: mongodb::error::Error) -> Self {
        if parley_common::mongo::is_unavailable(&error) {
            Self::Unavailable {
                dependency: "mongodb",
                detail: error.to_string(),
            }
        } else {
            Self::Internal(error.to_string())
        }
    }
}

impl From<parley_common::revocation::RevocationError> for DomainError {
    fn from(error: parley_common::revocation::RevocationError) -> Self {
        use parley_common::revocation::RevocationError as R;
        match error {
            R::Revoked => Self::Revoked,
            R::Unavailable(detail) => Self::Unavailable {
                dependency: "redis",
                detail,
            },
        }
    }
}

/// The limits that can refuse a request (metric label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Codes per client address per hour.
    AddressCodes,
    /// The resend cooldown of one inbox.
    Cooldown,
    /// Codes per inbox per hour.
    InboxCodes,
    /// Codes the service issues per minute.
    Global,
    /// Wrong codes per client address per hour.
    AddressFailures,
    /// Wrong codes per account per day (overall or from one address).
    AccountFailures,
    /// Backoff between wrong codes of one account.
    Backoff,
    /// Wrong codes per account per day from clients without a login id.
    LegacyFailures,
}

impl Limit {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::AddressCodes => "address_codes",
            Self::Cooldown => "cooldown",
            Self::InboxCodes => "inbox_codes",
            Self::Global => "global",
            Self::AddressFailures => "address_failures",
            Self::AccountFailures => "account_failures",
            Self::Backoff => "backoff",
            Self::LegacyFailures => "legacy_failures",
        }
    }
}

impl DomainError {
    /// A malformed input.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// A limit that holds for `retry_after_secs` more seconds.
    pub fn limited(limit: Limit, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::Limited {
            message: message.into(),
            retry_after_secs: retry_after_secs.max(1),
            limit,
        }
    }

    /// Redis did not answer.
    pub fn redis(error: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            dependency: "redis",
            detail: error.to_string(),
        }
    }
}
