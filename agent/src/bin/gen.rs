//! `sendsight-gen DIR`: writes the man pages (`man1/sendsight.1` and one per
//! subcommand) and shell completions (bash, zsh, fish) generated from the command
//! line's own definition (src/cli.rs). Run by `cargo xtask man`.
//!
//! `sendsight-gen --schema DIR`: writes DIR/<type>.schema.json for every line type,
//! generated from the types that serialize the lines (`sendsight::schema`). Run by
//! `cargo xtask schema`.

use std::{path::PathBuf, process::ExitCode};

#[allow(dead_code)] // Only the definition is used here, not main's helpers.
#[path = "../cli.rs"]
mod cli;

fn generate(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = dir.join("man1");
    std::fs::create_dir_all(&man)?;
    let cmd = <cli::Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for entry in std::fs::read_dir(&man)? {
        written.push(entry?.path());
    }
    let comp = dir.join("completions");
    std::fs::create_dir_all(&comp)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let mut c = cmd.clone();
        written.push(clap_complete::generate_to(
            shell,
            &mut c,
            "sendsight",
            &comp,
        )?);
    }
    written.sort();
    Ok(written)
}

fn write_schemas(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    use sendsight::schema::{LineType, file_name, file_text};
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for t in LineType::ALL {
        let path = dir.join(file_name(t));
        std::fs::write(&path, file_text(t))?;
        written.push(path);
    }
    // The table of line types in the README beside them.
    let readme = dir.join("README.md");
    if let Ok(text) = std::fs::read_to_string(&readme)
        && let Some(new) = sendsight::schema::with_readme_table(&text)
        && new != text
    {
        std::fs::write(&readme, new)?;
        written.push(readme);
    }
    Ok(written)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    if std::env::args_os().nth(1).is_some_and(|a| a == "--schema") {
        let _ = args.next();
        let (Some(dir), None) = (args.next(), args.next()) else {
            eprintln!("usage: sendsight-gen --schema DIR (writes DIR/<type>.schema.json)");
            return ExitCode::from(2);
        };
        return reported(&dir, write_schemas(std::path::Path::new(&dir)));
    }
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: sendsight-gen DIR (writes DIR/man1/*.1 and DIR/completions/*)");
        return ExitCode::from(2);
    };
    reported(&dir, generate(std::path::Path::new(&dir)))
}

/// Says which files were written into `dir`, or why not; the exit code.
fn reported<E: std::fmt::Display>(
    dir: &std::ffi::OsStr,
    result: Result<Vec<PathBuf>, E>,
) -> ExitCode {
    match result {
        Ok(files) => {
            for f in files {
                eprintln!("sendsight-gen: wrote {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "sendsight-gen: error: writing into {}: {e}",
                PathBuf::from(dir).display()
            );
            ExitCode::FAILURE
        }
    }
}
