//! The Dockerfile stays buildable: every path it copies from the build
//! context exists, and every binary it ships is one its cargo command builds.
//! The command itself runs once per CI run, in `e2e/images/build.sh`, which
//! reads it from the Dockerfile and builds the runtime stage from its output.

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
    let mut stage = String::new();
    for instruction in instructions(&dockerfile()?) {
        if let Some(from) = instruction.strip_prefix("FROM ") {
            stage = from.rsplit(" AS ").next().unwrap_or_default().to_owned();
            continue;
        }
        let Some(rest) = instruction.strip_prefix("COPY ") else {
            continue;
        };
        // The `prebuilt` stage copies from a context holding only the
        // binaries (e2e/images/build.sh), not the repository.
        if rest.contains("--from=") || stage == "prebuilt" {
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
fn shipped_binaries_are_the_built_ones() -> anyhow::Result<()> {
    let text = dockerfile()?;
    let command = build_command(&text)?;
    let built: Vec<&str> = command
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].as_str())
        .collect();
    assert!(!built.is_empty(), "the cargo command names no --bin");
    for instruction in instructions(&text) {
        if instruction.starts_with("COPY --from=binaries") {
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
    let shipping: usize = instructions(&text)
        .iter()
        .filter(|i| i.starts_with("COPY --from=binaries"))
        .map(|i| i.matches("/src/target/release/parley-").count())
        .sum();
    assert_eq!(shipping, 4, "the runtime stage ships four binaries");
    assert!(
        instructions(&text)
            .iter()
            .any(|i| i.starts_with("COPY parley-user parley-chat parley-mail parley-operator")),
        "the prebuilt stage takes the same four binaries"
    );
    Ok(())
}
