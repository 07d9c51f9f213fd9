//! Per-client-address budgets: open streams (`MAX_CONNECTIONS_PER_IP`) and the rate of new
//! `/events` requests (a token bucket: `SUBSCRIBE_BURST_PER_IP` at once, then
//! `SUBSCRIBE_RATE_PER_IP` per second).
//!
//! IPv6 clients are counted per /64: one host commonly holds a whole /64 and could
//! otherwise take a fresh address for every request. Both tables are bounded: the
//! connection table by `MAX_CONNECTIONS` (an entry per address with a stream open), the
//! rate table by [`RATE_TABLE_ENTRIES`] (full buckets are dropped first; if every one is
//! in use the request is let through unmetered rather than refused — the global caps
//! still hold — and a warning is logged).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Most addresses whose rate is tracked at once. 100 000 buckets are about 5 MiB.
pub const RATE_TABLE_ENTRIES: usize = 100_000;

/// The unit limits count by: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of `address`.
    pub fn of(address: IpAddr) -> ClientKey {
        match address {
            IpAddr::V4(_) => ClientKey(address),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                ClientKey(IpAddr::V6(bits.into()))
            }
        }
    }
}

/// Open streams per client.
#[derive(Debug, Default)]
pub struct OpenPerClient {
    counts: Mutex<HashMap<ClientKey, usize>>,
}

/// One stream's place in its client's count; released on drop.
#[derive(Debug)]
pub struct ClientSlot {
    table: Arc<OpenPerClient>,
    key: ClientKey,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().expect("per-client lock");
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl OpenPerClient {
    /// Takes a slot for `key` unless it holds `limit` already (`0`: no limit).
    pub fn admit(self: &Arc<Self>, key: ClientKey, limit: usize) -> Option<ClientSlot> {
        let mut counts = self.counts.lock().expect("per-client lock");
        let count = counts.entry(key).or_default();
        if limit != 0 && *count >= limit {
            if *count == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(ClientSlot { table: Arc::clone(self), key })
    }

    /// Streams open for `key`.
    pub fn open(&self, key: ClientKey) -> usize {
        self.counts.lock().expect("per-client lock").get(&key).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per client.
#[derive(Debug)]
pub struct RatePerClient {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
    warned_full: AtomicBool,
}

impl RatePerClient {
    /// `per_second` new requests (0: unlimited) after a burst of `burst`.
    pub fn new(per_second: f64, burst: u32) -> RatePerClient {
        RatePerClient {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            warned_full: AtomicBool::new(false),
        }
    }

    /// Takes one request from `key`'s budget, or says how long until one is available.
    pub fn check(&self, key: ClientKey, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("rate lock");
        if !buckets.contains_key(&key) && buckets.len() >= RATE_TABLE_ENTRIES {
            let full_after = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, bucket| now.saturating_duration_since(bucket.at) < full_after);
            if buckets.len() >= RATE_TABLE_ENTRIES {
                if !self.warned_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        entries = RATE_TABLE_ENTRIES,
                        "Rate table full; new addresses are not rate-limited until it drains."
                    );
                }
                return Ok(());
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ClientKey {
        ClientKey::of(text.parse().unwrap())
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    }

    #[test]
    fn open_streams_are_capped_and_released() {
        let table = Arc::new(OpenPerClient::default());
        let first = table.admit(key("192.0.2.1"), 2).unwrap();
        let _second = table.admit(key("192.0.2.1"), 2).unwrap();
        assert!(table.admit(key("192.0.2.1"), 2).is_none());
        assert!(table.admit(key("192.0.2.2"), 2).is_some());
        drop(first);
        assert!(table.admit(key("192.0.2.1"), 2).is_some());
        assert!(table.admit(key("192.0.2.1"), 0).is_some(), "0 is no limit");
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let rate = RatePerClient::new(2.0, 3);
        let start = Instant::now();
        let client = key("192.0.2.1");
        for _ in 0..3 {
            assert!(rate.check(client, start).is_ok());
        }
        let wait = rate.check(client, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(rate.check(key("192.0.2.2"), start).is_ok(), "another client has its own budget");
        assert!(rate.check(client, start + Duration::from_millis(500)).is_ok());
        assert!(rate.check(client, start + Duration::from_millis(500)).is_err());
        assert!(RatePerClient::new(0.0, 1).check(client, start).is_ok(), "0 is no limit");
    }
}
