//! `parley-docgen`: rewrites the README's generated reference sections;
//! `parley-docgen --check` only says whether they are current.

use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let result = std::fs::read_to_string(path)
        .map_err(|e| format!("reading {path}: {e}"))
        .and_then(|readme| {
            let sections = parley_docgen::sections().map_err(|e| e.to_string())?;
            let rendered = parley_docgen::render(&readme, &sections).map_err(|e| e.to_string())?;
            Ok((readme, rendered))
        });
    let (readme, rendered) = match result {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("parley-docgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if readme == rendered {
        println!("README.md reference is current");
        return ExitCode::SUCCESS;
    }
    if check {
        eprintln!("README.md reference is stale: run `cargo run -p parley-docgen`");
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::write(path, rendered) {
        eprintln!("parley-docgen: writing {path}: {e}");
        return ExitCode::FAILURE;
    }
    println!("README.md reference updated");
    ExitCode::SUCCESS
}
