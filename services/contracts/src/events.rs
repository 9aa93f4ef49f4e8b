//! Event contracts between services.
//!
//! Every event travels on the durable topic exchange [`EXCHANGE`] inside an
//! [`Envelope`], routed by its type. Consumers dedupe on the envelope `id`.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The topic exchange all parley events are published to.
pub const EXCHANGE: &str = "parley.events";

/// An event's data; `TYPE` is both the envelope type and the routing key.
pub trait Event: Serialize + DeserializeOwned + Send + Sync {
    /// Versioned type name, e.g. `user.otp_requested.v1`.
    const TYPE: &'static str;
}

/// What travels on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    /// Unique per event; also the AMQP `message_id`.
    pub id: Uuid,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the fact happened.
    pub occurred_at: DateTime<Utc>,
    /// The event's data.
    pub data: T,
}

impl<T: Event> Envelope<T> {
    /// Wraps `data` with a fresh id and the current time.
    pub fn new(data: T) -> Self {
        Self {
            id: Uuid::new_v4(),
            kind: T::TYPE.to_owned(),
            occurred_at: Utc::now(),
            data,
        }
    }
}

/// Only the envelope's header, for consumers that dispatch on `type` first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeHeader {
    /// Unique per event.
    pub id: Uuid,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A one-time login code was issued and must be mailed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtpRequested {
    /// Recipient, lowercased.
    pub email: String,
    /// The login code (`PARLEY_OTP_DIGITS` digits, 8 by default).
    pub code: String,
    /// When the code stops working.
    pub expires_at: DateTime<Utc>,
}

impl Event for OtpRequested {
    const TYPE: &'static str = "user.otp_requested.v1";
}

/// A user's profile changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserUpdated {
    /// The user's id (hex ObjectId).
    pub user_id: String,
    /// The new display name.
    pub name: String,
    /// The user's email.
    pub email: String,
}

impl Event for UserUpdated {
    const TYPE: &'static str = "user.updated.v1";
}

/// A user deleted their account: the user service removed them; every
/// other service forgets what it holds of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDeleted {
    /// The user's id (hex ObjectId).
    pub user_id: String,
}

impl Event for UserDeleted {
    const TYPE: &'static str = "user.deleted.v1";
}

/// A chat message was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageCreated {
    /// The message id.
    pub message_id: String,
    /// The chat it belongs to.
    pub chat_id: String,
    /// Who sent it.
    pub sender_id: String,
    /// The sender's display name.
    pub sender_name: String,
    /// The other members of the chat.
    pub recipient_ids: Vec<String>,
    /// A short preview of the text (or "[image]").
    pub preview: String,
    /// When the server stored it.
    pub sent_at: DateTime<Utc>,
}

impl Event for MessageCreated {
    const TYPE: &'static str = "chat.message_created.v1";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_wire_shape() {
        let env = Envelope::new(UserUpdated {
            user_id: "u1".into(),
            name: "Ann".into(),
            email: "ann@example.com".into(),
        });
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["type"], "user.updated.v1");
        assert_eq!(json["data"]["userId"], "u1");
        assert!(json["occurredAt"].as_str().unwrap().contains('T'));
        assert_eq!(json["id"], env.id.to_string());
        let back: Envelope<UserUpdated> = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, env);
        let header: EnvelopeHeader = serde_json::from_value(json).unwrap();
        assert_eq!(header.kind, UserUpdated::TYPE);
    }
}
