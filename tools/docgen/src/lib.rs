//! parley-docgen: the README's configuration reference, generated from the code.
//!
//! Two tables are generated: every environment variable each binary reads
//! (from the `ENV` lists next to each configuration loader) and every
//! `ChatCluster` field (from the CRD schema the operator generates). Each
//! lives in the README between `<!-- generated:NAME -->` and
//! `<!-- /generated:NAME -->`; `cargo run -p parley-docgen` rewrites them and
//! a test fails while they are stale.

use std::collections::BTreeMap;

use parley_common::config::{REQUIRED, UNSET, VarDoc};
use serde_json::Value;

/// Why a README could not be updated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocError {
    /// A generated section's markers are missing or out of order.
    #[error(
        "README has no well-formed `<!-- generated:{0} -->` … `<!-- /generated:{0} -->` section"
    )]
    MissingSection(&'static str),
    /// The CRD schema is not shaped as expected.
    #[error("the ChatCluster CRD has no openAPIV3Schema for its first version")]
    NoSchema,
}

/// Every binary and the variables it reads, in the README's order.
pub fn binaries() -> Vec<(&'static str, Vec<VarDoc>)> {
    vec![
        ("user", parley_user::config::reference()),
        (
            "user mongodb-user",
            parley_common::mongo_user::ProvisionConfig::reference(),
        ),
        ("chat", parley_chat::config::reference()),
        ("mail", parley_mail::config::reference()),
        ("operator", parley_operator::settings::reference()),
    ]
}

fn default_cell(default: &str) -> String {
    match default {
        REQUIRED => "required".into(),
        UNSET => "unset".into(),
        value => format!("`{value}`"),
    }
}

fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The environment variable table: one row per variable, naming the binaries
/// that read it (`all` when every one does).
pub fn env_table(binaries: &[(&'static str, Vec<VarDoc>)]) -> String {
    let mut order: Vec<VarDoc> = Vec::new();
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (binary, vars) in binaries {
        for var in vars {
            if !users.contains_key(var.name) {
                order.push(*var);
            }
            users.entry(var.name).or_default().push(binary);
        }
    }
    let mut out = String::from("| variable | used by | default | meaning |\n|---|---|---|---|\n");
    for var in order {
        let by = &users[var.name];
        let by = if by.len() == binaries.len() {
            "all".to_owned()
        } else {
            by.join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            var.name,
            by,
            default_cell(var.default),
            cell(var.meaning)
        ));
    }
    out
}

/// Kubernetes types the CRD embeds; their fields are documented upstream.
const KUBERNETES_TYPES: [(&str, &str); 5] = [
    ("resources", "ResourceRequirements"),
    ("affinity", "Affinity"),
    ("tolerations", "[]Toleration"),
    ("topologySpreadConstraints", "[]TopologySpreadConstraint"),
    ("env", "[]EnvVar"),
];

fn type_name(schema: &Value) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values
            .iter()
            .filter_map(Value::as_str)
            .map(|v| format!("`{v}`"))
            .collect();
        return format!("enum: {}", names.join(", "));
    }
    let base = match schema.get("type").and_then(Value::as_str) {
        Some("array") => format!(
            "[]{}",
            schema.get("items").map(type_name).unwrap_or_default()
        ),
        Some("object") if schema.get("additionalProperties").is_some() => {
            let inner = schema
                .get("additionalProperties")
                .map(type_name)
                .unwrap_or_default();
            format!("map[string]{inner}")
        }
        Some(t) => t.to_owned(),
        None => "object".to_owned(),
    };
    match schema.get("format").and_then(Value::as_str) {
        Some(format) => format!("{base} ({format})"),
        None => base,
    }
}

fn is_object(schema: &Value) -> bool {
    schema.get("properties").is_some()
}

fn walk(path: &str, schema: &Value, rows: &mut Vec<[String; 4]>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, field) in props {
        let here = format!("{path}.{name}");
        let description = field
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let embedded = KUBERNETES_TYPES.iter().find(|(n, _)| n == name);
        let ty = match embedded {
            Some((_, kube_type)) if path.starts_with("spec") => {
                format!("Kubernetes {kube_type}")
            }
            _ => type_name(field),
        };
        let default = match field.get("default") {
            Some(v) if !v.is_object() => format!("`{v}`"),
            _ => String::new(),
        };
        rows.push([format!("`{here}`"), ty, default, cell(description)]);
        if embedded.is_some() && path.starts_with("spec") {
            continue;
        }
        if is_object(field) {
            walk(&here, field, rows);
        } else if let Some(items) = field.get("items").filter(|i| is_object(i)) {
            walk(&format!("{here}[]"), items, rows);
        } else if let Some(values) = field.get("additionalProperties").filter(|v| is_object(v)) {
            walk(&format!("{here}.<name>"), values, rows);
        }
    }
}

/// The ChatCluster field table, from the CRD (as JSON): every field of
/// `spec` and `status` with its type, schema default and description.
pub fn crd_table(crd: &Value) -> Result<String, DocError> {
    let schema = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .ok_or(DocError::NoSchema)?;
    let mut rows = Vec::new();
    for part in ["spec", "status"] {
        if let Some(s) = schema.pointer(&format!("/properties/{part}")) {
            walk(part, s, &mut rows);
        }
    }
    let mut out = String::from("| field | type | default | meaning |\n|---|---|---|---|\n");
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    Ok(out)
}

/// The operator's CRD as JSON.
pub fn crd_json() -> Value {
    serde_json::to_value(parley_operator::crd::crd()).unwrap_or(Value::Null)
}

/// Every generated section: marker name and content.
pub fn sections() -> Result<Vec<(&'static str, String)>, DocError> {
    Ok(vec![
        ("env", env_table(&binaries())),
        ("chatcluster", crd_table(&crd_json())?),
    ])
}

/// `readme` with each generated section replaced by `content`.
pub fn render(readme: &str, sections: &[(&'static str, String)]) -> Result<String, DocError> {
    let mut out = readme.to_owned();
    for (name, content) in sections {
        let open = format!("<!-- generated:{name} -->\n");
        let close = format!("<!-- /generated:{name} -->");
        let start = out.find(&open).ok_or(DocError::MissingSection(name))? + open.len();
        let end = out[start..]
            .find(&close)
            .ok_or(DocError::MissingSection(name))?
            + start;
        out.replace_range(start..end, content);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_variables_are_listed_once_with_their_readers() {
        const A: &[VarDoc] = &[
            VarDoc::new("X", REQUIRED, "x"),
            VarDoc::new("Y", "1", "y | z"),
        ];
        const B: &[VarDoc] = &[VarDoc::new("X", REQUIRED, "x")];
        let table = env_table(&[("a", A.to_vec()), ("b", B.to_vec())]);
        assert!(table.contains("| `X` | all | required | x |"), "{table}");
        assert!(table.contains("| `Y` | a | `1` | y \\| z |"), "{table}");
        assert_eq!(table.matches("`X`").count(), 1);
    }

    #[test]
    fn render_replaces_only_between_markers_and_refuses_missing_ones() {
        let readme = "a\n<!-- generated:env -->\nold\n<!-- /generated:env -->\nb\n";
        let out = render(readme, &[("env", "new\n".into())]).unwrap();
        assert_eq!(
            out,
            "a\n<!-- generated:env -->\nnew\n<!-- /generated:env -->\nb\n"
        );
        assert_eq!(
            render("no markers", &[("env", String::new())]),
            Err(DocError::MissingSection("env"))
        );
    }

    #[test]
    fn crd_table_walks_nested_fields_and_stops_at_kubernetes_types() {
        let table = crd_table(&crd_json()).unwrap();
        for row in [
            "| `spec.chat.autoscaling.maxReplicas` | integer (int32) | `10` |",
            "| `spec.redis.external.urlSecret.key` | string | `\"url\"` |",
            "| `spec.chat.resources` | Kubernetes ResourceRequirements |",
            "| `status.conditions[].type` | string |",
        ] {
            assert!(table.contains(row), "missing {row} in\n{table}");
        }
        assert!(!table.contains("spec.chat.resources.limits"));
    }
}
