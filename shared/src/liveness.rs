//! The liveness protocol between a gateway and the janitor, both halves in one place.
//!
//! A gateway is alive while its liveness key `P:i:{I}:alive` exists; it refreshes it every
//! third of its TTL. A janitor removes a dead gateway's state only under a *claim*, the key
//! `P:i:{I}:sweep` with a TTL, set only while the liveness key is missing. The two keys share
//! the instance's hash tag, so each side's check-then-act is one atomic script:
//!
//! - [`gateway_claim`]: the gateway claims or refreshes its liveness unless a janitor holds
//!   the instance (then it waits: a gateway back under the same id registers only after the
//!   removal of its earlier life's state). Its value is `<life token>:<generation>`, and the
//!   reply tells whether Redis still holds the generation the gateway last wrote — if not,
//!   Redis lost recent writes and every membership is written again.
//! - [`janitor_claim`] / [`janitor_refresh`]: the janitor claims a dead instance (only while
//!   its liveness key is missing, and only if no other janitor holds it) and extends the
//!   claim before each batch. Both return Redis' clock, from which the janitor derives the
//!   deadline its removal scripts enforce (a janitor paused past its claim removes nothing).

use redis::{FromRedisValue, ParsingError, Value};

/// The scripts' mode argument: `dry` computes the same answer and writes nothing.
fn mode(dry_run: bool) -> &'static str {
    if dry_run { "dry" } else { "apply" }
}

/// The gateway's claim. KEYS: alive, sweep. ARGV: life token, ttl ms, expected generation,
/// new generation.
const GATEWAY_CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 'sweeping' end
local old = redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[4], 'PX', ARGV[2], 'GET')
if old == ARGV[1] .. ':' .. ARGV[3] then return 'kept' end
if old and string.sub(old, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then return 'stale' end
return 'claimed'
"#;

/// The janitor's claim on a dead instance. KEYS: alive, sweep. ARGV: mode, token, ttl ms.
/// Returns {`live` | `busy` | `claimed`, Redis' clock in unix ms, read before the claim}.
const JANITOR_CLAIM: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then return {'live', now} end
if ARGV[1] == 'dry' then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'busy', now} end
  return {'claimed', now}
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {'claimed', now} end
return {'busy', now}
"#;

/// Extends a janitor's claim that is still its own. KEYS: sweep. ARGV: token, ttl ms.
/// Returns Redis' clock in unix ms (read before extending), or 0 when the claim expired or
/// another janitor holds it.
const JANITOR_REFRESH: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

fn eval(script: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

fn unexpected(what: &str, value: &Value) -> ParsingError {
    ParsingError::from(format!("unexpected {what} reply: {value:?}"))
}

/// What the gateway's claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayClaim {
    /// The key was this life's, at the expected generation: nothing was lost.
    Kept,
    /// The key was this life's at another generation: Redis lost recent writes.
    Stale,
    /// The key was missing or an earlier life's: this life registers anew.
    Claimed,
    /// A janitor holds the instance: nothing was written; wait and try again.
    Sweeping,
}

impl FromRedisValue for GatewayClaim {
    fn from_redis_value(value: Value) -> Result<GatewayClaim, ParsingError> {
        match String::from_redis_value_ref(&value)?.as_str() {
            "kept" => Ok(GatewayClaim::Kept),
            "stale" => Ok(GatewayClaim::Stale),
            "claimed" => Ok(GatewayClaim::Claimed),
            "sweeping" => Ok(GatewayClaim::Sweeping),
            _ => Err(unexpected("gateway claim", &value)),
        }
    }
}

/// The gateway's claim on its liveness key: `token` names this life, `expected` is the
/// generation it last wrote, `new` the one to write now; the key lives `ttl_ms`.
pub fn gateway_claim(
    alive: &str,
    sweep: &str,
    token: &str,
    ttl_ms: u64,
    expected: u64,
    new: u64,
) -> redis::Cmd {
    let mut cmd = eval(GATEWAY_CLAIM, &[alive, sweep]);
    cmd.arg(token).arg(ttl_ms).arg(expected).arg(new);
    cmd
}

/// What a janitor's claim on an instance found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JanitorClaim {
    /// The liveness key exists: the instance is alive, not to be touched.
    Live,
    /// Another janitor holds the instance.
    Busy,
    /// This janitor holds it (in a dry run: could hold it).
    Claimed,
}

/// A janitor claim's answer and Redis' clock (unix ms) when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JanitorClaimReply {
    /// What the claim found.
    pub claim: JanitorClaim,
    /// Redis' clock when the script ran.
    pub server_ms: u64,
}

impl FromRedisValue for JanitorClaimReply {
    fn from_redis_value(value: Value) -> Result<JanitorClaimReply, ParsingError> {
        let (answer, server_ms): (String, u64) = FromRedisValue::from_redis_value_ref(&value)?;
        let claim = match answer.as_str() {
            "live" => JanitorClaim::Live,
            "busy" => JanitorClaim::Busy,
            "claimed" => JanitorClaim::Claimed,
            _ => return Err(unexpected("janitor claim", &value)),
        };
        Ok(JanitorClaimReply { claim, server_ms })
    }
}

/// A janitor's claim on a dead instance (`dry_run`: only tells whether it could claim).
pub fn janitor_claim(alive: &str, sweep: &str, token: &str, ttl_ms: u64, dry_run: bool) -> redis::Cmd {
    let mut cmd = eval(JANITOR_CLAIM, &[alive, sweep]);
    cmd.arg(mode(dry_run)).arg(token).arg(ttl_ms);
    cmd
}

/// Extends a janitor's claim; the reply is Redis' clock (unix ms), or 0 when the claim
/// was lost.
pub fn janitor_refresh(sweep: &str, token: &str, ttl_ms: u64) -> redis::Cmd {
    let mut cmd = eval(JANITOR_REFRESH, &[sweep]);
    cmd.arg(token).arg(ttl_ms);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn replies_are_typed() {
        assert_eq!(GatewayClaim::from_redis_value(bulk("stale")).unwrap(), GatewayClaim::Stale);
        assert!(GatewayClaim::from_redis_value(bulk("maybe")).is_err());
        let reply = Value::Array(vec![bulk("claimed"), Value::Int(1_700_000_000_000)]);
        assert_eq!(
            JanitorClaimReply::from_redis_value(reply).unwrap(),
            JanitorClaimReply { claim: JanitorClaim::Claimed, server_ms: 1_700_000_000_000 }
        );
        assert!(
            JanitorClaimReply::from_redis_value(Value::Array(vec![bulk("gone"), Value::Int(1)])).is_err()
        );
    }
}
