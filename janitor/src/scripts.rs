//! The Lua scripts of a sweep, and how they are called.
//!
//! Every script touches the keys of one hash slot only (one instance's `{I}` keys, or one
//! topic's `{D}` keys, or one index), so each check-then-act is atomic and the design keeps
//! working on Redis Cluster. Scripts check each key's type before using it and answer
//! "wrong type" instead of failing, so one malformed key never fails a whole pipeline.
//!
//! Scripts that change data take a mode (`apply` or `dry`): in `dry` mode they compute the
//! same answer from the same checks and write nothing, which keeps `--dry-run`'s report
//! faithful to what a sweep would do.
//!
//! A claim on a dead instance lives on the instance's slot, the group hashes its fields are
//! removed from on the topics' slots, so no script can check the claim itself while removing
//! a field. The claim is *fenced* by time instead: claiming and extending return Redis'
//! clock, the janitor derives a deadline from it (server time + claim TTL − a margin for
//! clock differences between nodes), and every removal under the claim takes that deadline
//! and refuses to act once Redis' clock is past it — however long the janitor was paused
//! between extending the claim and sending the removal.
//!
//! They are sent with `EVAL` (Redis caches the compiled script by its hash), not `EVALSHA`:
//! they run inside pipelines, where a `NOSCRIPT` after a Redis restart could not be retried
//! command by command, and each is a few hundred bytes.

use redis::Cmd;

/// The mode argument of scripts that change data.
pub(crate) fn mode(dry_run: bool) -> &'static str {
    if dry_run { "dry" } else { "apply" }
}

/// An `EVAL` of `script` on `keys`; add the arguments to the returned command.
pub(crate) fn eval(script: &str, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

/// The reply of [`REMOVE_FIELDS`] and [`UNINDEX_INSTANCE`] when the claim's deadline has
/// passed: nothing was removed.
pub(crate) const CLAIM_LAPSED: i64 = -2;

/// Finishes a claimed instance: unlinks its stream and its topic record, then releases the
/// claim — all only while the claim is still ours. Keys of the wrong type are left alone.
///
/// KEYS: stream, topics, sweep. ARGV: mode, token. Returns {stream unlinked, topics unlinked}
/// (0 or 1 each), or {-1, -1} when the claim was lost. In `dry` mode nothing is checked
/// against a claim and nothing is written.
pub(crate) const FINISH_INSTANCE: &str = r#"
local dry = ARGV[1] == 'dry'
if not dry then
  if redis.call('TYPE', KEYS[3])['ok'] ~= 'string' or redis.call('GET', KEYS[3]) ~= ARGV[2] then
    return {-1, -1}
  end
end
local stream, topics = 0, 0
if redis.call('TYPE', KEYS[1])['ok'] == 'stream' then
  stream = dry and 1 or redis.call('UNLINK', KEYS[1])
end
if redis.call('TYPE', KEYS[2])['ok'] == 'set' then
  topics = dry and 1 or redis.call('UNLINK', KEYS[2])
end
if not dry then redis.call('DEL', KEYS[3]) end
return {stream, topics}
"#;

/// Removes fields from a group hash: `dead` removes the named fields wherever they exist
/// (the caller holds the claims on those instances), but only while Redis' clock is before
/// the claim's deadline; `invalid` removes them only if their value is still not a positive
/// whole number (a gateway may have rewritten it since).
///
/// KEYS: group. ARGV: mode, kind, fields already removed from this hash earlier in a dry
/// run, the claim's deadline in unix ms (`dead` only; ignored in `dry` mode), then the
/// fields. Returns {hash emptied (0/1), removed fields...}, {-1} when the key is not a hash,
/// or {-2} ([`CLAIM_LAPSED`]) when the deadline has passed. In `dry` mode "emptied" counts
/// the earlier simulated removals.
pub(crate) const REMOVE_FIELDS: &str = r#"
if ARGV[2] == 'dead' and ARGV[1] ~= 'dry' then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) >= tonumber(ARGV[4]) then return {-2} end
end
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {0} end
if t ~= 'hash' then return {-1} end
local function is_count(value)
  local digits = string.match(value, '^%s*%+?(%d+)%s*$')
  return digits ~= nil and tonumber(digits) > 0
end
local doomed = {}
for i = 5, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value and (ARGV[2] == 'dead' or not is_count(value)) then
    doomed[#doomed + 1] = ARGV[i]
  end
end
if #doomed == 0 then return {0} end
local emptied = 0
if ARGV[1] == 'dry' then
  if redis.call('HLEN', KEYS[1]) - tonumber(ARGV[3]) - #doomed <= 0 then emptied = 1 end
else
  redis.call('HDEL', KEYS[1], unpack(doomed))
  if redis.call('EXISTS', KEYS[1]) == 0 then emptied = 1 end
end
local reply = {emptied}
for _, field in ipairs(doomed) do reply[#reply + 1] = field end
return reply
"#;

/// Removes a claimed instance from the instance index, only while Redis' clock is before the
/// claim's deadline (a gateway back under the same id after the claim lapsed has its entry
/// there again). KEYS: index. ARGV: mode, instance, deadline in unix ms. Returns 1 if it was
/// there (and, unless `dry`, removed), 0 if not, -2 ([`CLAIM_LAPSED`]) past the deadline.
pub(crate) const UNINDEX_INSTANCE: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then return 0 end
if ARGV[1] == 'dry' then
  if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 1 end
  return 0
end
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) >= tonumber(ARGV[3]) then return -2 end
return redis.call('ZREM', KEYS[1], ARGV[2])
"#;

/// Reads what a topic's keys hold, in one atomic step. Read-only.
///
/// KEYS: history, meta, group. Returns {history type, meta type, group type, history length,
/// newest id, oldest id} ('' for an id when there is no entry).
pub(crate) const INSPECT_TOPIC: &str = r#"
local th = redis.call('TYPE', KEYS[1])['ok']
local tm = redis.call('TYPE', KEYS[2])['ok']
local tg = redis.call('TYPE', KEYS[3])['ok']
local len, newest, oldest = 0, '', ''
if th == 'stream' then
  len = redis.call('XLEN', KEYS[1])
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last == 1 then newest = last[1][1] end
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #first == 1 then oldest = first[1][1] end
end
return {th, tm, tg, len, newest, oldest}
"#;

/// Trims a history by length and by age, approximately (whole macro nodes, and at most
/// Redis' default LIMIT of entries per call), so one call stays cheap however long the
/// stream. In `dry` mode it counts what exact trimming would remove instead: by length
/// from XLEN, by age by reading at most ARGV[4] ids older than the cut.
///
/// KEYS: history. ARGV: mode, max length ('0' = none), min id ms ('0' = none), dry-run
/// count cap. Returns the number of entries removed (or that would be).
pub(crate) const TRIM_HISTORY: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then return 0 end
if ARGV[1] == 'dry' then
  local len = redis.call('XLEN', KEYS[1])
  local by_len = 0
  if ARGV[2] ~= '0' then by_len = math.max(0, len - tonumber(ARGV[2])) end
  local by_age = 0
  if ARGV[3] ~= '0' then
    -- '-0': an end id without a sequence would mean the cut's last possible id.
    by_age = #redis.call('XRANGE', KEYS[1], '-', '(' .. ARGV[3] .. '-0', 'COUNT', ARGV[4])
  end
  return math.max(by_len, by_age)
end
local removed = 0
if ARGV[2] ~= '0' then removed = removed + redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2]) end
if ARGV[3] ~= '0' then removed = removed + redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[3]) end
return removed
"#;

/// Deletes an idle topic's history and meta, only if nobody subscribes (no group hash) and
/// nothing was published since the janitor looked (the newest id is unchanged). The
/// producer starts a new epoch when it finds the history gone, so resuming clients are
/// told. Keys of the wrong type stop the deletion.
///
/// KEYS: history, meta, group. ARGV: mode, newest id seen ('' for none), '1' if a dry run
/// has simulated removing every field of the group. Returns {deleted (0/1), history
/// unlinked (0/1)}.
pub(crate) const DELETE_TOPIC: &str = r#"
local dry = ARGV[1] == 'dry'
local tg = redis.call('TYPE', KEYS[3])['ok']
if tg ~= 'none' and not (dry and ARGV[3] == '1' and tg == 'hash') then return {0, 0} end
local th = redis.call('TYPE', KEYS[1])['ok']
local tm = redis.call('TYPE', KEYS[2])['ok']
if (th ~= 'none' and th ~= 'stream') or (tm ~= 'none' and tm ~= 'hash') then return {0, 0} end
local newest = ''
if th == 'stream' then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last == 1 then newest = last[1][1] end
end
if newest ~= ARGV[2] then return {0, 0} end
local history = 0
if th == 'stream' then history = 1 end
if not dry then redis.call('UNLINK', KEYS[1], KEYS[2]) end
return {1, history}
"#;

/// Removes a topic from the index of topics by last publish, only if its score is still the
/// one read before its history was deleted: a publish since then moved it, and the topic
/// is alive again. KEYS: index. ARGV: topic, score. Returns 1 if removed.
pub(crate) const UNINDEX_TOPIC: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then return 0 end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
"#;
