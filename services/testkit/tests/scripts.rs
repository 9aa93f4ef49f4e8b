//! The project's shell scripts parse (`bash -n`) and are shellcheck clean:
//! every `*.sh` under `e2e/` and `scripts/`, plus the entry points
//! `scripts/dev`, `scripts/test` and `.ci/run`. Scripts with a `#!` line
//! must be executable, since the README tells people to run them directly.
//!
//! shellcheck comes from Debian (package `shellcheck`), installed here when
//! missing, through sudo when not running as root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context;
use parley_testkit::workspace_root;

/// Entry points without the `.sh` suffix.
const ENTRY_POINTS: &[&str] = &["scripts/dev", "scripts/test", "scripts/cluster", ".ci/run"];
/// Folders searched (recursively) for `*.sh`.
const SCRIPT_DIRS: &[&str] = &["e2e", "scripts"];

fn collect(dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Installed npm packages are not ours; hidden folders hold tool state.
        if name == "node_modules" || name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, found)?;
        } else if name.ends_with(".sh") {
            found.push(path);
        }
    }
    Ok(())
}

fn scripts(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for dir in SCRIPT_DIRS {
        collect(&root.join(dir), &mut found)?;
    }
    for entry in ENTRY_POINTS {
        let path = root.join(entry);
        anyhow::ensure!(path.is_file(), "entry point {entry} is missing");
        found.push(path);
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `args` as root: directly when root, else through sudo.
fn as_root(args: &[&str]) -> anyhow::Result<Output> {
    let mut command = if is_root() {
        Command::new(args[0])
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-n").arg(args[0]);
        sudo
    };
    command
        .args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .with_context(|| format!("running {}", args.join(" ")))
}

fn shellcheck_present() -> bool {
    Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_shellcheck() -> anyhow::Result<()> {
    if shellcheck_present() {
        return Ok(());
    }
    let install = [
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "shellcheck",
    ];
    let mut output = as_root(&install)?;
    if !output.status.success() {
        // A fresh machine may not have package lists yet.
        as_root(&["apt-get", "update", "-qq"])?;
        output = as_root(&install)?;
    }
    anyhow::ensure!(
        output.status.success() && shellcheck_present(),
        "could not install shellcheck (apt-get install shellcheck): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn every_script_parses_and_is_shellcheck_clean() -> anyhow::Result<()> {
    let root = workspace_root();
    let files = scripts(&root)?;
    assert!(
        files.iter().any(|f| f.ends_with("e2e/kind.sh")),
        "the search finds the scripts: {files:?}"
    );
    let mut problems = Vec::new();

    for file in &files {
        let name = relative(&root, file);
        let output = Command::new("bash")
            .arg("-n")
            .arg(file)
            .output()
            .context("running bash -n")?;
        if !output.status.success() {
            problems.push(format!(
                "bash -n {name}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let text = std::fs::read_to_string(file)?;
        let mode = std::fs::metadata(file)?.permissions().mode();
        if text.starts_with("#!") && mode & 0o111 == 0 {
            problems.push(format!("{name} has a #! line but is not executable"));
        }
    }

    ensure_shellcheck()?;
    // -x follows `source` lines; SCRIPTDIR makes `# shellcheck source=lib/x.sh`
    // relative to the script, as it is read by people.
    let output = Command::new("shellcheck")
        .args([
            "--external-sources",
            "--source-path=SCRIPTDIR",
            "--format=gcc",
        ])
        .args(files.iter().map(|f| relative(&root, f)))
        .current_dir(&root)
        .output()
        .context("running shellcheck")?;
    let findings = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !findings.trim().is_empty() {
        problems.push(format!(
            "shellcheck:\n{}{}",
            findings,
            String::from_utf8_lossy(&output.stderr)
        ));
    }

    assert!(
        problems.is_empty(),
        "{} script problem(s) in {} files:\n{}",
        problems.len(),
        files.len(),
        problems.join("\n")
    );
    Ok(())
}
