//! Writes the ChatCluster CRD to `crds/chatcluster.yaml` (or stdout with `-`).

use std::path::Path;

use anyhow::Context;
use parley_operator::crd::{CRD_PATH, crd_yaml};

fn main() -> anyhow::Result<()> {
    let yaml = crd_yaml().context("serialising the CRD")?;
    if std::env::args().nth(1).as_deref() == Some("-") {
        print!("{yaml}");
        return Ok(());
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CRD_PATH);
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
