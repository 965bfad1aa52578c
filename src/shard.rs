//! Tenant shards (`run --shard I/N`, `MSGTRACE_SHARD=I/N`, SPEC §1 and §8): which inputs
//! one replica of N runs, so that every tenant has exactly one owner.
//!
//! The assignment is a stable, documented hash: a tenant belongs to shard
//! `fnv1a64(lowercase(tenant_id)) mod N`, where `fnv1a64` is 64-bit FNV-1a (offset basis
//! 0xcbf29ce484222325, prime 0x100000001b3, one XOR-then-multiply per byte) over the UTF-8
//! bytes of the tenant id with ASCII letters lowercased (Entra tenant ids and domain names
//! are case-insensitive). It depends on nothing but the tenant id and N — not on input
//! names, ids, order or host — so every replica computes the same owner.
//! `I` may be `auto`: the ordinal after the last `-` of the host name's first label, as a
//! Kubernetes StatefulSet pod `msgtrace-3` has.
//!
//! Owns: parsing the shard spec, the hash, the ownership test. Must not: read the
//! environment or the host name itself (`app` passes them in) or touch any state.

use crate::error::{Error, Result};

/// FNV-1a 64 offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Most shards: far beyond any sensible replica count, and it keeps typos (`1/30000`) out.
pub const MAX_SHARDS: u32 = 4096;

/// One replica's share: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// 64-bit FNV-1a over the ASCII-lowercased bytes of `text`.
pub fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(FNV_PRIME)
    })
}

/// The shard (0 ≤ result < `count`) that owns `tenant_id`; 0 when `count` is 0.
pub fn shard_of(tenant_id: &str, count: u32) -> u32 {
    fnv1a64(tenant_id)
        .checked_rem(u64::from(count))
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(0)
}

impl Shard {
    /// True when this shard owns `tenant_id`.
    pub fn owns(&self, tenant_id: &str) -> bool {
        shard_of(tenant_id, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The StatefulSet ordinal of a host name: the digits after the last `-` of its first
/// label (`msgtrace-3` and `msgtrace-3.msgtrace.ns.svc` → 3). `None` when there is none.
pub fn host_ordinal(host: &str) -> Option<u32> {
    let label = host.split('.').next()?;
    let (_, digits) = label.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parse `I/N` (or `auto/N`, resolved with `host`). `source` names where the text came
/// from (`--shard`, `MSGTRACE_SHARD`) for the message. Every failure is a usage error.
pub fn parse(text: &str, host: &str, source: &str) -> Result<Shard> {
    let usage = |what: String| Error::Usage(format!("{source} {text:?}: {what}"));
    let (i, n) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| usage("expected I/N, e.g. 0/3 or auto/3".into()))?;
    let count: u32 = n
        .trim()
        .parse()
        .ok()
        .filter(|c| (1..=MAX_SHARDS).contains(c))
        .ok_or_else(|| {
            usage(format!(
                "the shard count must be a whole number from 1 to {MAX_SHARDS} — write I/N, e.g. 0/3"
            ))
        })?;
    let i = i.trim();
    let index = if i == "auto" {
        host_ordinal(host).ok_or_else(|| {
            usage(format!(
                "host name {host:?} has no trailing ordinal (like msgtrace-2) — give the index instead, e.g. 0/{count}"
            ))
        })?
    } else {
        i.parse().map_err(|_| {
            usage(format!(
                "the shard index must be a whole number or `auto` — write I/N, e.g. 0/{count}"
            ))
        })?
    };
    if index >= count {
        return Err(usage(format!(
            "shard index {index} is not below the count {count} — shards are numbered 0 to {}",
            count.saturating_sub(1)
        )));
    }
    Ok(Shard { index, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference test suite (Fowler/Noll/Vo).
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64("foobar"), 0x8594_4171_f739_67e8);
        // ASCII case does not matter.
        assert_eq!(fnv1a64("FooBar"), fnv1a64("foobar"));
    }

    #[test]
    fn every_tenant_has_exactly_one_owner() {
        for n in 1..=7u32 {
            for t in [
                "contoso.onmicrosoft.com",
                "7a1e2f0c-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
                "",
            ] {
                let owners: Vec<u32> = (0..n)
                    .filter(|i| {
                        Shard {
                            index: *i,
                            count: n,
                        }
                        .owns(t)
                    })
                    .collect();
                assert_eq!(owners, vec![shard_of(t, n)], "{t} of {n}");
            }
        }
        assert_eq!(shard_of("x", 0), 0);
        // The documented example (README): pinned so the definition never drifts.
        assert_eq!(shard_of("foobar", 3), (0x8594_4171_f739_67e8u64 % 3) as u32);
    }

    #[test]
    fn host_ordinals() {
        assert_eq!(host_ordinal("msgtrace-3"), Some(3));
        assert_eq!(host_ordinal("msgtrace-03"), Some(3));
        assert_eq!(host_ordinal("my-collector-12.msgtrace.ns.svc"), Some(12));
        assert_eq!(host_ordinal("msgtrace"), None);
        assert_eq!(host_ordinal("node2"), None);
        assert_eq!(host_ordinal("msgtrace-"), None);
        assert_eq!(host_ordinal("msgtrace-3a"), None);
        assert_eq!(host_ordinal("a.b-3"), None);
        assert_eq!(host_ordinal("msgtrace-99999999999"), None);
    }

    #[test]
    fn parses_specs() {
        let p = |t: &str, h: &str| parse(t, h, "--shard");
        assert_eq!(p("1/3", "x").ok(), Some(Shard { index: 1, count: 3 }));
        assert_eq!(p(" 0 / 1 ", "x").ok(), Some(Shard { index: 0, count: 1 }));
        assert_eq!(
            p("auto/4", "msgtrace-2").ok(),
            Some(Shard { index: 2, count: 4 })
        );
        for bad in [
            "3", "3/3", "4/3", "0/0", "-1/3", "a/3", "1/x", "1/4097", "/3", "1/",
        ] {
            let e = p(bad, "x").err().map(|e| (e.exit_code(), e.to_string()));
            let (code, msg) = e.unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(code, 1, "{bad}");
            assert!(msg.starts_with("usage: --shard "), "{msg}");
            assert!(msg.contains(" — ") || msg.contains("expected I/N"), "{msg}");
        }
        let e = p("auto/3", "buildhost").err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|m| m.contains("\"buildhost\" has no trailing ordinal")),
            "{e:?}"
        );
        let e = p("auto/3", "msgtrace-5").err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|m| m.contains("not below the count 3")),
            "{e:?}"
        );
    }
}
