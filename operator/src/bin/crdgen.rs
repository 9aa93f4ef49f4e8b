//! Writes the ChatCluster CRD to `crds/chatcluster.yaml` and to the Helm
//! chart's byte-identical copy, `charts/parley-operator/crds/chatcluster.yaml`
//! (or to stdout with `-`).

use std::path::Path;

use anyhow::Context;
use parley_operator::crd::{CRD_PATHS, crd_yaml};

fn main() -> anyhow::Result<()> {
    let yaml = crd_yaml().context("serialising the CRD")?;
    if std::env::args().nth(1).as_deref() == Some("-") {
        print!("{yaml}");
        return Ok(());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for rel in CRD_PATHS {
        let path = root.join(rel);
        std::fs::write(&path, &yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
