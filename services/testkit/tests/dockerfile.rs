//! The Dockerfile stays buildable: every path it copies from the build
//! context exists, every binary it ships is the one its cargo command
//! builds, and that exact cargo command succeeds here.

use std::path::Path;

fn dockerfile() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(
        parley_testkit::workspace_root().join("Dockerfile"),
    )?)
}

/// Joins continuation lines.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

fn build_command(text: &str) -> anyhow::Result<Vec<String>> {
    let line = instructions(text)
        .into_iter()
        .find(|i| i.starts_with("RUN cargo build"))
        .ok_or_else(|| anyhow::anyhow!("no RUN cargo build in the Dockerfile"))?;
    Ok(line
        .trim_start_matches("RUN ")
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

#[test]
fn copied_context_paths_exist() -> anyhow::Result<()> {
    let root = parley_testkit::workspace_root();
    for instruction in instructions(&dockerfile()?) {
        let Some(rest) = instruction.strip_prefix("COPY ") else {
            continue;
        };
        if rest.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = rest
            .split_whitespace()
            .filter(|p| !p.starts_with("--"))
            .collect();
        for source in &parts[..parts.len().saturating_sub(1)] {
            assert!(
                root.join(source).exists(),
                "COPY source {source} does not exist"
            );
        }
    }
    Ok(())
}

#[test]
fn shipped_binaries_are_the_built_ones_and_build() -> anyhow::Result<()> {
    let text = dockerfile()?;
    let command = build_command(&text)?;
    let built: Vec<&str> = command
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].as_str())
        .collect();
    assert!(!built.is_empty(), "the cargo command names no --bin");
    for instruction in instructions(&text) {
        if instruction.starts_with("COPY --from=builder") {
            for source in instruction
                .split_whitespace()
                .filter(|p| p.starts_with("/src/target/release/"))
            {
                let name = Path::new(source)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                assert!(
                    built.contains(&name),
                    "{name} is shipped but not built by {command:?}"
                );
            }
        }
    }
    for expected in [
        "parley-user",
        "parley-chat",
        "parley-mail",
        "parley-operator",
    ] {
        assert!(built.contains(&expected), "{expected} is not built");
    }
    // The exact command, in this workspace.
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .current_dir(parley_testkit::workspace_root())
        .status()?;
    assert!(status.success(), "{command:?} failed");
    Ok(())
}
