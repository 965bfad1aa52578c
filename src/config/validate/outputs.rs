//! The `outputs` section: one function per output type, registered in [`OUTPUT_TYPES`].
//!
//! Owns: the output names and types, each type's config keys and their checks
//! (receivers' host and port, `SSL`/`TCP`, certificate files under `certs/`, the syslog
//! tag, the file output's path). A new output type is its check function plus one
//! registration line in [`OUTPUT_TYPES`] (and its [`OutputKind`] variant).
//! Must not: open the files or sockets it names (only that a file exists and is readable).

use super::{suggest, Checker, Fields};
use crate::config::model::{OutputConfig, OutputKind, TlsOutput, DEFAULT_TAG};
use crate::config::tree::{echo, Node, Value};

/// One output type: its `type:` value, the keys of its `config:` and their check.
struct OutputType {
    name: &'static str,
    keys: &'static [&'static str],
    check: fn(&mut Checker<'_>, &Fields<'_>) -> Option<OutputKind>,
}

/// Every output type, in the order the messages list them.
const OUTPUT_TYPES: &[OutputType] = &[
    OutputType {
        name: "devo_platform",
        keys: TLS_KEYS,
        check: devo,
    },
    OutputType {
        name: "syslog",
        keys: SYSLOG_KEYS,
        check: syslog,
    },
    OutputType {
        name: "relp",
        keys: SYSLOG_KEYS,
        check: relp,
    },
    OutputType {
        name: "stdout",
        keys: &[],
        check: stdout,
    },
    OutputType {
        name: "file",
        keys: FILE_KEYS,
        check: file,
    },
];

const OUTPUT_KEYS: &[&str] = &["type", "config"];
/// A TLS receiver (Devo): `address`, `port`, `type`, certificate files.
/// `detail_tag`: the tag of trace detail events (SPEC §4).
const TLS_KEYS: &[&str] = &[
    "address",
    "port",
    "type",
    "chain",
    "cert",
    "key",
    "detail_tag",
];
/// A syslog receiver: [`TLS_KEYS`] and the syslog `tag`.
const SYSLOG_KEYS: &[&str] = &[
    "address",
    "port",
    "type",
    "chain",
    "cert",
    "key",
    "tag",
    "detail_tag",
];
const FILE_KEYS: &[&str] = &["path", "follow_symlinks"];

fn devo(c: &mut Checker<'_>, f: &Fields<'_>) -> Option<OutputKind> {
    check_tls_output(c, f, Certs::Required).map(OutputKind::Devo)
}

fn syslog(c: &mut Checker<'_>, f: &Fields<'_>) -> Option<OutputKind> {
    check_tls_output(c, f, Certs::Optional).map(OutputKind::Syslog)
}

fn relp(c: &mut Checker<'_>, f: &Fields<'_>) -> Option<OutputKind> {
    check_tls_output(c, f, Certs::Optional).map(OutputKind::Relp)
}

fn stdout(_: &mut Checker<'_>, _: &Fields<'_>) -> Option<OutputKind> {
    Some(OutputKind::Stdout)
}

/// What a TLS output requires of its certificate files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Certs {
    /// Devo: `chain`, `cert` and `key` must all be given when `type` is SSL.
    Required,
    /// Any receiver: all optional, but `cert` and `key` go together.
    Optional,
}

pub(super) fn check_outputs(c: &mut Checker<'_>, top: &Fields<'_>) -> Vec<OutputConfig> {
    let mut out = Vec::new();
    let Some(e) = top.opt("outputs") else {
        c.err(
            top.pos,
            None,
            "outputs",
            "missing",
            "add an `outputs:` section with at least one output (e.g. `type: stdout`)",
        );
        return out;
    };
    let Value::Map(entries) = &e.node.value else {
        c.err(
            e.node.pos,
            None,
            "outputs",
            format!("expected a mapping, found {}", e.node.value.kind()),
            "indent one output per key under `outputs:`",
        );
        return out;
    };
    if entries.is_empty() {
        c.err(
            e.node.pos,
            None,
            "outputs",
            "no output configured",
            "add one, e.g. `devo_1:` with `type: devo_platform`",
        );
    }
    for oe in entries {
        let path = format!("outputs.{}", oe.key);
        let Some(f) = c.fields(&oe.node, &path, OUTPUT_KEYS, None) else {
            continue;
        };
        let Some(kind) = c.string(&f, "type", false) else {
            if f.opt("type").is_none() {
                let names: Vec<&str> = OUTPUT_TYPES.iter().map(|t| t.name).collect();
                let first = names.first().copied().unwrap_or_default();
                let others = names.get(1..).unwrap_or_default().join(", ");
                let fix = format!("add `type: {first}` (or {others})");
                c.err(f.pos, None, &f.path("type"), "missing", fix);
            }
            continue;
        };
        let type_pos = f.get("type").map_or(f.pos, |e| e.node.pos);
        let Some(ty) = OUTPUT_TYPES.iter().find(|t| t.name == kind) else {
            let names: Vec<&str> = OUTPUT_TYPES.iter().map(|t| t.name).collect();
            c.err(
                type_pos,
                None,
                &f.path("type"),
                format!("unknown output type `{}`", echo(&kind)),
                format!(
                    "{} (one of {})",
                    suggest(&kind, &names).replace("remove it; known keys: ", "use one of: "),
                    names.join(", ")
                ),
            );
            continue;
        };
        let cfg_path = f.path("config");
        let empty = Node {
            pos: f.pos,
            value: Value::Map(Vec::new()),
        };
        let cfg_node = f.opt("config").map_or(&empty, |e| &e.node);
        let Some(cf) = c.fields(cfg_node, &cfg_path, ty.keys, None) else {
            continue;
        };
        if let Some(kind) = (ty.check)(c, &cf) {
            out.push(OutputConfig {
                name: oe.key.clone(),
                kind,
            });
        }
    }
    out
}

fn file(c: &mut Checker<'_>, f: &Fields<'_>) -> Option<OutputKind> {
    match c.string(f, "path", false) {
        Some(p) if !p.is_empty() => Some(OutputKind::File {
            path: c.resolve(&p),
            follow_symlinks: c.boolean(f, "follow_symlinks", false),
        }),
        Some(_) => {
            let pos = f.get("path").map_or(f.pos, |e| e.node.pos);
            c.err(
                pos,
                None,
                &f.path("path"),
                "is empty",
                "give the file to append events to",
            );
            None
        }
        None => {
            if f.opt("path").is_none() {
                c.err(
                    f.pos,
                    None,
                    &f.path("path"),
                    "missing",
                    "add `path: events.jsonl`",
                );
            }
            None
        }
    }
}

/// A receiver over TCP or TLS (Devo, syslog, and any later TLS output).
fn check_tls_output(c: &mut Checker<'_>, f: &Fields<'_>, certs: Certs) -> Option<TlsOutput> {
    let before = c.diags.len();
    let address = c.string(f, "address", false);
    match &address {
        None if f.opt("address").is_none() => {
            c.err(
                f.pos,
                None,
                &f.path("address"),
                "missing",
                "add `address: collector-us.devo.io` (your receiver's host)",
            );
        }
        Some(a) if a.is_empty() || a.contains([' ', '/', '\t']) => {
            let pos = f.get("address").map_or(f.pos, |e| e.node.pos);
            c.err(
                pos,
                None,
                &f.path("address"),
                format!("`{}` is not a host name", echo(a)),
                "write a host name or IP address, without scheme or path",
            );
        }
        _ => {}
    }
    let port = if f.opt("port").is_none() {
        c.err(
            f.pos,
            None,
            &f.path("port"),
            "missing",
            "add `port: 443` (Devo) or your receiver's port",
        );
        0
    } else {
        c.int(f, "port", 1, 65_535, 443, (None, None))
    };
    let tls = match c.string(f, "type", false) {
        None => true,
        Some(t) if t.eq_ignore_ascii_case("ssl") || t.eq_ignore_ascii_case("tls") => true,
        Some(t) if t.eq_ignore_ascii_case("tcp") => false,
        Some(t) => {
            let pos = f.get("type").map_or(f.pos, |e| e.node.pos);
            c.err(
                pos,
                None,
                &f.path("type"),
                format!("`{}` is not a connection type", echo(&t)),
                "write `type: SSL` or `type: TCP`",
            );
            true
        }
    };
    let mut files = [None, None, None];
    for (slot, key) in files.iter_mut().zip(["chain", "cert", "key"]) {
        let Some(name) = c.string(f, key, false) else {
            if tls && certs == Certs::Required && f.opt(key).is_none() {
                c.err(f.pos, None, &f.path(key), "missing", format!("add `{key}:` naming the file in certs/ (Devo → Administration → Credentials → X.509)"));
            }
            continue;
        };
        let Some(e) = f.get(key) else { continue };
        let resolved = c.resolve_cert(&name);
        *slot = c.existing_file(
            e,
            &f.path(key),
            resolved,
            None,
            "put the file in certs/ or give its path",
        );
    }
    let [chain, cert, key] = files;
    if certs == Certs::Optional && tls && (f.opt("cert").is_some() != f.opt("key").is_some()) {
        c.err(
            f.pos,
            None,
            &f.path("cert"),
            "`cert` and `key` go together",
            "give both (client certificate) or neither",
        );
    }
    let tag = c
        .string(f, "tag", false)
        .unwrap_or_else(|| DEFAULT_TAG.to_string());
    let detail_tag = c.string(f, "detail_tag", false).unwrap_or_default();
    if c.diags.len() > before {
        return None;
    }
    Some(TlsOutput {
        address: address.unwrap_or_default(),
        port: u16::try_from(port).unwrap_or(0),
        tls,
        chain,
        cert,
        key,
        tag,
        detail_tag,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::OUTPUT_TYPES;
    use crate::config::{parse_str_with_env, OutputKind};
    use crate::error::Error;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn outputs(body: &str) -> Result<Vec<OutputKind>, Vec<String>> {
        let text = format!("outputs:\n{body}inputs:\n  office365_exchange_message:\n    id: 1\n    credentials:\n      tenant_id: t\n      client_id: c\n      client_secret: s\n    services:\n      office365_exchange_message_service:\n");
        match parse_str_with_env(&text, "o.yaml", Path::new("/nonexistent"), &no_env) {
            Ok(cfg) => Ok(cfg.outputs.into_iter().map(|o| o.kind).collect()),
            Err(Error::Config(lines)) => Err(lines),
            Err(e) => Err(vec![e.to_string()]),
        }
    }

    #[test]
    fn each_registered_type_is_dispatched_and_named_in_messages() {
        let names: Vec<&str> = OUTPUT_TYPES.iter().map(|t| t.name).collect();
        assert_eq!(names, ["devo_platform", "syslog", "relp", "stdout", "file"]);
        let got = outputs(
            "  a:\n    type: stdout\n  b:\n    type: file\n    config:\n      path: /tmp/x\n  c:\n    type: syslog\n    config:\n      address: h\n      port: 514\n      type: TCP\n  d:\n    type: devo_platform\n    config:\n      address: h\n      port: 443\n      type: TCP\n",
        )
        .unwrap();
        assert!(matches!(
            got.as_slice(),
            [
                OutputKind::Stdout,
                OutputKind::File { .. },
                OutputKind::Syslog(_),
                OutputKind::Devo(_)
            ]
        ));
        let lines =
            outputs("  a:\n    config:\n      path: x\n  b:\n    type: sislog\n").unwrap_err();
        assert!(
            lines[0].ends_with("add `type: devo_platform` (or syslog, relp, stdout, file)"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains(
                "did you mean `syslog`? (one of devo_platform, syslog, relp, stdout, file)"
            ),
            "{lines:?}"
        );
        // A type's keys are its own: `tag` belongs to syslog, not to Devo.
        let lines = outputs("  d:\n    type: devo_platform\n    config:\n      address: h\n      port: 443\n      type: TCP\n      tag: x\n").unwrap_err();
        assert!(
            lines[0].contains("outputs.d.config.tag: unknown key"),
            "{lines:?}"
        );
    }
}
