//! Event encoding: a `Record` -> one JSON line. CONTRACT SKELETON.

use crate::record::Record;

/// Append `{...fields..., "@devo_pulling_id": <id>}\n` to `out`. No raw newline inside.
pub fn encode(record: &Record<'_>, pulling_id: i64, out: &mut Vec<u8>) {
    let _ = (record, pulling_id, out);
    unimplemented!()
}
