//! Profiles of other users: Redis cache in front of the user service's batch
//! lookup, dropped on `user.updated.v1`. When the user service cannot be
//! reached, callers get placeholders rather than an error.

use std::collections::HashMap;
use std::time::Duration;

use parley_common::redis::Redis;
use redis::AsyncCommands;

use crate::model::Profile;

/// How long a cached profile lives without an update event.
const CACHE_TTL_SECS: u64 = 600;

/// The profile cache.
#[derive(Clone)]
pub struct Profiles {
    redis: Redis,
    http: reqwest::Client,
    lookup_url: url::Url,
}

#[derive(serde::Serialize)]
struct LookupRequest<'a> {
    ids: &'a [String],
}

/// Pure: reads the lookup answer, `{users: [...]}` or a bare array.
pub fn parse_lookup(body: &serde_json::Value) -> Vec<Profile> {
    let list = body.get("users").unwrap_or(body);
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| serde_json::from_value::<Profile>(v.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Profiles {
    /// A cache asking `user_service` (its base URL).
    pub fn new(redis: Redis, user_service: &url::Url) -> Result<Self, url::ParseError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_default();
        Ok(Self {
            redis,
            http,
            lookup_url: user_service.join("/api/v1/users/lookup")?,
        })
    }

    fn key(&self, id: &str) -> String {
        self.redis.key(&format!("profile:{id}"))
    }

    /// Profiles for `ids` (deduplicated), asking the user service for
    /// misses with the caller's `token`; placeholders for what cannot be had.
    pub async fn get(&self, ids: &[String], token: &str) -> HashMap<String, Profile> {
        let mut found = HashMap::new();
        let mut unique: Vec<String> = ids.to_vec();
        unique.sort();
        unique.dedup();
        if unique.is_empty() {
            return found;
        }
        let keys: Vec<String> = unique.iter().map(|id| self.key(id)).collect();
        let cached: Vec<Option<String>> =
            self.redis.conn().mget(&keys).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "profile cache unavailable");
                vec![None; keys.len()]
            });
        let mut missing = Vec::new();
        for (id, hit) in unique.iter().zip(cached) {
            match hit.and_then(|json| serde_json::from_str::<Profile>(&json).ok()) {
                Some(profile) => {
                    found.insert(id.clone(), profile);
                }
                None => missing.push(id.clone()),
            }
        }
        if !missing.is_empty() {
            for profile in self.lookup(&missing, token).await {
                if let Ok(json) = serde_json::to_string(&profile) {
                    let _: redis::RedisResult<()> = self
                        .redis
                        .conn()
                        .set_ex(self.key(&profile.id), json, CACHE_TTL_SECS)
                        .await;
                }
                found.insert(profile.id.clone(), profile);
            }
        }
        for id in unique {
            found
                .entry(id.clone())
                .or_insert_with(|| Profile::placeholder(&id));
        }
        found
    }

    async fn lookup(&self, ids: &[String], token: &str) -> Vec<Profile> {
        let mut out = Vec::new();
        for chunk in ids.chunks(100) {
            let answer = self
                .http
                .post(self.lookup_url.clone())
                .bearer_auth(token)
                .json(&LookupRequest { ids: chunk })
                .send()
                .await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    match response.json::<serde_json::Value>().await {
                        Ok(body) => out.extend(parse_lookup(&body)),
                        Err(error) => {
                            tracing::warn!(%error, "user lookup answered something unreadable")
                        }
                    }
                }
                Ok(response) => tracing::warn!(status = %response.status(), "user lookup refused"),
                Err(error) => {
                    tracing::warn!(%error, "user service unreachable; using placeholders")
                }
            }
        }
        out
    }

    /// Drops a cached profile (on `user.updated.v1`).
    pub async fn invalidate(&self, id: &str) -> redis::RedisResult<()> {
        self.redis.conn().del(self.key(id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_shapes() {
        let wrapped =
            serde_json::json!({"users": [{"_id": "a", "name": "Ann", "email": "a@x"}, {"bad": 1}]});
        let bare = serde_json::json!([{"_id": "b", "name": "Bob"}]);
        assert_eq!(parse_lookup(&wrapped).len(), 1);
        assert_eq!(parse_lookup(&bare)[0].name, "Bob");
        assert!(parse_lookup(&serde_json::json!({"nope": true})).is_empty());
    }

    #[test]
    fn profiles_never_carry_an_email_onward() {
        // An older user service (or a cache entry it filled) may still
        // answer with emails; chat members never see them.
        let answer =
            serde_json::json!({"users": [{"_id": "a", "name": "Ann", "email": "a@x.example"}]});
        let profiles = parse_lookup(&answer);
        assert_eq!(profiles.len(), 1);
        let shown = serde_json::to_value(&profiles[0]).unwrap();
        assert_eq!(shown, serde_json::json!({"_id": "a", "name": "Ann"}));
    }
}
