//! One-time codes and login limits in Redis. Every check-and-change is one
//! Lua script, so concurrent requests cannot slip past a limit.
//!
//! Keys (under the service prefix):
//! - `otp:<email>:<login key>`: a code's hash and tries, one per `/login`;
//! - `otp:<email>`: the login key of the newest code (what clients without
//!   a login id try);
//! - `otp:ratelimit:<inbox>`: the resend cooldown of an inbox;
//! - `login:{ip,inbox,global}:…`: codes issued per address group and hour,
//!   per inbox and hour, and per minute;
//! - `fail:<email>`: an account's wrong codes over 24 h (with, without a
//!   login id, per address group, and the time of the last try);
//! - `verify:ip:<group>:<hour>`: wrong codes per address group and hour.

use std::sync::Arc;
use std::time::Duration;

use parley_common::redis::{Redis, window_script};

use crate::config::Limits;
use crate::error::{DomainError, Limit};

/// Issues a code if no limit holds, counting it everywhere at once; a
/// refused request changes nothing, so it cannot use up a shared budget.
/// (Runs with [`parley_common::redis::window_script`]'s helpers.)
const ADMIT: &str = r"
if count(KEYS[1]) >= tonumber(ARGV[1]) then return {'address', left(KEYS[1])} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'cooldown', left(KEYS[2])} end
if count(KEYS[3]) >= tonumber(ARGV[2]) then return {'inbox', left(KEYS[3])} end
if count(KEYS[4]) >= tonumber(ARGV[3]) then return {'global', left(KEYS[4])} end
local function add(key, window)
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, window) end
end
add(KEYS[1], ARGV[5])
add(KEYS[3], ARGV[5])
add(KEYS[4], ARGV[6])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
return {'ok', '0'}
";

/// Stores a fresh code hash with zero tries and makes it the newest.
const STORE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'tries', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return 1
";

/// Takes back a code that could not be sent: the code, its cooldown and
/// what it counted.
const WITHDRAW: &str = r"
if redis.call('HGET', KEYS[1], 'hash') == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3])
for i = 4, 6 do
  if (tonumber(redis.call('GET', KEYS[i]) or '0') or 0) > 0 then redis.call('DECR', KEYS[i]) end
end
return 1
";

/// Reserves one try, counting it as a failure until `SETTLE` refunds it.
/// Answers `{'bound'|'legacy', hash, login key}` or `{refusal, ms}`.
/// (Runs with [`parley_common::redis::window_script`]'s helpers.)
const RESERVE: &str = r"
local function num(v) return tonumber(v or '0') or 0 end
if num(redis.call('GET', KEYS[1])) >= tonumber(ARGV[1]) then return {'address', left(KEYS[1])} end
local function fail_ip()
  if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[9]) end
end
local mode, code, lid
if redis.call('EXISTS', KEYS[2]) == 1 then
  mode = 'bound'
  code = KEYS[2]
  lid = ''
else
  mode = 'legacy'
  lid = redis.call('GET', KEYS[3])
  if not lid then fail_ip() return {'missing', '0'} end
  code = ARGV[10] .. lid
  if redis.call('EXISTS', code) == 0 then fail_ip() return {'missing', '0'} end
end
local f = KEYS[4]
if mode == 'bound' then
  if num(redis.call('HGET', code, 'tries')) >= tonumber(ARGV[2]) then return {'burned', '0'} end
  local total = num(redis.call('HGET', f, 'bound'))
  if total >= tonumber(ARGV[3]) or num(redis.call('HGET', f, ARGV[6])) >= tonumber(ARGV[4]) then
    return {'locked', left(f)}
  end
  local free = tonumber(ARGV[11])
  if total >= free then
    local wait = math.min(1000 * (2 ^ (total - free)), tonumber(ARGV[12]))
    local since = tonumber(ARGV[7]) - num(redis.call('HGET', f, 'last'))
    if since < wait then return {'wait', tostring(math.ceil(wait - since))} end
  end
  redis.call('HINCRBY', code, 'tries', 1)
  redis.call('HINCRBY', f, 'bound', 1)
  redis.call('HINCRBY', f, ARGV[6], 1)
else
  if num(redis.call('HGET', f, 'legacy')) >= tonumber(ARGV[5]) then return {'legacy_spent', left(f)} end
  redis.call('HINCRBY', f, 'legacy', 1)
end
redis.call('HSET', f, 'last', ARGV[7])
if redis.call('PTTL', f) < 0 then redis.call('PEXPIRE', f, ARGV[8]) end
fail_ip()
return {mode, redis.call('HGET', code, 'hash'), lid}
";

/// Uses up a matching code (single use) and refunds the failure its try
/// was counted as.
const SETTLE: &str = r"
if redis.call('HGET', KEYS[1], 'hash') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
local function refund(field)
  if (tonumber(redis.call('HGET', KEYS[3], field) or '0') or 0) > 0 then
    redis.call('HINCRBY', KEYS[3], field, -1)
  end
end
if ARGV[2] == 'bound' then
  refund('bound')
  refund(ARGV[3])
else
  refund('legacy')
end
if (tonumber(redis.call('GET', KEYS[4]) or '0') or 0) > 0 then redis.call('DECR', KEYS[4]) end
return 1
";

/// How a try is bound to a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The client presented the login id of a pending code.
    Bound,
    /// No (or no current) login id: the newest code, with the legacy budget.
    Legacy,
}

/// What `admit` counted, so that `withdraw` can give it back.
#[derive(Debug, Clone)]
pub struct Admission {
    keys: [String; 4],
}

/// A reserved try at a code.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// How it is bound.
    pub binding: Binding,
    /// The stored hash to compare against.
    pub hash: String,
    login_key: String,
    group: String,
}

/// Code storage and limits.
#[derive(Clone)]
pub struct Codes {
    redis: Redis,
    limits: Limits,
    admit: Arc<redis::Script>,
    store: Arc<redis::Script>,
    withdraw: Arc<redis::Script>,
    reserve: Arc<redis::Script>,
    settle: Arc<redis::Script>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn secs(ms: &str) -> u64 {
    ms.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map_or(1, |v| (v / 1000.0).ceil() as u64)
}

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

impl Codes {
    /// Codes in `redis` under `limits`.
    pub fn new(redis: Redis, limits: Limits) -> Self {
        Self {
            redis,
            limits,
            admit: Arc::new(window_script(ADMIT)),
            store: Arc::new(redis::Script::new(STORE)),
            withdraw: Arc::new(redis::Script::new(WITHDRAW)),
            reserve: Arc::new(window_script(RESERVE)),
            settle: Arc::new(redis::Script::new(SETTLE)),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn latest_key(&self, email: &str) -> String {
        self.redis.key(&format!("otp:{email}"))
    }

    fn code_key(&self, email: &str, login_key: &str) -> String {
        self.redis.key(&format!("otp:{email}:{login_key}"))
    }

    fn failures_key(&self, email: &str) -> String {
        self.redis.key(&format!("fail:{email}"))
    }

    fn verify_ip_key(&self, group: &str) -> String {
        let hour = chrono::Utc::now().timestamp() / 3600;
        self.redis.key(&format!("verify:ip:{group}:{hour}"))
    }

    /// Checks, in this order, the client group's hourly codes, the inbox's
    /// cooldown, the inbox's hourly codes and the global per-minute budget;
    /// only when all pass is the code counted against each (and the
    /// cooldown started).
    pub async fn admit(&self, inbox: &str, group: &str) -> Result<Admission, DomainError> {
        let now = chrono::Utc::now().timestamp();
        let (hour, minute) = (now / 3600, now / 60);
        let keys = [
            self.redis.key(&format!("login:ip:{group}:{hour}")),
            self.redis.key(&format!("otp:ratelimit:{inbox}")),
            self.redis.key(&format!("login:inbox:{inbox}:{hour}")),
            self.redis.key(&format!("login:global:{minute}")),
        ];
        let mut conn = self.redis.conn();
        let (answer, ms): (String, String) = self
            .admit
            .key(&keys[0])
            .key(&keys[1])
            .key(&keys[2])
            .key(&keys[3])
            .arg(self.limits.per_ip_per_hour)
            .arg(self.limits.per_inbox_per_hour)
            .arg(self.limits.global_per_minute)
            .arg(millis(self.limits.resend_cooldown).max(1))
            .arg(millis(HOUR))
            .arg(millis(MINUTE))
            .invoke_async(&mut conn)
            .await
            .map_err(DomainError::redis)?;
        let retry = secs(&ms);
        match answer.as_str() {
            "ok" => Ok(Admission { keys }),
            "address" => Err(DomainError::limited(
                Limit::AddressCodes,
                "too many codes requested from this address; try again later",
                retry,
            )),
            "cooldown" => Err(DomainError::limited(
                Limit::Cooldown,
                format!("a code was sent recently; wait {retry} s before asking again"),
                retry,
            )),
            "inbox" => Err(DomainError::limited(
                Limit::InboxCodes,
                "too many codes were sent to this inbox this hour; try again later",
                retry,
            )),
            _ => Err(DomainError::limited(
                Limit::Global,
                "too many login requests right now; try again shortly",
                retry,
            )),
        }
    }

    /// Stores a code hash under its login key and makes it the newest code
    /// of `email`; other pending codes stay valid until they expire.
    pub async fn store(&self, email: &str, login_key: &str, hash: &str) -> Result<(), DomainError> {
        let mut conn = self.redis.conn();
        let _: i64 = self
            .store
            .key(self.code_key(email, login_key))
            .key(self.latest_key(email))
            .arg(hash)
            .arg(millis(self.limits.otp_ttl))
            .arg(login_key)
            .invoke_async(&mut conn)
            .await
            .map_err(DomainError::redis)?;
        Ok(())
    }

    /// Takes back a code that could not be sent, its cooldown and its counts.
    pub async fn withdraw(
        &self,
        email: &str,
        login_key: &str,
        hash: &str,
        admission: &Admission,
    ) -> Result<(), DomainError> {
        let [ip, cooldown, inbox, global] = &admission.keys;
        let mut conn = self.redis.conn();
        let _: i64 = self
            .withdraw
            .key(self.code_key(email, login_key))
            .key(self.latest_key(email))
            .key(cooldown)
            .key(ip)
            .key(inbox)
            .key(global)
            .arg(hash)
            .arg(login_key)
            .invoke_async(&mut conn)
            .await
            .map_err(DomainError::redis)?;
        Ok(())
    }

    /// Reserves one try at `email`'s code: the one `login_key` names when
    /// it is pending, else the newest under the legacy budget. The try
    /// counts as a failure (of the account and the client group) unless
    /// [`Codes::settle`] refunds it.
    pub async fn reserve(
        &self,
        email: &str,
        login_key: Option<&str>,
        group: &str,
    ) -> Result<Attempt, DomainError> {
        let bound_key = match login_key {
            Some(key) => self.code_key(email, key),
            // A key no code can have: the login key is hex.
            None => self.code_key(email, "-"),
        };
        let group_field = format!("g:{group}");
        let mut conn = self.redis.conn();
        let limits = &self.limits;
        let answer: Vec<String> = self
            .reserve
            .key(self.verify_ip_key(group))
            .key(bound_key)
            .key(self.latest_key(email))
            .key(self.failures_key(email))
            .arg(limits.verify_failures_per_ip_per_hour)
            .arg(limits.max_attempts)
            .arg(limits.account_failures_per_day)
            .arg(limits.account_failures_per_address)
            .arg(limits.legacy_failures_per_day)
            .arg(&group_field)
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(millis(DAY))
            .arg(millis(HOUR))
            .arg(self.code_key(email, ""))
            .arg(limits.max_attempts)
            .arg(millis(limits.max_backoff))
            .invoke_async(&mut conn)
            .await
            .map_err(DomainError::redis)?;
        let field = |i: usize| answer.get(i).cloned().unwrap_or_default();
        let retry = secs(&field(1));
        let binding = match field(0).as_str() {
            "bound" => Binding::Bound,
            "legacy" => Binding::Legacy,
            "missing" => return Err(DomainError::WrongCode),
            "burned" => return Err(DomainError::Burned),
            "address" => {
                return Err(DomainError::limited(
                    Limit::AddressFailures,
                    "too many wrong codes from this address; try again later",
                    retry,
                ));
            }
            "locked" => {
                return Err(DomainError::limited(
                    Limit::AccountFailures,
                    "too many wrong codes for this account; try again later",
                    retry,
                ));
            }
            "wait" => {
                return Err(DomainError::limited(
                    Limit::Backoff,
                    format!("too many wrong codes; wait {retry} s before trying again"),
                    retry,
                ));
            }
            "legacy_spent" => {
                return Err(DomainError::limited(
                    Limit::LegacyFailures,
                    "too many wrong codes for this account; try again later, or send the loginId that /login returned",
                    retry,
                ));
            }
            other => {
                return Err(DomainError::redis(format!(
                    "unexpected answer {other:?} from the reserve script"
                )));
            }
        };
        let login_key = match binding {
            Binding::Bound => login_key.unwrap_or_default().to_owned(),
            Binding::Legacy => field(2),
        };
        Ok(Attempt {
            binding,
            hash: field(1),
            login_key,
            group: group_field,
        })
    }

    /// Uses up the matched code and refunds the try; false when a
    /// concurrent request used it first.
    pub async fn settle(&self, email: &str, attempt: &Attempt) -> Result<bool, DomainError> {
        let mut conn = self.redis.conn();
        let binding = match attempt.binding {
            Binding::Bound => "bound",
            Binding::Legacy => "legacy",
        };
        let done: i64 = self
            .settle
            .key(self.code_key(email, &attempt.login_key))
            .key(self.latest_key(email))
            .key(self.failures_key(email))
            .key(self.verify_ip_key(attempt.group.trim_start_matches("g:")))
            .arg(&attempt.hash)
            .arg(binding)
            .arg(&attempt.group)
            .arg(&attempt.login_key)
            .invoke_async(&mut conn)
            .await
            .map_err(DomainError::redis)?;
        Ok(done == 1)
    }
}
