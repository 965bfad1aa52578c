//! Deterministic message-trace data for the emulator, and its wire encodings.
//!
//! Owns: the seeded hash/PRNG, UTC civil-time formatting and parsing (independent of
//! msgtrace's own `time` module, so the collector is not tested against itself), the
//! per-tenant flow of records (generated lazily one hour bucket at a time, so 100 tenants
//! cost nothing until queried), the rendering of one record into its fields, and the
//! XML / JSON text escapes in several equivalent variants. Must not: do IO, read the
//! clock or keep state — the same (seed, tenant, hour) always yields the same records.

use std::fmt::Write as _;

/// Seconds in an hour / a day.
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;

/// Most lateness a record gets: visible 0–30 minutes after its `Received`.
pub const MAX_LATENESS_SECS: u64 = 1_800;

/// `msg` serial of the one known five-recipient message of each tenant.
pub const KNOWN_MSG: u64 = 1 << 63;
/// `msg` serial of the burst message (`Flow::burst`: one message, many recipients).
pub const BURST_MSG: u64 = (1 << 63) | 1;

/// SplitMix64 finaliser: a good 64-bit mixer.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of two words.
pub fn hash2(a: u64, b: u64) -> u64 {
    mix(a ^ mix(b).rotate_left(23))
}

/// Hash of a string (FNV-1a, then mixed).
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// A small deterministic PRNG (SplitMix64 stream).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A hash mapped to [0, 1).
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

// ---------------------------------------------------------------- civil time

/// Days since 1970-01-01 for a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) for days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DDThh:mm:ss` (no zone).
pub fn fmt_secs(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(DAY));
    let t = secs.rem_euclid(DAY);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// `YYYY-MM-DDThh:mm:ss.fffffff` (7 digits, no zone).
pub fn fmt_7(secs: i64, nanos: u32) -> String {
    format!("{}.{:07}", fmt_secs(secs), nanos / 100)
}

/// `YYYY-MM-DDThh:mm:ssZ`.
pub fn fmt_z(secs: i64) -> String {
    format!("{}Z", fmt_secs(secs))
}

/// Parse `YYYY-MM-DD[Thh:mm[:ss[.f+]]][Z]` into (epoch secs, nanos). Lenient on purpose:
/// it parses what a client sends, and must not be stricter than Microsoft.
pub fn parse_datetime(s: &str) -> Option<(i64, u32)> {
    let s = s.trim();
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix('z'))
        .unwrap_or(s);
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (s.get(..i)?, s.get(i + 1..)?),
        None => (s, "00:00:00"),
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (time, None),
    };
    let mut tp = hms.split(':');
    let h: i64 = tp.next()?.parse().ok()?;
    let mi: i64 = tp.next()?.parse().ok()?;
    let se: i64 = match tp.next() {
        Some(x) => x.parse().ok()?,
        None => 0,
    };
    if tp.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut nanos = 0u32;
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        for i in 0..9 {
            let dgt = f.as_bytes().get(i).map_or(0, |b| u32::from(b - b'0'));
            nanos = nanos * 10 + dgt;
        }
    }
    Some((
        days_from_civil(y, mo, d) * DAY + h * 3600 + mi * 60 + se,
        nanos,
    ))
}

// ---------------------------------------------------------------- the flow

/// One record in compact form; all text is derived from (`msg`, `rcpt`) on render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    pub secs: i64,
    pub nanos: u32,
    /// Message serial within the tenant: `hour << 24 | n`, or `KNOWN_MSG`.
    pub msg: u64,
    /// Recipient index within the message (0..5; up to the burst's size for `BURST_MSG`).
    pub rcpt: u32,
    /// Seconds after `Received` at which the record becomes visible.
    pub lateness: u32,
}

impl Rec {
    pub fn visible_at(&self) -> i64 {
        self.secs + i64::from(self.lateness)
    }
}

/// Newest first, ties broken by message then recipient: the order pages are served in.
pub fn newest_first(a: &Rec, b: &Rec) -> std::cmp::Ordering {
    (b.secs, b.nanos, a.msg, a.rcpt).cmp(&(a.secs, a.nanos, b.msg, b.rcpt))
}

/// A tenant's record flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub tenant_seed: u64,
    /// No record is older than this (epoch secs).
    pub data_start: i64,
    pub records_per_hour: u32,
    /// (secs, nanos) of the known five-recipient message.
    pub known_at: (i64, u32),
    pub subject_pad: usize,
    pub org: String,
    /// When set, `Pending`/`GettingStatus` records turn `Delivered` this many seconds
    /// after they become visible (Microsoft's settling time, shortened).
    pub settle_secs: Option<u32>,
    /// When set, `(percent, secs)`: that share of records becomes visible exactly `secs`
    /// after its `Received`, the others at once (instead of 0–30 minutes at random).
    pub lateness: Option<(u8, u32)>,
    /// When set, `(secs, recipients)`: one more message at that whole second with that
    /// many recipients (a mail to a large distribution list), visible at once.
    pub burst: Option<(i64, u32)>,
}

impl Flow {
    pub fn new(
        tenant_id: &str,
        seed: u64,
        origin: i64,
        data_days: u32,
        records_per_hour: u32,
        subject_pad: usize,
    ) -> Flow {
        let tenant_seed = hash2(seed, hash_str(tenant_id));
        let origin_hour = origin.div_euclid(HOUR) * HOUR;
        Flow {
            tenant_seed,
            data_start: origin - i64::from(data_days) * DAY,
            records_per_hour,
            // Two hours before the origin's hour, off any minute edge.
            known_at: (origin_hour - 2 * HOUR + 10 * 60 + 30, 500_000_000),
            subject_pad,
            org: format!("contoso{:03}.onmicrosoft.com", tenant_seed % 1000),
            settle_secs: None,
            lateness: None,
            burst: None,
        }
    }

    /// Append the records of hour bucket `hour` (epoch hours).
    pub fn bucket(&self, hour: i64, out: &mut Vec<Rec>) {
        let start = hour * HOUR;
        if start + HOUR <= self.data_start {
            return;
        }
        let mut rng = Rng::new(hash2(self.tenant_seed, hour as u64));
        let mut remaining = u64::from(self.records_per_hour);
        let mut n: u64 = 0;
        while remaining > 0 {
            let k = (1 + rng.below(5)).min(remaining);
            let msg = ((hour as u64) << 24) | (n & 0xFF_FFFF);
            // Message 0 of each hour sits exactly on a 15-minute edge (the default
            // window), message 1 on a whole minute: the edges a collector must handle.
            let (secs, nanos) = match n {
                0 => (start + 900 * rng.below(4) as i64, 0),
                1 => (start + 60 * rng.below(60) as i64, 0),
                _ => (
                    start + rng.below(HOUR as u64) as i64,
                    rng.below(10_000_000) as u32 * 100,
                ),
            };
            let mh = hash2(self.tenant_seed, msg);
            // One message in five has microsecond precision (served with 6 digits).
            let nanos = if mh % 5 == 0 {
                nanos / 1000 * 1000
            } else {
                nanos
            };
            for rcpt in 0..k as u32 {
                let lh = hash2(mh, u64::from(rcpt) + 1000);
                let lateness = match self.lateness {
                    Some((pct, late)) if (lh >> 8) % 100 < u64::from(pct) => late,
                    Some(_) => 0,
                    None if lh % 10 < 3 => 0,
                    None => ((lh >> 8) % (MAX_LATENESS_SECS + 1)) as u32,
                };
                if secs >= self.data_start {
                    out.push(Rec {
                        secs,
                        nanos,
                        msg,
                        rcpt,
                        lateness,
                    });
                }
            }
            remaining -= k;
            n += 1;
        }
        if let Some((bs, count)) = self.burst {
            if bs >= start && bs < start + HOUR {
                out.extend((0..count).map(|rcpt| Rec {
                    secs: bs,
                    nanos: 0,
                    msg: BURST_MSG,
                    rcpt,
                    lateness: 0,
                }));
            }
        }
        let (ks, kn) = self.known_at;
        if ks >= start && ks < start + HOUR && ks >= self.data_start {
            for rcpt in 0..5u32 {
                out.push(Rec {
                    secs: ks,
                    nanos: kn,
                    msg: KNOWN_MSG,
                    rcpt,
                    lateness: 0,
                });
            }
        }
    }

    /// Records with `from <= secs < to` visible at `now`, newest first.
    pub fn records(&self, from: i64, to: i64, now: i64) -> Vec<Rec> {
        let mut out = Vec::new();
        if to <= from {
            return out;
        }
        let mut tmp = Vec::new();
        let mut hour = from.div_euclid(HOUR);
        while hour * HOUR < to {
            tmp.clear();
            self.bucket(hour, &mut tmp);
            out.extend(
                tmp.iter()
                    .filter(|r| r.secs >= from && r.secs < to && r.visible_at() <= now),
            );
            hour += 1;
        }
        out.sort_by(newest_first);
        out
    }

    /// Number of recipients of the message `msg` (for the known message: 5).
    fn is_known(msg: u64) -> bool {
        msg == KNOWN_MSG
    }

    /// Render one record's fields as seen at `now` (status may settle).
    pub fn render(&self, r: &Rec, now: i64) -> Fields {
        let mh = hash2(self.tenant_seed, r.msg);
        let rh = hash2(mh, u64::from(r.rcpt));
        let known = Self::is_known(r.msg);
        let g1 = hash2(mh, 1);
        let g2 = hash2(mh, 2);
        let trace_id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            g1 >> 32,
            (g1 >> 16) & 0xFFFF,
            g1 & 0xFFF,
            0x8000 | (g2 >> 48 & 0x3FFF),
            g2 & 0xFFFF_FFFF_FFFF
        );
        let message_id = if !known && mh % 17 == 3 {
            None
        } else {
            Some(format!(
                "<{:016X}.{}@EUR0{}.PROD.OUTLOOK.COM>",
                hash2(mh, 3),
                mh % 997,
                mh % 9
            ))
        };
        let sender = match mh % 5 {
            0 => format!("news+{}@lists.example.org", mh % 300),
            1 => format!("O'Brien.{}@fabrikam.example", mh % 40),
            _ => format!("user{}@fabrikam.example", mh % 200),
        };
        let base = (mh >> 20) % 1000;
        // One address in 25 has an apostrophe, one in 25 a non-ASCII letter (trace
        // detail URLs must double the `'` and percent-encode the UTF-8).
        let n = (base + u64::from(r.rcpt) * 37) % 1000;
        let recipient = if r.msg == BURST_MSG {
            format!("member{}@dl.contoso.example", r.rcpt)
        } else {
            match n % 25 {
                3 => format!("o'neil.{n}@contoso.example"),
                11 => format!("jürgen.{n}@contoso.example"),
                _ => format!("user{n}@contoso.example"),
            }
        };
        let mut subject = if known {
            "Five recipients: all hands ✓ 😀".to_string()
        } else {
            subject_text(mh)
        };
        if self.subject_pad > 0 {
            pad(&mut subject, self.subject_pad);
        }
        let status = if known {
            "Delivered"
        } else {
            STATUSES
                .iter()
                .find(|(_, w)| (rh >> 7) % 100 < *w)
                .map_or("Delivered", |(s, _)| s)
        };
        let status = match (status, self.settle_secs) {
            ("Pending" | "GettingStatus", Some(d)) if now >= r.visible_at() + i64::from(d) => {
                "Delivered"
            }
            (s, _) => s,
        };
        let from_ip = if mh % 4 == 0 {
            format!("2a01:111:f400:7e{:02x}::{:x}", mh % 256, (mh >> 8) % 4096)
        } else {
            format!("40.107.{}.{}", (mh >> 8) % 256, (mh >> 16) % 254 + 1)
        };
        let to_ip = if status == "Delivered" && rh % 3 != 0 {
            Some(format!(
                "10.{}.{}.{}",
                rh % 256,
                (rh >> 8) % 256,
                (rh >> 16) % 254 + 1
            ))
        } else {
            None
        };
        // Whole-second records are served as `.0000000` or without a fraction (both
        // occur in .NET output), microsecond ones with 6 digits, the rest with 7.
        let received_rws = if r.nanos == 0 && mh % 2 == 0 {
            fmt_secs(r.secs)
        } else if r.nanos != 0 && mh % 5 == 0 {
            format!("{}.{:06}", fmt_secs(r.secs), r.nanos / 1000)
        } else {
            fmt_7(r.secs, r.nanos)
        };
        Fields {
            organization: self.org.clone(),
            message_id,
            received_rws,
            received_graph: fmt_z(r.secs),
            sender,
            recipient,
            subject,
            status,
            to_ip,
            from_ip,
            size: 900 + (mh % 5_000_000) as u32,
            trace_id,
            variant: (rh % 3) as u8,
            direction: if mh % 3 == 0 { "outbound" } else { "inbound" },
        }
    }
}

/// One trace detail event as the emulator serves it (`getDetailsByRecipient`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailEvent {
    /// `dateTime`, RFC 3339 UTC as served.
    pub date: String,
    pub event: String,
    /// `None`: served as JSON null.
    pub action: Option<String>,
    pub description: String,
    /// The XML string.
    pub data: String,
}

/// The 2–6 detail events of (trace id, recipient) received at `secs`: derived from a
/// hash of the pair, identical on every call.
pub fn detail_events(trace_id: &str, recipient: &str, secs: i64, status: &str) -> Vec<DetailEvent> {
    const EVENTS: [&str; 5] = [
        "Send external",
        "Transport rule",
        "Spam Diagnostics",
        "Redirect",
        "Defer",
    ];
    let h = hash2(
        hash_str(trace_id),
        hash_str(&recipient.to_ascii_lowercase()),
    );
    let n = 2 + (h % 5) as usize;
    (0..n)
        .map(|i| {
            let eh = hash2(h, i as u64);
            let (event, description) = match i {
                0 => (
                    "Receive".to_string(),
                    format!("Message received by: DB9PR02MB{:04}.eurprd02.prod.outlook.com — für {recipient}", eh % 10_000),
                ),
                i if i + 1 == n => (
                    if status == "Failed" { "Fail" } else { "Drop" }.to_string(),
                    format!("Reason: [{{LED=550 5.7.{} Rejected by rule «Block '{}'»}}]", eh % 10, eh % 97),
                ),
                _ => (
                    EVENTS[(eh % EVENTS.len() as u64) as usize].to_string(),
                    format!("Step {i}: verdict SCL={} ✓", eh % 10),
                ),
            };
            let frac = if eh % 3 == 0 { String::new() } else { format!(".{:03}", eh % 1000) };
            let date = format!("{}{frac}Z", fmt_secs(secs + i as i64));
            let action = match eh % 4 {
                0 => None,
                1 => Some("Reject".to_string()),
                2 => Some("MoveToJmf".to_string()),
                _ => Some(String::new()),
            };
            let data = format!(
                "<root><MEP Name=\"Connector\" String=\"Default&amp;{}\"/><MEP Name=\"Rule\" String=\"r-{}\"/></root>",
                eh % 13,
                eh % 1000
            );
            DetailEvent { date, event, action, description, data }
        })
        .collect()
}

/// Status values with cumulative percentage thresholds.
const STATUSES: [(&str, u64); 7] = [
    ("Delivered", 70),
    ("FilteredAsSpam", 80),
    ("Failed", 86),
    ("Pending", 90),
    ("Expanded", 94),
    ("Quarantined", 97),
    ("GettingStatus", 100),
];

/// The decoded subject of a message: ASCII, markup characters, BMP and astral text,
/// quotes, backslashes, tabs and the empty string.
fn subject_text(mh: u64) -> String {
    let n = mh % 10_000;
    match (mh >> 33) % 12 {
        0 => format!("Weekly status report #{n}"),
        1 => format!("R&D budget <draft> for Q{} & more", n % 4 + 1),
        2 => format!("Café résumé naïve — {n}"),
        3 => format!("Party time 😀🎉 #{n}"),
        4 => format!("会議の議題 {n}"),
        5 => format!("\"Quoted\" and 'single' {n}"),
        6 => String::new(),
        7 => format!("Backslash \\ path C:\\temp\\{n}"),
        8 => format!("Tab\tseparated {n}"),
        9 => format!("Ünïcödé music 𝄞 {n}"),
        10 => format!("Re: FW: invoice {n} – due"),
        _ => format!("Meeting notes {n}"),
    }
}

/// Append exactly `bytes` ASCII bytes of filler text.
fn pad(s: &mut String, bytes: usize) {
    const FILL: &str = " lorem ipsum dolor sit amet, consectetur adipiscing elit";
    let mut left = bytes;
    while left > 0 {
        let take = left.min(FILL.len());
        s.push_str(FILL.get(..take).unwrap_or(""));
        left -= take;
    }
}

/// One record's text fields, decoded (what the collector must deliver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub organization: String,
    pub message_id: Option<String>,
    pub received_rws: String,
    pub received_graph: String,
    pub sender: String,
    pub recipient: String,
    pub subject: String,
    pub status: &'static str,
    pub to_ip: Option<String>,
    pub from_ip: String,
    pub size: u32,
    pub trace_id: String,
    /// Which equivalent escaping variant the wire text uses (0..3).
    pub variant: u8,
    /// Graph's optional extra field.
    pub direction: &'static str,
}

/// Graph's status: the RWS status with its first letter lower-cased.
pub fn graph_status(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------- escapes

/// XML character data, in one of three equivalent forms: 0 minimal escapes with raw
/// UTF-8; 1 decimal references for non-ASCII plus `&quot;`/`&apos;`; 2 hex references
/// for non-ASCII, tab, `<` and `&`.
pub fn xml_text(s: &str, variant: u8, out: &mut String) {
    for c in s.chars() {
        match (variant, c) {
            (2, '&') => out.push_str("&#x26;"),
            (2, '<') => out.push_str("&#60;"),
            (2, '\t') => out.push_str("&#x9;"),
            (_, '&') => out.push_str("&amp;"),
            (_, '<') => out.push_str("&lt;"),
            (0 | 1, '>') => out.push_str("&gt;"),
            (1, '"') => out.push_str("&quot;"),
            (1, '\'') => out.push_str("&apos;"),
            (1, c) if !c.is_ascii() => {
                let _ = write!(out, "&#{};", c as u32);
            }
            (2, c) if !c.is_ascii() => {
                let _ = write!(out, "&#x{:X};", c as u32);
            }
            (_, c) => out.push(c),
        }
    }
}

/// A JSON string literal (with quotes): variant 0 raw UTF-8 with the needed escapes;
/// variant 1 every non-ASCII character and `<`, `>`, `&`, `'` as `\uXXXX` (surrogate
/// pairs for astral characters) and `/` as `\/`.
pub fn json_str(s: &str, variant: u8, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '/' if variant == 1 => out.push_str("\\/"),
            '<' | '>' | '&' | '\'' if variant == 1 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if variant == 1 && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{:04X}", u);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Percent-decode a query component (`+` is a space).
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encode for a query value: unreserved characters, `'`, `:` and `$` stay.
pub fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~':$".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len() * 4 / 3 + 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(A[idx as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip() {
        let (s, n) = parse_datetime("2026-11-24T10:00:00.1234567").unwrap();
        assert_eq!(fmt_7(s, n), "2026-11-24T10:00:00.1234567");
        assert_eq!(parse_datetime("2026-11-24T10:00:00Z"), Some((s, 0)));
    }
}
