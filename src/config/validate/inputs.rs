//! The `inputs` section: one tenant per input, and the credentials every input may
//! inherit from `globals.credentials`.
//!
//! Owns: input names, ids (unique, usable as a state file name), the duplicate-tenant
//! rule, the numeric input keys (by their rows in [`crate::config::keys`]), credentials
//! given directly or as `<key>_file`, and inheritance: `globals.credentials` gives
//! `client_id` and `client_secret` to every input that does not give its own (each key
//! separately; `tenant_id` is always the input's own).
//! Must not: echo a secret (only [`Secret::obfuscated`]), or read a `<secret>_file` of
//! `globals.credentials` more than once.

use std::collections::HashMap;

use super::rows::Values;
use super::service::check_services;
use super::{join, Checker, Fields};
use crate::config::keys;
use crate::config::model::{Credentials, InputConfig, Secret};
use crate::config::tree::{echo, Entry, Value};

/// A secret file must be smaller than this (64 KiB).
const MAX_SECRET_FILE: u64 = 64 * 1024;
/// Longest input id (it is part of the state file's name).
const MAX_ID_LEN: usize = 64;
const INPUT_BASE: &str = "office365_exchange_message";
const INPUT_KEYS: &[&str] = &[
    "id",
    "enabled",
    "max_historic_date_cutoff_days_back",
    "max_historic_date_margin_seconds",
    "credentials",
    "services",
];
/// The numeric input keys, checked by their rows.
const INPUT_ROWS: &[keys::Key] = &[
    keys::MAX_HISTORIC_DATE_CUTOFF_DAYS_BACK,
    keys::MAX_HISTORIC_DATE_MARGIN_SECONDS,
];
const CREDENTIAL_KEYS: &[&str] = &[
    "tenant_id",
    "client_id",
    "client_secret",
    "tenant_id_file",
    "client_id_file",
    "client_secret_file",
];
/// `globals.credentials`: one app registration for many tenants. `tenant_id` is known
/// here only to be refused with a precise fix (a tenant is always the input's own).
const GLOBAL_CREDENTIAL_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "client_id_file",
    "client_secret_file",
    "tenant_id",
    "tenant_id_file",
];

/// One secret key of a credentials mapping.
#[derive(Debug, Clone, Default)]
pub(super) enum Given {
    Secret(Secret),
    /// Neither `key` nor `key_file` is given.
    #[default]
    Absent,
    /// Given, but wrong; the mistake is already reported.
    Bad,
}

/// What `globals.credentials` gives every input.
#[derive(Debug, Clone, Default)]
pub(super) struct Inherited {
    /// `globals.credentials` is present (the "missing" fixes then mention it).
    present: bool,
    client_id: Given,
    client_secret: Given,
}

/// `globals.credentials` of the `globals` mapping `g`; each file is read once here.
pub(super) fn global_credentials(c: &mut Checker<'_>, g: &Fields<'_>) -> Inherited {
    let Some(e) = g.opt("credentials") else {
        return Inherited::default();
    };
    let path = g.path("credentials");
    let Some(cf) = c.fields(&e.node, &path, GLOBAL_CREDENTIAL_KEYS, Some(1)) else {
        return Inherited {
            present: true,
            client_id: Given::Bad,
            client_secret: Given::Bad,
        };
    };
    for key in ["tenant_id", "tenant_id_file"] {
        if let Some(e) = cf.get(key) {
            c.err(
                e.key_pos,
                None,
                &cf.path(key),
                "a tenant is not shared",
                "give `tenant_id` in each input's `credentials:`",
            );
        }
    }
    Inherited {
        present: true,
        client_id: secret(c, &cf, "client_id", 4),
        client_secret: secret(c, &cf, "client_secret", 6),
    }
}

pub(super) fn check_inputs(
    c: &mut Checker<'_>,
    top: &Fields<'_>,
    inherited: &Inherited,
) -> Vec<InputConfig> {
    let mut out: Vec<InputConfig> = Vec::new();
    let Some(e) = top.opt("inputs") else {
        c.err(
            top.pos,
            None,
            "inputs",
            "missing",
            format!("add an `inputs:` section with `{INPUT_BASE}:`"),
        );
        return out;
    };
    let Value::Map(entries) = &e.node.value else {
        c.err(
            e.node.pos,
            None,
            "inputs",
            format!("expected a mapping, found {}", e.node.value.kind()),
            format!("indent `{INPUT_BASE}:` under `inputs:`"),
        );
        return out;
    };
    // (id, line) and (tenant, api, name, line) seen so far, for duplicate checks.
    // First input per id: (line, name); inputs per tenant (lowercase): indices into
    // `out`. Maps, not scans: an MSSP's config has a thousand inputs.
    let mut ids: HashMap<String, (u32, String)> = HashMap::new();
    let mut tenants: HashMap<String, Vec<usize>> = HashMap::new();
    for ie in entries {
        let name = ie.key.as_str();
        let named_ok = name == INPUT_BASE
            || name
                .strip_prefix(INPUT_BASE)
                .and_then(|r| r.strip_prefix('_'))
                .is_some_and(|r| !r.is_empty());
        if !named_ok {
            c.err(ie.key_pos, None, &format!("inputs.{name}"), "unknown input", format!("name it `{INPUT_BASE}` or `{INPUT_BASE}_<tenant>` (e.g. `{INPUT_BASE}_contoso`)"));
            continue;
        }
        let path = format!("inputs.{name}");
        if let Some(input) = check_input(c, ie, &path, inherited) {
            if let Some((line, other)) = ids.get(&input.id) {
                let what = format!(
                    "id `{}` is also used by input `{other}` (line {line})",
                    echo(&input.id)
                );
                let pos = ie.node.get("id").map_or(ie.key_pos, |e| e.node.pos);
                c.err(
                    pos,
                    None,
                    &join(&path, "id"),
                    what,
                    "give every input its own id (it names the state file: never reuse one)",
                );
            } else {
                ids.insert(input.id.clone(), (ie.key_pos.line, name.to_string()));
            }
            // The same tenant twice sends every record twice — also when one input
            // runs the Reporting Web Service and the other Graph (both enabled).
            let same_tenant = tenants
                .entry(input.credentials.tenant_id.expose().to_ascii_lowercase())
                .or_default();
            let dup = same_tenant
                .iter()
                .filter_map(|&i| out.get(i))
                .find(|o| o.service.api == input.service.api || (o.enabled && input.enabled));
            if let Some(o) = dup {
                let what = format!(
                    "tenant `{}` already runs {} in input `{}`",
                    input.credentials.tenant_id.obfuscated(),
                    o.service.api.service_name(),
                    o.name
                );
                c.err(
                    ie.key_pos,
                    None,
                    &path,
                    what,
                    "remove one of the two inputs: both would send the same records",
                );
            }
            same_tenant.push(out.len());
            out.push(input);
        }
    }
    out
}

fn check_input(
    c: &mut Checker<'_>,
    ie: &Entry,
    path: &str,
    inherited: &Inherited,
) -> Option<InputConfig> {
    let before = c.diags.len();
    let f = c.fields(&ie.node, path, INPUT_KEYS, None)?;
    let id = match c.string(&f, "id", true) {
        None => {
            if f.opt("id").is_none() {
                c.err(
                    f.pos,
                    None,
                    &f.path("id"),
                    "missing",
                    "add `id: 12345` (a short unique id; it names the state file)",
                );
            }
            None
        }
        Some(id) => {
            let ok = !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
                && !id.starts_with('.');
            if !ok {
                let pos = f.get("id").map_or(f.pos, |e| e.node.pos);
                c.err(
                    pos,
                    None,
                    &f.path("id"),
                    format!("`{}` cannot name a state file", echo(&id)),
                    format!("use up to {MAX_ID_LEN} letters, digits, `_`, `-`, `.`"),
                );
            }
            Some(id)
        }
    };
    let enabled = c.boolean(&f, "enabled", true);
    let v = Values::check(c, &f, INPUT_ROWS);
    let credentials = check_credentials(c, &f, inherited);
    let service = check_services(c, &f);
    if c.diags.len() > before {
        return None;
    }
    Some(InputConfig {
        name: ie.key.clone(),
        id: id?,
        enabled,
        cutoff_days: v.u64(&keys::MAX_HISTORIC_DATE_CUTOFF_DAYS_BACK),
        margin_secs: v.u64(&keys::MAX_HISTORIC_DATE_MARGIN_SECONDS),
        credentials: credentials?,
        service: service?,
    })
}

fn check_credentials(
    c: &mut Checker<'_>,
    f: &Fields<'_>,
    inherited: &Inherited,
) -> Option<Credentials> {
    let Some(e) = f.opt("credentials") else {
        let fix = match (&inherited.client_id, &inherited.client_secret) {
            (Given::Secret(_), Given::Secret(_)) => {
                "add `credentials:` with tenant_id (client_id and client_secret come from globals.credentials)"
            }
            _ => "add `credentials:` with tenant_id, client_id and client_secret",
        };
        c.err(f.pos, Some(0), &f.path("credentials"), "missing", fix);
        return None;
    };
    let cf = c.fields(&e.node, &f.path("credentials"), CREDENTIAL_KEYS, Some(1))?;
    let mut tenant = match secret(c, &cf, "tenant_id", 2) {
        Given::Secret(s) => Some(s),
        Given::Bad => None,
        Given::Absent => {
            missing(c, &cf, "tenant_id", 2, false);
            None
        }
    };
    // The tenant goes into the token URL's path: only a GUID or a domain name may.
    if let Some(t) = &tenant {
        if !t
            .expose()
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
        {
            let e = cf.get("tenant_id").or_else(|| cf.get("tenant_id_file"));
            let pos = e.map_or(cf.pos, |e| e.node.pos);
            let what = format!("`{}` is not a tenant id", t.obfuscated());
            c.err(
                pos,
                None,
                &cf.path("tenant_id"),
                what,
                "give the Directory (tenant) ID GUID or the tenant's domain name",
            );
            tenant = None;
        }
    }
    let client = own_or_inherited(c, &cf, "client_id", 4, &inherited.client_id, inherited);
    let secret_v = own_or_inherited(
        c,
        &cf,
        "client_secret",
        6,
        &inherited.client_secret,
        inherited,
    );
    Some(Credentials {
        tenant_id: tenant?,
        client_id: client?,
        client_secret: secret_v?,
    })
}

/// The input's own `key` wins; else the one from `globals.credentials`; else missing.
fn own_or_inherited(
    c: &mut Checker<'_>,
    cf: &Fields<'_>,
    key: &str,
    code: u8,
    from_globals: &Given,
    inherited: &Inherited,
) -> Option<Secret> {
    match secret(c, cf, key, code) {
        Given::Secret(s) => Some(s),
        Given::Bad => None,
        Given::Absent => match from_globals {
            Given::Secret(s) => Some(s.clone()),
            // Already reported at `globals.credentials`.
            Given::Bad => None,
            Given::Absent => {
                missing(c, cf, key, code, inherited.present);
                None
            }
        },
    }
}

/// Report `key` (and `key_file`) missing with code `code`.
fn missing(c: &mut Checker<'_>, f: &Fields<'_>, key: &str, code: u8, globals_too: bool) {
    let pos = f.get(key).map_or(f.pos, |e| e.node.pos);
    let fix = if globals_too {
        format!("add `{key}:` (or `{key}_file: PATH`) here or under `globals.credentials`")
    } else {
        format!("add `{key}:` (or `{key}_file: PATH`)")
    };
    c.err(pos, Some(code), &f.path(key), "missing", fix);
}

/// `key` or `key_file`; codes: `missing` (empty) and `missing + 1` (not a string).
/// Absence is not reported here: the caller knows whether it may inherit. Never echoes
/// the value.
fn secret(c: &mut Checker<'_>, f: &Fields<'_>, key: &str, missing: u8) -> Given {
    let wrong_type = missing.saturating_add(1);
    let file_key = format!("{key}_file");
    let direct = f.opt(key);
    let via_file = f.opt(&file_key);
    match (direct, via_file) {
        (Some(_), Some(fe)) => {
            c.err(
                fe.key_pos,
                None,
                &f.path(&file_key),
                format!("both `{key}` and `{file_key}` are given"),
                "keep only one",
            );
            Given::Bad
        }
        (Some(e), None) => match &e.node.value {
            Value::Str(s) if !s.is_empty() => Given::Secret(Secret::new(s.clone())),
            Value::Str(_) => {
                c.err(
                    e.node.pos,
                    Some(missing),
                    &f.path(key),
                    "is empty",
                    format!("give the {key} from the Azure app registration"),
                );
                Given::Bad
            }
            other => {
                c.err(
                    e.node.pos,
                    Some(wrong_type),
                    &f.path(key),
                    format!("expected a string, found {}", other.kind()),
                    "quote the value",
                );
                Given::Bad
            }
        },
        (None, Some(fe)) => {
            let Value::Str(p) = &fe.node.value else {
                c.err(
                    fe.node.pos,
                    Some(wrong_type),
                    &f.path(&file_key),
                    format!("expected a path, found {}", fe.node.value.kind()),
                    "write the path of the file holding the secret",
                );
                return Given::Bad;
            };
            let resolved = c.resolve(p);
            let shown = c.shown(&resolved);
            let read = std::fs::File::open(&resolved).and_then(|file| {
                use std::io::Read;
                let mut s = String::new();
                file.take(MAX_SECRET_FILE).read_to_string(&mut s).map(|_| s)
            });
            match read {
                Ok(s) => {
                    let v = s.trim_end_matches(['\n', '\r']);
                    if v.is_empty() {
                        c.err(
                            fe.node.pos,
                            Some(missing),
                            &f.path(&file_key),
                            format!("`{shown}` is empty"),
                            format!("put the {key} in it"),
                        );
                        Given::Bad
                    } else {
                        Given::Secret(Secret::new(v))
                    }
                }
                Err(err) => {
                    c.err(
                        fe.node.pos,
                        Some(missing),
                        &f.path(&file_key),
                        format!("cannot read `{shown}`: {err}"),
                        "check the path and its permissions",
                    );
                    Given::Bad
                }
            }
        }
        (None, None) => Given::Absent,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse_str_with_env;
    use crate::error::Error;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const CREDS: &str = "outputs:\n  o:\n    type: stdout\ninputs:\n  office365_exchange_message:\n    id: 1\n    credentials:\n";

    #[test]
    fn secrets_from_files_are_trimmed_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("msgtrace-cfg-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t"), "tenant-from-file\r\n\n").unwrap();
        std::fs::write(dir.join("s"), "secret from file\n").unwrap();
        let text = format!(
            "{CREDS}      tenant_id_file: t\n      client_id: cid-12345\n      client_secret_file: {}\n    services:\n      office365_exchange_message_service:\n",
            dir.join("s").display()
        );
        let cfg = parse_str_with_env(&text, "c.yaml", &dir, &no_env).unwrap();
        let c = &cfg.inputs[0].credentials;
        assert_eq!(c.tenant_id.expose(), "tenant-from-file");
        assert_eq!(c.client_secret.expose(), "secret from file");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("tenant-from-file") && !shown.contains("secret from file"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn messages_never_echo_secrets() {
        let text = format!(
            "{CREDS}      tenant_id: \"\"\n      client_id: 5\n      client_secret: 'p@ss: word'\n      clent_secret: leaked?\n    services:\n"
        );
        let Err(Error::Config(lines)) =
            parse_str_with_env(&text, "c.yaml", Path::new("/"), &no_env)
        else {
            panic!("expected errors")
        };
        let all = lines.join("\n");
        assert!(!all.contains("p@ss"), "{all}");
        assert!(all.contains("InitVariablesError(2)"), "{all}");
    }
}
